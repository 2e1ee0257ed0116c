"""The piece store (``dragonpy._storage``) against a real LMDB environment.

Every test opens its own store in its own ``tmp_path`` (``open_store`` keeps one store
per directory per process) and closes it at the end. Access times come from a fake
clock, so least-recently-used order and TTL expiry never depend on how fast the test
runs; ``collect_garbage`` gets an explicit ``now``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import PIPE, Popen

import attrs
import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dragonpy
from dragonpy import Piece, StoreError, Task, piece_digest
from dragonpy._storage import PieceStore, StorePolicy, open_store
from dragonpy._storage import _store as store_module
from dragonpy._storage._keys import encode_u64, lease_key

KIB = 1024
#: Ten pieces of 1 KiB fill the store: the high watermark is 9 KiB, the low one 7 KiB.
SMALL_POLICY = StorePolicy(capacity=10 * KIB, high=0.9, low=0.7, task_ttl=3600.0)
START = 1_700_000_000.0

OpenStore = Callable[..., PieceStore]


class FakeClock:
    """Stands in for the ``time`` module inside the store: ``time()`` is ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(START)
    monkeypatch.setattr(store_module, "time", fake)
    return fake


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the store of this test's directory; closes it when the test ends."""
    opened: list[PieceStore] = []

    def make(policy: StorePolicy = SMALL_POLICY) -> PieceStore:
        store = open_store(tmp_path / "store", policy)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: OpenStore, clock: FakeClock) -> PieceStore:
    """A store of ``SMALL_POLICY`` on the fake clock (overrides conftest's)."""
    return make_store()


def tid(name: str) -> str:
    """A task ID shaped like real ones (64 hex digits)."""
    return hashlib.sha256(name.encode()).hexdigest()


def make_task(name: str, *, validator: str = "etag-1", pieces: int = 10) -> Task:
    return Task(
        id=tid(name),
        url=f"https://example.com/{name}",
        content_length=pieces * KIB,
        piece_length=KIB,
        validator=validator,
        created_at=START,
    )


def piece_data(task_id: str, number: int, length: int = KIB) -> bytes:
    return blake3.blake3(f"{task_id}/{number}".encode()).digest(length=length)


def put(store: PieceStore, task_id: str, number: int, length: int = KIB) -> bytes:
    """Stores piece ``number`` of a task, as a downloader would after checking it."""
    data = piece_data(task_id, number, length)
    piece = Piece(number, number * length, length, piece_digest(data))
    store.put_piece(task_id, piece, data)
    return data


def add_task(store: PieceStore, name: str, pieces: int = 1) -> str:
    """Records a task and stores its first ``pieces`` pieces of 1 KiB."""
    task = make_task(name)
    store.put_task(task)
    for number in range(pieces):
        put(store, task.id, number)
    return task.id


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


#: Holds a lease on task ARGV[2] of the store in ARGV[1] until killed.
HOLD_LEASE = """
import sys
from dragonpy import open_store

with open_store(sys.argv[1]).lease(sys.argv[2]):
    print("leased", flush=True)
    sys.stdin.read()
"""


@contextmanager
def lease_in_subprocess(store: PieceStore, task_id: str) -> Iterator[Popen[str]]:
    """A process that holds a lease on ``task_id`` until the ``with`` ends."""
    env = {**os.environ, "PYTHONPATH": str(Path(dragonpy.__file__).parents[1])}
    command = [sys.executable, "-c", HOLD_LEASE, store.directory, task_id]
    with Popen(command, stdin=PIPE, stdout=PIPE, text=True, env=env) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "leased"
        try:
            yield holder
        finally:
            holder.kill()


def write_lease(store: PieceStore, task_id: str, pid: int, start_time: int) -> None:
    """A lease row as ``lease()`` writes it, for any PID and start time."""
    with store._write() as txn:
        txn.put(lease_key(task_id, pid), encode_u64(start_time), db=store._leases)


def stored_bytes_total(store: PieceStore, task_ids: list[str]) -> int:
    """Bytes of every piece the store holds for these tasks, read back."""
    total = 0
    for task_id in task_ids:
        for number in store.stored_pieces(task_id):
            with store.read_piece(task_id, number) as view:
                assert view is not None
                total += len(view)
    return total


# Tasks


def test_put_task_then_get_task_returns_the_same_record(store: PieceStore) -> None:
    task = make_task("a")
    store.put_task(task)
    assert store.get_task(task.id) == task


def test_get_task_of_an_unknown_id_is_none(store: PieceStore) -> None:
    assert store.get_task(tid("nothing")) is None


def test_mark_complete_sets_the_flag_and_keeps_the_rest(store: PieceStore) -> None:
    task = make_task("a")
    store.put_task(task)
    store.mark_complete(task.id)
    record = store.get_task(task.id)
    assert record is not None
    assert record.complete
    assert record == attrs.evolve(task, complete=True)


def test_mark_complete_of_an_unknown_task_raises(store: PieceStore) -> None:
    with pytest.raises(StoreError, match="not in the store"):
        store.mark_complete(tid("nothing"))


# Pieces


def test_stored_pieces_lists_numbers_and_digests(store: PieceStore) -> None:
    task_id = add_task(store, "a")
    data = put(store, task_id, 3)
    assert store.stored_pieces(task_id) == {
        0: piece_digest(piece_data(task_id, 0)),
        3: piece_digest(data),
    }


def test_stored_pieces_does_not_mix_tasks(store: PieceStore) -> None:
    first = add_task(store, "a", pieces=2)
    second = add_task(store, "b", pieces=3)
    assert sorted(store.stored_pieces(first)) == [0, 1]
    assert sorted(store.stored_pieces(second)) == [0, 1, 2]
    assert store.stored_pieces(tid("nothing")) == {}


def test_read_piece_gives_a_zero_copy_view_of_the_bytes(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=0)
    data = put(store, task_id, 0, length=3000)
    with store.read_piece(task_id, 0) as view:
        # The view points into LMDB's map and is valid only inside the ``with``.
        assert isinstance(view, memoryview)
        assert view.readonly
        assert view.nbytes == 3000
        assert bytes(view) == data


def test_read_piece_of_a_missing_piece_yields_none(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=1)
    with store.read_piece(task_id, 1) as view:
        assert view is None


def test_put_piece_rejects_data_of_the_wrong_length(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=0)
    data = piece_data(task_id, 0, KIB - 1)
    with pytest.raises(StoreError, match=f"has {KIB - 1} bytes, not {KIB}"):
        store.put_piece(task_id, Piece(0, 0, KIB, piece_digest(data)), data)
    assert store.stored_pieces(task_id) == {}
    assert store.used_bytes() == 0


def test_put_piece_accepts_bytearray_and_memoryview(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=0)
    data = piece_data(task_id, 0)
    piece = Piece(0, 0, KIB, piece_digest(data))
    store.put_piece(task_id, piece, bytearray(data))
    store.put_piece(task_id, Piece(1, KIB, KIB, piece_digest(data)), memoryview(data))
    for number in (0, 1):
        with store.read_piece(task_id, number) as view:
            assert view is not None
            assert bytes(view) == data


def test_putting_a_piece_again_does_not_count_its_bytes_twice(
    store: PieceStore,
) -> None:
    task_id = add_task(store, "a", pieces=2)
    assert store.used_bytes() == 2 * KIB
    put(store, task_id, 1)
    put(store, task_id, 1)
    assert store.used_bytes() == 2 * KIB
    assert len(store.stored_pieces(task_id)) == 2


def test_replacing_a_piece_with_another_length_keeps_used_bytes_exact(
    store: PieceStore,
) -> None:
    task_id = add_task(store, "a", pieces=0)
    put(store, task_id, 0, length=KIB)
    put(store, task_id, 0, length=100)
    assert stored_bytes_total(store, [task_id]) == 100
    assert store.used_bytes() == 100


def test_new_validator_drops_the_old_pieces_and_their_bytes(
    store: PieceStore,
) -> None:
    task_id = add_task(store, "a", pieces=3)
    other = add_task(store, "b", pieces=2)
    store.put_task(make_task("a", validator="etag-2"))
    assert store.stored_pieces(task_id) == {}
    assert store.used_bytes() == 2 * KIB
    record = store.get_task(task_id)
    assert record is not None
    assert record.validator == "etag-2"
    assert len(store.stored_pieces(other)) == 2


def test_same_validator_keeps_the_pieces(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=3)
    store.put_task(make_task("a"))
    assert sorted(store.stored_pieces(task_id)) == [0, 1, 2]
    assert store.used_bytes() == 3 * KIB


def test_remove_task_deletes_record_pieces_and_bytes(store: PieceStore) -> None:
    task_id = add_task(store, "a", pieces=3)
    other = add_task(store, "b", pieces=2)
    assert store.remove_task(task_id) is True
    assert store.get_task(task_id) is None
    assert store.stored_pieces(task_id) == {}
    with store.read_piece(task_id, 0) as view:
        assert view is None
    assert store.used_bytes() == 2 * KIB
    assert [task.task.id for task in store.list_tasks()] == [other]
    assert len(store.stored_pieces(other)) == 2


def test_remove_task_of_an_unknown_task_returns_false(store: PieceStore) -> None:
    add_task(store, "a")
    assert store.remove_task(tid("nothing")) is False
    assert store.used_bytes() == KIB


def test_pieces_of_an_unrecorded_task_are_rejected_or_reclaimable(
    store: PieceStore,
) -> None:
    orphan = tid("evicted-before-its-pieces-arrived")
    try:
        put(store, orphan, 0)
    except StoreError:
        return
    assert orphan in [task.task.id for task in store.list_tasks()]


def test_reading_a_closed_store_raises_store_error(store: PieceStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.get_task(tid("a"))


def test_writing_to_a_closed_store_raises_store_error(store: PieceStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.put_task(make_task("a"))


# Listing and statistics


def test_list_tasks_reports_what_each_task_holds(
    store: PieceStore, clock: FakeClock
) -> None:
    first = add_task(store, "a", pieces=3)
    clock.advance(5)
    second = add_task(store, "b", pieces=0)
    put(store, second, 0, length=100)
    with store.lease(first):
        listed = {task.task.id: task for task in store.list_tasks()}
    assert set(listed) == {first, second}
    assert listed[first].task == make_task("a")
    assert (listed[first].stored_bytes, listed[first].stored_pieces) == (3 * KIB, 3)
    assert (listed[second].stored_bytes, listed[second].stored_pieces) == (100, 1)
    assert listed[first].in_use
    assert not listed[second].in_use
    assert listed[first].last_access == START
    assert listed[second].last_access == START + 5


def test_list_tasks_of_an_empty_store_is_empty(store: PieceStore) -> None:
    assert store.list_tasks() == []


def test_touch_updates_last_access(store: PieceStore, clock: FakeClock) -> None:
    task_id = add_task(store, "a")
    store.touch(task_id)
    assert store.list_tasks()[0].last_access == START
    store.touch(task_id)
    clock.advance(60)
    store.touch(task_id)
    assert store.list_tasks()[0].last_access == START + 60


def test_lease_marks_the_task_in_use_only_inside_the_with(
    store: PieceStore,
) -> None:
    task_id = add_task(store, "a")
    with store.lease(task_id):
        assert store.list_tasks()[0].in_use
    assert not store.list_tasks()[0].in_use


def test_statistics_reports_usage_and_watermarks(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store(StorePolicy(capacity=100 * KIB, high=0.8, low=0.5))
    add_task(store, "a", pieces=3)
    add_task(store, "b", pieces=1)
    stats = store.statistics()
    assert stats.path == store.directory
    assert Path(stats.path).is_dir()
    assert stats.capacity == 100 * KIB
    assert stats.used_bytes == 4 * KIB
    assert stats.tasks == 2
    assert stats.high_watermark == 80 * KIB
    assert stats.low_watermark == 50 * KIB


def test_open_store_returns_one_store_per_directory(
    make_store: OpenStore,
) -> None:
    first = make_store()
    assert make_store() is first
    assert first.policy == SMALL_POLICY
    # A policy given later (say, from a command-line flag) replaces the first one.
    assert make_store(StorePolicy(capacity=1)) is first
    assert first.policy == StorePolicy(capacity=1)


def test_data_survives_closing_and_reopening(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store()
    task_id = add_task(store, "a", pieces=2)
    store.sync()
    store.close()
    reopened = make_store()
    assert reopened is not store
    assert sorted(reopened.stored_pieces(task_id)) == [0, 1]
    assert reopened.used_bytes() == 2 * KIB


# Eviction


def fill(
    store: PieceStore, clock: FakeClock, count: int, prefix: str = "task"
) -> list[str]:
    """``count`` tasks of one 1 KiB piece, used one second apart, oldest first."""
    task_ids = []
    for index in range(count):
        task_ids.append(add_task(store, f"{prefix}-{index}"))
        clock.advance()
    return task_ids


def test_make_room_does_nothing_under_the_high_watermark(
    store: PieceStore, clock: FakeClock
) -> None:
    fill(store, clock, 9)
    assert store.make_room() == []
    assert store.used_bytes() == 9 * KIB


def test_make_room_evicts_least_recently_used_down_to_the_low_watermark(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    # Use the oldest ones again: the least recently used are now 2, 3 and 4.
    for task_id in task_ids[:2]:
        store.touch(task_id)
        clock.advance()
    evicted = store.make_room()
    assert evicted == task_ids[2:5]
    assert store.used_bytes() == 7 * KIB
    remaining = {task.task.id for task in store.list_tasks()}
    assert remaining == set(task_ids) - set(evicted)
    for task_id in evicted:
        assert store.get_task(task_id) is None
        assert store.stored_pieces(task_id) == {}


def test_make_room_counts_the_incoming_bytes(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 8)
    # 8 KiB held plus 2 KiB coming passes 9 KiB; 5 KiB may stay so that 7 KiB fit.
    assert store.make_room(incoming=2 * KIB) == task_ids[:3]
    assert store.used_bytes() == 5 * KIB


def test_make_room_for_more_than_the_low_watermark_evicts_every_unleased_task(
    store: PieceStore, clock: FakeClock
) -> None:
    # What a downloader gets when it records a large task and then makes room for
    # it before taking its lease: the new task goes too.
    task_ids = fill(store, clock, 3)
    incoming = make_task("incoming")
    store.put_task(incoming)
    assert store.make_room(incoming=8 * KIB) == [*task_ids, incoming.id]
    assert store.get_task(incoming.id) is None


def test_leased_task_is_not_evicted(store: PieceStore, clock: FakeClock) -> None:
    task_ids = fill(store, clock, 10)
    with store.lease(task_ids[0]):
        evicted = store.make_room()
    assert evicted == task_ids[1:4]
    assert store.get_task(task_ids[0]) is not None
    assert store.used_bytes() == 7 * KIB


def test_leased_task_stays_even_above_the_watermark(
    store: PieceStore, clock: FakeClock
) -> None:
    big = add_task(store, "big", pieces=10)
    clock.advance()
    small = fill(store, clock, 2)
    with store.lease(big):
        evicted = store.make_room()
    assert evicted == small
    assert store.stored_pieces(big).keys() == set(range(10))
    assert store.used_bytes() == 10 * KIB > store.statistics().high_watermark


def test_task_is_evictable_again_after_its_lease(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    with store.lease(task_ids[0]):
        pass
    assert store.make_room() == task_ids[:3]


def test_overlapping_leases_in_one_process_protect_until_the_last_ends(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    with store.lease(task_ids[0]):
        with store.lease(task_ids[0]):
            pass
        in_use = [task.task.id for task in store.list_tasks() if task.in_use]
        assert in_use == [task_ids[0]]
        assert task_ids[0] not in store.make_room()


def test_lease_row_of_a_live_process_protects(
    store: PieceStore, clock: FakeClock
) -> None:
    # The control for the dead-process test below: a row written the same way, but
    # naming this process and its real start time, does protect.
    task_ids = fill(store, clock, 10)
    start = store_module._process_start(os.getpid())
    assert start > 0
    write_lease(store, task_ids[0], os.getpid(), start)
    assert store.make_room() == task_ids[1:4]


def test_lease_of_a_dead_process_does_not_protect(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    pid = dead_pid()
    # Whatever start time the row claims, no running process matches it: either the
    # PID is free, or it was reused by a process that started at another time.
    write_lease(store, task_ids[0], pid, start_time=12345)
    assert not any(task.in_use for task in store.list_tasks())
    assert store.make_room() == task_ids[:3]


def test_lease_of_another_process_protects_until_that_process_is_killed(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    with lease_in_subprocess(store, task_ids[0]) as holder:
        assert [task.in_use for task in store.list_tasks()].count(True) == 1
        assert store.make_room() == task_ids[1:4]
        fill(store, clock, 3, prefix="more")
        # SIGKILL: the lease row stays behind, but names a process that is gone.
        holder.kill()
        holder.wait()
        assert not any(task.in_use for task in store.list_tasks())
        assert store.make_room() == [task_ids[0], task_ids[4], task_ids[5]]


def test_lease_naming_a_reused_pid_does_not_protect(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    start = store_module._process_start(os.getpid())
    write_lease(store, task_ids[0], os.getpid(), start_time=start + 1)
    assert store.make_room() == task_ids[:3]


# Garbage collection


def test_collect_garbage_removes_idle_tasks_and_keeps_fresh_ones(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store(StorePolicy(capacity=100 * KIB, task_ttl=3600.0))
    idle = add_task(store, "idle", pieces=2)
    clock.advance(1800)
    fresh = add_task(store, "fresh", pieces=1)
    clock.advance(1000)
    used_again = add_task(store, "used-again", pieces=1)
    store.touch(idle)

    assert store.collect_garbage(now=START + 3600 - 1) == []
    assert store.collect_garbage(now=START + 3600 + 1800 + 1) == [fresh]
    assert {task.task.id for task in store.list_tasks()} == {idle, used_again}
    assert store.used_bytes() == 3 * KIB


def test_collect_garbage_removes_every_idle_task(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store(StorePolicy(capacity=100 * KIB, task_ttl=60.0))
    task_ids = fill(store, clock, 3)
    assert store.collect_garbage(now=clock.now + 3600) == task_ids
    assert store.list_tasks() == []
    assert store.used_bytes() == 0


def test_collect_garbage_keeps_a_leased_idle_task(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store(StorePolicy(capacity=100 * KIB, task_ttl=60.0))
    leased, idle = fill(store, clock, 2)
    with store.lease(leased):
        assert store.collect_garbage(now=clock.now + 3600) == [idle]
    assert store.get_task(leased) is not None


def test_collect_garbage_then_enforces_the_watermarks(
    store: PieceStore, clock: FakeClock
) -> None:
    task_ids = fill(store, clock, 10)
    # None is idle for an hour yet, but 10 KiB is over the high watermark.
    assert store.collect_garbage(now=clock.now) == task_ids[:3]


def test_collect_garbage_at_time_zero_expires_nothing(
    make_store: OpenStore, clock: FakeClock
) -> None:
    store = make_store(StorePolicy(capacity=100 * KIB, task_ttl=60.0))
    add_task(store, "a")
    clock.advance(3600)
    assert store.collect_garbage(now=0.0) == []


# Policy


@pytest.mark.parametrize(
    ("capacity", "high", "low", "message"),
    [
        (0, 0.9, 0.7, "capacity must be positive"),
        (-1, 0.9, 0.7, "capacity must be positive"),
        (KIB, 0.7, 0.9, "watermarks need 0 < low < high <= 1"),
        (KIB, 0.7, 0.7, "watermarks need 0 < low < high <= 1"),
        (KIB, 1.1, 0.7, "watermarks need 0 < low < high <= 1"),
        (KIB, 0.9, 0.0, "watermarks need 0 < low < high <= 1"),
        (KIB, 0.9, -0.1, "watermarks need 0 < low < high <= 1"),
    ],
)
def test_store_policy_rejects_bad_capacity_or_watermarks(
    capacity: int, high: float, low: float, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        StorePolicy(capacity=capacity, high=high, low=low)


def test_store_policy_accepts_a_high_watermark_of_one() -> None:
    policy = StorePolicy(capacity=1, high=1.0, low=0.5)
    assert (policy.high, policy.low) == (1.0, 0.5)


# Property: the byte total always matches the pieces held

TASKS = [tid(f"prop-{index}") for index in range(3)]


def _length(task: int, number: int) -> int:
    """Pieces have a fixed length per (task, number), as they do in a real task."""
    return 1 + (task * 977 + number * 389) % 1500


_operation = st.one_of(
    st.tuples(st.just("put"), st.integers(0, len(TASKS) - 1), st.integers(0, 5)),
    st.tuples(st.just("remove"), st.integers(0, len(TASKS) - 1), st.just(0)),
    st.tuples(st.just("revalidate"), st.integers(0, len(TASKS) - 1), st.just(0)),
    st.tuples(st.just("make_room"), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(operations=st.lists(_operation, max_size=40))
def test_used_bytes_always_equals_the_bytes_of_stored_pieces(
    operations: list[tuple[str, int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(directory, StorePolicy(capacity=8 * KIB))
        try:
            _run_operations(store, operations)
        finally:
            store.close()


def _run_operations(store: PieceStore, operations: list[tuple[str, int, int]]) -> None:
    model: dict[str, dict[int, int]] = {}
    validators = dict.fromkeys(TASKS, 0)
    for name, task, number in operations:
        task_id = TASKS[task]
        if name == "put":
            if store.get_task(task_id) is None:
                store.put_task(_prop_task(task_id, validators[task_id]))
            put(store, task_id, number, _length(task, number))
            model.setdefault(task_id, {})[number] = _length(task, number)
        elif name == "remove":
            store.remove_task(task_id)
            model.pop(task_id, None)
        elif name == "revalidate":
            validators[task_id] += 1
            store.put_task(_prop_task(task_id, validators[task_id]))
            model[task_id] = {}
        else:
            for evicted in store.make_room():
                model.pop(evicted, None)

        expected = sum(sum(pieces.values()) for pieces in model.values())
        assert store.used_bytes() == stored_bytes_total(store, TASKS) == expected
        for task_id in TASKS:
            assert set(store.stored_pieces(task_id)) == set(model.get(task_id, {}))


def _prop_task(task_id: str, validator: int) -> Task:
    return Task(
        id=task_id,
        url=f"https://example.com/{task_id}",
        content_length=6 * 1500,
        piece_length=1500,
        validator=f"v{validator}",
    )


def test_the_allocator_keeps_write_buffers_on_glibc() -> None:
    from dragonpy._storage._malloc import keep_write_buffers

    expected = platform.libc_ver()[0] == "glibc"
    assert keep_write_buffers() is expected
