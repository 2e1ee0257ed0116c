"""``dragonpy cache ls|rm|stat|gc`` on a store filled through the SDK.

Commands run in this process through ``CliRunner``. ``open_store`` keeps one store per
directory per process, so after each command the store is closed again: every
invocation opens it afresh, with its own ``--store-capacity``, as a real ``dragonpy``
process would. Access times come from a fake clock, so "most recently used" and TTL
expiry are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import blake3
import pytest
from click.testing import CliRunner, Result

import dragonpy
from dragonpy import Piece, Task, piece_digest
from dragonpy._storage import PieceStore, StorePolicy, open_store
from dragonpy._storage import _store as store_module
from dragonpy_cli._app import cli

KIB = 1024
START = 1_700_000_000.0
WEEK = 7 * 24 * 3600.0
SRC = Path(dragonpy.__file__).resolve().parents[1]


class FakeClock:
    """Stands in for the ``time`` module inside the store: ``time()`` is ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@attrs.frozen
class Filled:
    """The store the tests start from: three tasks, used ten seconds apart."""

    directory: Path
    old: Task  # 1 piece, used at START
    mid: Task  # 1 piece, complete, used at START + 10
    new: Task  # 3 pieces, used at START + 20

    @property
    def ids(self) -> list[str]:
        return [self.old.id, self.mid.id, self.new.id]


def make_task(name: str, pieces: int) -> Task:
    return Task(
        id=hashlib.sha256(name.encode()).hexdigest(),
        url=f"https://example.com/{name}.bin",
        content_length=pieces * KIB,
        piece_length=KIB,
        validator="etag-1",
        created_at=START,
    )


def add(store: PieceStore, task: Task) -> None:
    store.put_task(task)
    for piece in task.pieces():
        data = blake3.blake3(f"{task.id}/{piece.number}".encode()).digest(KIB)
        stored = Piece(piece.number, piece.offset, piece.length, piece_digest(data))
        store.put_piece(task.id, stored, data)


def close_store(directory: Path) -> None:
    """Closes this process's store of ``directory``, if it has one open."""
    store = store_module._open_stores.get(str(directory.resolve()))
    if store is not None:
        store.close()


def subprocess_env() -> dict[str, str]:
    """This environment, importing the same dragonpy as this process."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("DRAGONPY_STORE", None)
    env.pop("DRAGONPY_STORE_CAPACITY", None)
    return env


#: Holds a lease on task ARGV[2] of the store in ARGV[1] until its stdin closes.
HOLD_LEASE = """
import sys
from dragonpy import open_store

with open_store(sys.argv[1]).lease(sys.argv[2]):
    print("leased", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(START)
    monkeypatch.setattr(store_module, "time", fake)
    return fake


@pytest.fixture
def filled(tmp_path: Path, clock: FakeClock) -> Iterator[Filled]:
    directory = tmp_path / "store"
    store = open_store(directory, StorePolicy())
    tasks = []
    for name, pieces in [("old", 1), ("mid", 1), ("new", 3)]:
        task = make_task(name, pieces)
        add(store, task)
        tasks.append(task)
        clock.now += 10
    store.mark_complete(tasks[1].id)
    clock.now = START + 30
    store.close()
    yield Filled(directory, tasks[0], attrs.evolve(tasks[1], complete=True), tasks[2])
    close_store(directory)


def run(directory: Path, *args: str) -> Result:
    """``dragonpy cache ARGS --store DIRECTORY``, isolated from the environment."""
    runner = CliRunner(env={"DRAGONPY_STORE": None, "DRAGONPY_STORE_CAPACITY": None})
    try:
        return runner.invoke(
            cli, ["cache", *args, "--store", str(directory)], catch_exceptions=False
        )
    finally:
        close_store(directory)


def stored_ids(directory: Path) -> set[str]:
    try:
        return {task.task.id for task in open_store(directory).list_tasks()}
    finally:
        close_store(directory)


# ls


def test_ls_lists_tasks_most_recently_used_first(filled: Filled) -> None:
    result = run(filled.directory, "ls")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TASK", "ID", "STORED", "SIZE", "STATE", "USED", "URL"]
    assert [row.split()[0] for row in rows] == [
        filled.new.id,
        filled.mid.id,
        filled.old.id,
    ]
    new, mid, old = (row.split() for row in rows)
    assert (new[1], new[2], new[3], new[-1]) == (
        str(3 * KIB),
        str(3 * KIB),
        "partial",
        filled.new.url,
    )
    assert mid[3] == "complete"
    assert old[-1] == filled.old.url


def test_ls_json_prints_one_object_per_task(filled: Filled) -> None:
    result = run(filled.directory, "ls", "--json")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert objects == [
        {
            "task": attrs.asdict(task),
            "stored_bytes": size,
            "stored_pieces": size // KIB,
            "last_access": used,
            "in_use": False,
        }
        for task, size, used in [
            (filled.new, 3 * KIB, START + 20),
            (filled.mid, KIB, START + 10),
            (filled.old, KIB, START),
        ]
    ]


def in_use(directory: Path) -> dict[str, bool]:
    result = run(directory, "ls", "--json")
    assert result.exit_code == 0, result.output
    objects = map(json.loads, result.stdout.splitlines())
    return {item["task"]["id"]: item["in_use"] for item in objects}


def test_ls_shows_tasks_leased_by_another_process_as_in_use(filled: Filled) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, str(filled.directory), filled.old.id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "leased"
        leased = in_use(filled.directory)
        # Closing its stdin (which leaving the ``with`` does) lets the holder exit.
    assert holder.returncode == 0
    assert leased == {filled.old.id: True, filled.mid.id: False, filled.new.id: False}
    assert not any(in_use(filled.directory).values())


def test_ls_of_an_empty_store_prints_the_header_only(tmp_path: Path) -> None:
    table = run(tmp_path / "store", "ls")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].startswith("TASK ID")
    assert len(table.stdout.splitlines()) == 1
    as_json = run(tmp_path / "store", "ls", "--json")
    assert (as_json.exit_code, as_json.stdout) == (0, "")


# stat


def test_stat_json_reports_usage_and_watermarks(filled: Filled) -> None:
    result = run(filled.directory, "stat", "--json", "--store-capacity", "1MiB")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "path": str(filled.directory.resolve()),
        "capacity": 1024 * KIB,
        "used_bytes": 5 * KIB,
        "tasks": 3,
        "high_watermark": int(1024 * KIB * 0.9),
        "low_watermark": int(1024 * KIB * 0.7),
    }


def test_stat_defaults_to_a_capacity_of_20_gib(filled: Filled) -> None:
    result = run(filled.directory, "stat", "--json")
    assert json.loads(result.stdout)["capacity"] == 20 * 1024**3


def test_stat_prints_one_line_per_number(filled: Filled) -> None:
    result = run(filled.directory, "stat", "--store-capacity", "1MiB")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert lines == {
        "path": str(filled.directory.resolve()),
        "capacity": str(1024 * KIB),
        "used_bytes": str(5 * KIB),
        "tasks": "3",
        "high_watermark": str(int(1024 * KIB * 0.9)),
        "low_watermark": str(int(1024 * KIB * 0.7)),
    }


def test_bad_store_capacity_is_a_usage_error(filled: Filled) -> None:
    result = run(filled.directory, "stat", "--store-capacity", "lots")
    assert result.exit_code == 2
    assert "'lots' is not a size" in result.stderr


# rm


def test_rm_removes_the_named_tasks_and_their_bytes(filled: Filled) -> None:
    result = run(filled.directory, "rm", filled.old.id, filled.new.id)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stored_ids(filled.directory) == {filled.mid.id}
    stat = run(filled.directory, "stat", "--json")
    assert json.loads(stat.stdout)["used_bytes"] == KIB


def test_rm_without_task_ids_is_a_usage_error(filled: Filled) -> None:
    result = run(filled.directory, "rm")
    assert result.exit_code == 2
    assert "name the task IDs to remove, or pass --all" in result.stderr
    assert stored_ids(filled.directory) == set(filled.ids)


def test_rm_of_an_unknown_id_fails_and_names_it(filled: Filled) -> None:
    unknown = "0" * 64
    result = run(filled.directory, "rm", unknown)
    assert result.exit_code == 1
    assert f"not in the store: {unknown}" in result.stderr
    assert stored_ids(filled.directory) == set(filled.ids)


def test_rm_of_known_and_unknown_ids_removes_the_known_and_fails(
    filled: Filled,
) -> None:
    unknown = "f" * 64
    result = run(filled.directory, "rm", filled.old.id, unknown)
    assert result.exit_code == 1
    assert f"not in the store: {unknown}" in result.stderr
    assert filled.old.id not in result.stderr
    assert stored_ids(filled.directory) == {filled.mid.id, filled.new.id}


def test_rm_all_removes_every_task(filled: Filled) -> None:
    result = run(filled.directory, "rm", "--all")
    assert result.exit_code == 0, result.output
    assert stored_ids(filled.directory) == set()
    stat = run(filled.directory, "stat", "--json")
    assert json.loads(stat.stdout)["used_bytes"] == 0


def test_rm_all_of_an_empty_store_succeeds(tmp_path: Path) -> None:
    result = run(tmp_path / "store", "rm", "--all")
    assert result.exit_code == 0, result.output


# gc


def test_gc_with_nothing_to_do_prints_nothing(filled: Filled) -> None:
    result = run(filled.directory, "gc")
    assert (result.exit_code, result.stdout) == (0, "")
    assert stored_ids(filled.directory) == set(filled.ids)


def test_gc_removes_tasks_unused_for_a_week(filled: Filled, clock: FakeClock) -> None:
    clock.now = START + WEEK + 15
    result = run(filled.directory, "gc")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [filled.old.id, filled.mid.id]
    assert stored_ids(filled.directory) == {filled.new.id}


def test_gc_evicts_least_recently_used_down_to_the_low_watermark(
    filled: Filled,
) -> None:
    # 5 KiB held; 5 KiB capacity evicts from 4.5 KiB down to 3.5 KiB.
    result = run(filled.directory, "gc", "--store-capacity", "5KiB")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [filled.old.id, filled.mid.id]
    assert stored_ids(filled.directory) == {filled.new.id}


# Errors and the real entry point


def test_unusable_store_directory_exits_with_the_store_error_code(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(blocker / "store", "ls")
    assert result.exit_code == 13
    assert result.stderr.startswith("dragonpy: error: cannot open the piece store")


def test_python_m_dragonpy_cli_runs_the_cache_commands(filled: Filled) -> None:
    env = subprocess_env()

    def dragonpy_cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dragonpy_cli", "cache", *args]
        command += ["--store", str(filled.directory)]
        return subprocess.run(command, capture_output=True, text=True, env=env)

    listed = dragonpy_cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 3
    missing = dragonpy_cli("rm", "0" * 64)
    assert missing.returncode == 1
    assert "not in the store" in missing.stderr
    removed = dragonpy_cli("rm", filled.new.id)
    assert removed.returncode == 0, removed.stderr
    stat = dragonpy_cli("stat", "--json")
    assert json.loads(stat.stdout)["used_bytes"] == 2 * KIB
