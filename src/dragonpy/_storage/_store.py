"""The piece store: pieces and their metadata in one LMDB environment.

Named databases::

    tasks    task ID            -> task record (JSON)
    pieces   task ID/number     -> the piece's bytes
    digests  task ID/number     -> the piece's digest; written in the same transaction
                                   as its bytes, so a piece is valid exactly when both
                                   exist, whatever instant a process was killed at
    access   task ID            -> last use (unix time, milliseconds)
    leases   task ID/pid        -> the start time of a process using the task
    totals   "bytes"            -> bytes of piece data held

Every method blocks: LMDB calls can fault pages in or write to disk, so async callers
run them in worker threads. Several processes (the daemon and ``dragonpy`` commands)
can open the same directory: LMDB serializes their writers, and a task leased by any
live process is never evicted.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs
import cattrs
import lmdb

from .._errors import DiskFull, StoreError
from .._pieces import Piece
from .._task import Task
from ._keys import (
    decode_u64,
    encode_u64,
    lease_key,
    piece_key,
    piece_number,
    piece_prefix,
    task_key,
)
from ._malloc import keep_write_buffers

GIB: Final = 1024**3
_TOTAL_BYTES: Final = b"bytes"
# Address space reserved for the map; LMDB only uses disk for what is written.
_MAP_SIZE: Final = 1024 * GIB

_converter = cattrs.Converter(forbid_extra_keys=True)

Buffer = bytes | bytearray | memoryview


@attrs.frozen
class StoredTask:
    """A task as ``dragonpy cache ls`` shows it."""

    task: Task
    stored_bytes: int
    stored_pieces: int
    last_access: float
    in_use: bool


@attrs.frozen
class StoreStatistics:
    path: str
    capacity: int
    used_bytes: int
    tasks: int
    high_watermark: int
    low_watermark: int
    #: Tasks (and their bytes) this process removed to get under the watermarks,
    #: and those it removed for being unused longer than the TTL.
    evicted_tasks: int = 0
    evicted_bytes: int = 0
    expired_tasks: int = 0
    expired_bytes: int = 0


@attrs.frozen
class StorePolicy:
    """How much the store may hold and for how long.

    Past ``high`` x capacity, least recently used tasks that no process is using are
    evicted until usage is under ``low`` x capacity. Tasks unused for ``task_ttl``
    seconds are removed by ``collect_garbage``.
    """

    capacity: int = 20 * GIB
    high: float = 0.9
    low: float = 0.7
    task_ttl: float = 7 * 24 * 3600.0

    def __attrs_post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError(f"store capacity must be positive, got {self.capacity}")
        if self.task_ttl <= 0:
            raise ValueError(f"task TTL must be positive, got {self.task_ttl}")
        if not 0 < self.low < self.high <= 1:
            raise ValueError(
                f"watermarks need 0 < low < high <= 1, "
                f"got low={self.low} high={self.high}"
            )


_open_stores: dict[str, PieceStore] = {}
_open_lock = threading.Lock()


def open_store(
    path: str | os.PathLike[str], policy: StorePolicy | None = None
) -> PieceStore:
    """The store in directory ``path``, shared by everything in this process.

    LMDB forbids opening one environment twice in a process, so repeated calls return
    the same store; a policy given in a later call replaces the earlier one.
    """
    directory = str(Path(path).resolve())
    with _open_lock:
        store = _open_stores.get(directory)
        if store is None or store.closed:
            store = PieceStore(directory, policy or StorePolicy())
            _open_stores[directory] = store
        elif policy is not None:
            store.policy = policy
        return store


class PieceStore:
    """Pieces and task metadata in LMDB. Use ``open_store`` to get one."""

    def __init__(self, directory: str, policy: StorePolicy) -> None:
        self.directory = directory
        self.policy = policy
        self.closed = False
        self._lease_counts: dict[str, int] = {}
        self._lease_lock = threading.Lock()
        # Plain counters for metrics, bumped from worker threads.
        self._removals = _Removals()
        self._removals_lock = threading.Lock()
        keep_write_buffers()
        try:
            os.makedirs(directory, exist_ok=True)
            self._env = lmdb.open(
                directory,
                map_size=_MAP_SIZE,
                max_dbs=8,
                max_readers=512,
                # Commits skip fsync: a killed process loses nothing, and the data
                # is flushed by ``sync``. Without writemap, LMDB stays consistent
                # even when the machine loses power (it may lose the last commits).
                sync=False,
                metasync=False,
                readahead=False,
            )
        except (lmdb.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the piece store in {directory}: {exc}"
            ) from exc

        self._tasks = self._env.open_db(b"tasks")
        self._pieces = self._env.open_db(b"pieces")
        self._digests = self._env.open_db(b"digests")
        self._access = self._env.open_db(b"access")
        self._leases = self._env.open_db(b"leases")
        self._totals = self._env.open_db(b"totals")

    # Tasks

    def put_task(self, record: Task) -> None:
        """Record a task, dropping any pieces of an older version of its content.

        An empty validator (a task learned from peers, not from the origin) matches
        any other, as long as the content length agrees.
        """
        with self._write() as txn:
            old = self._get_record(txn, record.id)
            if old is not None and _changed(old, record):
                self._delete_pieces(txn, record.id)
            value = json.dumps(_converter.unstructure(record)).encode()
            txn.put(task_key(record.id), value, db=self._tasks)
            self._touch(txn, record.id)

    def get_task(self, task_id: str) -> Task | None:
        with self._read() as txn:
            return self._get_record(txn, task_id)

    def mark_complete(self, task_id: str) -> None:
        with self._write() as txn:
            record = self._get_record(txn, task_id)
            if record is None:
                raise StoreError(f"task {task_id} is not in the store")
            done = attrs.evolve(record, complete=True)
            txn.put(
                task_key(task_id),
                json.dumps(_converter.unstructure(done)).encode(),
                db=self._tasks,
            )

    def remove_task(self, task_id: str) -> bool:
        """Delete a task and its pieces; False if it was not there."""
        with self._write() as txn:
            self._delete_pieces(txn, task_id)
            txn.delete(task_key(task_id), db=self._access)
            return bool(txn.delete(task_key(task_id), db=self._tasks))

    def list_tasks(self) -> list[StoredTask]:
        with self._read() as txn:
            live = self._live_leases(txn)
            tasks = []
            for _, value in txn.cursor(db=self._tasks):
                record = _decode_record(bytes(value))
                count, size = self._piece_totals(txn, record.id)
                access = decode_u64(txn.get(task_key(record.id), db=self._access))
                tasks.append(
                    StoredTask(record, size, count, access / 1000, record.id in live)
                )
        return tasks

    def touch(self, task_id: str) -> None:
        """Mark a task as just used, for least-recently-used eviction."""
        with self._write() as txn:
            self._touch(txn, task_id)

    # Pieces

    def put_piece(self, task_id: str, piece: Piece, data: Buffer) -> None:
        """Store a verified piece: its bytes and digest in one transaction."""
        self.put_pieces(task_id, [(piece, data)])

    def put_pieces(self, task_id: str, pieces: Sequence[tuple[Piece, Buffer]]) -> None:
        """Store several verified pieces of a task in one transaction."""
        for piece, data in pieces:
            if len(data) != piece.length:
                raise StoreError(
                    f"piece {piece.number} has {len(data)} bytes, not {piece.length}"
                )

        with self._write() as txn:
            # Pieces without a task would be invisible to eviction: refuse them.
            if txn.get(task_key(task_id), db=self._tasks) is None:
                raise StoreError(f"task {task_id} is not in the store (evicted?)")
            for piece, data in pieces:
                key = piece_key(task_id, piece.number)
                old = txn.get(key, db=self._pieces)
                self._add_total(txn, piece.length - (0 if old is None else len(old)))
                txn.put(key, data, db=self._pieces)
                txn.put(key, piece.digest.encode(), db=self._digests)

    def stored_pieces(self, task_id: str) -> dict[int, str]:
        """The numbers and digests of the pieces held for a task."""
        prefix = piece_prefix(task_id)
        with self._read() as txn:
            cursor = txn.cursor(db=self._digests)
            found: dict[int, str] = {}
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    found[piece_number(bytes(key))] = bytes(value).decode()
        return found

    @contextmanager
    def read_piece(self, task_id: str, number: int) -> Iterator[memoryview | None]:
        """A zero-copy view of a piece's bytes, valid only inside the ``with``."""
        with self._read() as txn:
            value = txn.get(piece_key(task_id, number), db=self._pieces)
            yield None if value is None else memoryview(value)

    @contextmanager
    def read_verified_piece(
        self, task_id: str, number: int
    ) -> Iterator[tuple[Piece, memoryview] | None]:
        """A stored piece with its place and digest, and a zero-copy view of its
        bytes, from one consistent snapshot; valid only inside the ``with``."""
        key = piece_key(task_id, number)
        with self._read() as txn:
            record = self._get_record(txn, task_id)
            digest = txn.get(key, db=self._digests)
            value = txn.get(key, db=self._pieces)
            if record is None or digest is None or value is None:
                yield None
                return
            offset = number * record.piece_length
            piece = Piece(number, offset, len(value), bytes(digest).decode())
            yield piece, memoryview(value)

    # Capacity

    @contextmanager
    def lease(self, task_id: str) -> Iterator[None]:
        """Keep a task from eviction while this process uses it.

        Leases nest: one row per process and task, removed when the last lease of
        this process on the task ends.
        """
        key = lease_key(task_id, os.getpid())
        with self._lease_lock:
            self._lease_counts[task_id] = self._lease_counts.get(task_id, 0) + 1
            if self._lease_counts[task_id] == 1:
                with self._write() as txn:
                    start = encode_u64(_process_start(os.getpid()))
                    txn.put(key, start, db=self._leases)
        try:
            yield
        finally:
            with self._lease_lock:
                self._lease_counts[task_id] -= 1
                if self._lease_counts[task_id] == 0:
                    del self._lease_counts[task_id]
                    with self._write() as txn:
                        txn.delete(key, db=self._leases)

    def used_bytes(self) -> int:
        with self._read() as txn:
            return decode_u64(txn.get(_TOTAL_BYTES, db=self._totals))

    def reserve(self, incoming: int) -> None:
        """Allocate disk blocks for ``incoming`` bytes past the end of the data file.

        Writing into allocated blocks is markedly faster than growing the file one
        commit at a time (see docs/benchmarks.md), and a full disk shows up here,
        before the transfer, rather than in the middle of it. LMDB keeps its own
        record of the pages in use, so a longer file is harmless.
        """
        info = self._env.info()
        page_size = self._env.stat()["psize"]
        end = (info["last_pgno"] + 1) * page_size
        # Overflow pages carry a header page per value: allow one per MiB.
        length = incoming + (incoming // (1024 * 1024) + 1) * page_size
        try:
            fd = os.open(os.path.join(self.directory, "data.mdb"), os.O_WRONLY)
            try:
                os.posix_fallocate(fd, end, length)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"no space left for the piece store in {self.directory}"
                ) from exc
            raise StoreError(
                f"cannot grow the piece store in {self.directory}: {exc}"
            ) from exc

    def make_room(self, incoming: int = 0) -> list[str]:
        """Evict if usage plus ``incoming`` bytes passes the high watermark.

        Returns the evicted task IDs, least recently used first. Tasks in use are kept
        even if that leaves the store above the watermark.
        """
        policy = self.policy
        if self.used_bytes() + incoming <= policy.capacity * policy.high:
            return []

        target = policy.capacity * policy.low - incoming
        evicted = []
        freed = 0
        with self._write() as txn:
            used = decode_u64(txn.get(_TOTAL_BYTES, db=self._totals))
            for task_id in self._eviction_order(txn):
                if used <= target:
                    break
                size = self._delete_pieces(txn, task_id)
                used -= size
                freed += size
                txn.delete(task_key(task_id), db=self._tasks)
                txn.delete(task_key(task_id), db=self._access)
                evicted.append(task_id)
        with self._removals_lock:
            self._removals.evicted_tasks += len(evicted)
            self._removals.evicted_bytes += freed
        return evicted

    def collect_garbage(self, now: float | None = None) -> list[str]:
        """Remove tasks unused for longer than the TTL, then enforce the watermarks."""
        now = time.time() if now is None else now
        cutoff_ms = int((now - self.policy.task_ttl) * 1000)
        expired = []
        freed = 0
        with self._write() as txn:
            for task_id in self._eviction_order(txn):
                if decode_u64(txn.get(task_key(task_id), db=self._access)) >= cutoff_ms:
                    break
                freed += self._delete_pieces(txn, task_id)
                txn.delete(task_key(task_id), db=self._tasks)
                txn.delete(task_key(task_id), db=self._access)
                expired.append(task_id)
            self._delete_dead_leases(txn)
        with self._removals_lock:
            self._removals.expired_tasks += len(expired)
            self._removals.expired_bytes += freed
        return expired + self.make_room()

    def statistics(self) -> StoreStatistics:
        policy = self.policy
        with self._read() as txn:
            used = decode_u64(txn.get(_TOTAL_BYTES, db=self._totals))
            tasks = txn.stat(self._tasks)["entries"]
        with self._removals_lock:
            removals = attrs.asdict(self._removals)
        return StoreStatistics(
            path=self.directory,
            capacity=policy.capacity,
            used_bytes=used,
            tasks=tasks,
            high_watermark=int(policy.capacity * policy.high),
            low_watermark=int(policy.capacity * policy.low),
            **removals,
        )

    def sync(self) -> None:
        """Flush committed data to disk."""
        self._env.sync(True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._env.close()

    # Internals

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        """A read transaction whose values are zero-copy views into the map."""
        try:
            with self._env.begin(buffers=True) as txn:
                yield txn
        except lmdb.Error as exc:
            raise StoreError(
                f"piece store read failed in {self.directory}: {exc}"
            ) from exc

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        try:
            with self._env.begin(write=True, buffers=True) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            raise DiskFull(f"the piece store in {self.directory} is full") from exc
        except lmdb.Error as exc:
            if "No space left" in str(exc):
                raise DiskFull(
                    f"no space left for the piece store in {self.directory}"
                ) from exc
            raise StoreError(
                f"piece store write failed in {self.directory}: {exc}"
            ) from exc

    def _get_record(self, txn: lmdb.Transaction, task_id: str) -> Task | None:
        value = txn.get(task_key(task_id), db=self._tasks)
        return None if value is None else _decode_record(bytes(value))

    def _touch(self, txn: lmdb.Transaction, task_id: str) -> None:
        now_ms = int(time.time() * 1000)
        txn.put(task_key(task_id), encode_u64(now_ms), db=self._access)

    def _add_total(self, txn: lmdb.Transaction, delta: int) -> None:
        total = decode_u64(txn.get(_TOTAL_BYTES, db=self._totals)) + delta
        txn.put(_TOTAL_BYTES, encode_u64(max(total, 0)), db=self._totals)

    def _piece_totals(self, txn: lmdb.Transaction, task_id: str) -> tuple[int, int]:
        prefix = piece_prefix(task_id)
        cursor = txn.cursor(db=self._pieces)
        count = size = 0
        if cursor.set_range(prefix):
            while bytes(cursor.key()).startswith(prefix):
                count += 1
                size += len(cursor.value())
                if not cursor.next():
                    break
        return count, size

    def _delete_pieces(self, txn: lmdb.Transaction, task_id: str) -> int:
        """Delete a task's pieces; returns the bytes freed."""
        prefix = piece_prefix(task_id)
        freed = 0
        cursor = txn.cursor(db=self._pieces)
        if cursor.set_range(prefix):
            while bytes(cursor.key()).startswith(prefix):
                key = bytes(cursor.key())
                freed += len(cursor.value())
                txn.delete(key, db=self._digests)
                if not cursor.delete():
                    break
        self._add_total(txn, -freed)
        return freed

    def _eviction_order(self, txn: lmdb.Transaction) -> list[str]:
        """Task IDs no live process uses, least recently used first."""
        live = self._live_leases(txn)
        entries = [
            (decode_u64(value), bytes(key).decode())
            for key, value in txn.cursor(db=self._access)
            if bytes(key).decode() not in live
        ]
        return [task_id for _, task_id in sorted(entries)]

    def _delete_dead_leases(self, txn: lmdb.Transaction) -> None:
        """Drop the lease rows of processes that died without releasing them."""
        dead = [
            bytes(key)
            for key, value in txn.cursor(db=self._leases)
            if _process_start(int.from_bytes(key[-4:], "big")) != decode_u64(value)
        ]
        for key in dead:
            txn.delete(key, db=self._leases)

    def _live_leases(self, txn: lmdb.Transaction) -> set[str]:
        live = set()
        for key, value in txn.cursor(db=self._leases):
            pid = int.from_bytes(key[-4:], "big")
            if _process_start(pid) == decode_u64(value):
                live.add(bytes(key[:-5]).decode())
        return live


@attrs.define
class _Removals:
    evicted_tasks: int = 0
    evicted_bytes: int = 0
    expired_tasks: int = 0
    expired_bytes: int = 0


def _changed(old: Task, new: Task) -> bool:
    """Whether ``new`` describes other content than ``old``."""
    if old.content_length != new.content_length:
        return True
    return bool(old.validator and new.validator and old.validator != new.validator)


def _decode_record(value: bytes) -> Task:
    return _converter.structure(json.loads(value), Task)


def _process_start(pid: int) -> int:
    """When a process started (clock ticks since boot), or 0 if it is gone.

    A lease names the process by PID and start time, so a reused PID never keeps a
    dead process's lease alive.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return 0
    return int(fields[19])
