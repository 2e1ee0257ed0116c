"""The piece store stays consistent when writers are killed or write concurrently.

``_store_writer.py`` writes pieces in a tight loop in a subprocess; the tests SIGKILL
it at seeded random instants, over and over on one directory, then reopen the store in
this process and check every piece against the bytes it must hold.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import dragonpy
from dragonpy import piece_digest
from dragonpy._storage import open_store

from ._store_writer import POLICY, READY, TASK_IDS, piece_bytes

WRITER = Path(__file__).with_name("_store_writer.py")
#: Where this process imports dragonpy from; writers import the same code.
SRC = Path(dragonpy.__file__).resolve().parents[1]
#: Kills per run. Against a store that updated its byte total in a transaction of its
#: own (a deliberately broken copy), one kill caught the damage about one time in six,
#: so 20 rounds catch such a bug in about 97% of runs.
ROUNDS = 20
#: How long a test waits for a writer that should finish on its own; a guard
#: against hangs (a writer stuck on a lock a killed process held), not a timing check.
FINISH_SECONDS = 90.0

Writer = subprocess.Popen[str]
StartWriter = Callable[..., Writer]


@pytest.fixture
def start_writer() -> Iterator[StartWriter]:
    """Starts writer subprocesses; kills any still running when the test ends."""
    started: list[Writer] = []
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), path]))}

    def start(directory: Path, seed: int, operations: int | None = None) -> Writer:
        args = [sys.executable, str(WRITER), str(directory), "--seed", str(seed)]
        if operations is not None:
            args += ["--operations", str(operations)]
        writer = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        started.append(writer)
        return writer

    yield start
    for writer in started:
        if writer.poll() is None:
            writer.kill()
        writer.communicate()


def wait_until_writing(writer: Writer) -> None:
    """Returns once the writer has committed its first piece."""
    assert writer.stdout is not None
    line = writer.stdout.readline()
    if line.strip() != READY:
        _, errors = writer.communicate()
        pytest.fail(f"writer exited with {writer.returncode} before writing:\n{errors}")


def kill_after(writer: Writer, delay: float) -> None:
    """SIGKILLs the writer ``delay`` seconds from now; it must still be running."""
    try:
        writer.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        writer.send_signal(signal.SIGKILL)
    _, errors = writer.communicate()
    assert writer.returncode == -signal.SIGKILL, f"writer failed on its own:\n{errors}"


def wait_finished(writer: Writer) -> None:
    _, errors = writer.communicate(timeout=FINISH_SECONDS)
    assert writer.returncode == 0, errors


def check_store(directory: Path) -> int:
    """Asserts the store in ``directory`` is consistent; returns its piece count."""
    store = open_store(directory, POLICY)
    try:
        listed = {task.task.id: task for task in store.list_tasks()}
        assert set(listed) <= set(TASK_IDS)
        assert store.statistics().tasks == len(listed)
        total_bytes = total_pieces = 0
        for task_id in TASK_IDS:
            stored = store.stored_pieces(task_id)
            task_bytes = 0
            for number, digest in stored.items():
                with store.read_piece(task_id, number) as view:
                    assert view is not None, f"piece {number} has a digest, no bytes"
                    assert piece_digest(view) == digest
                    assert bytes(view) == piece_bytes(task_id, number)
                    task_bytes += len(view)
            if task_id in listed:
                assert listed[task_id].stored_pieces == len(stored)
                assert listed[task_id].stored_bytes == task_bytes
            total_bytes += task_bytes
            total_pieces += len(stored)
        assert store.used_bytes() == total_bytes
        return total_pieces
    finally:
        store.close()


def test_killed_writer_leaves_a_consistent_store(
    tmp_path: Path, start_writer: StartWriter
) -> None:
    rng = random.Random(20240611)
    pieces_seen = 0
    for round_number in range(ROUNDS):
        writer = start_writer(tmp_path, seed=round_number)
        wait_until_writing(writer)
        kill_after(writer, rng.uniform(0.0, 0.2))
        pieces_seen += check_store(tmp_path)
    # The rounds did write: the checks above were not run on an empty store.
    assert pieces_seen > 0


def test_concurrent_writers_leave_a_consistent_store(
    tmp_path: Path, start_writer: StartWriter
) -> None:
    writers = [start_writer(tmp_path, seed, operations=400) for seed in (1, 2)]
    for writer in writers:
        wait_finished(writer)
    assert check_store(tmp_path) > 0


def test_writer_killed_while_another_writes_leaves_a_consistent_store(
    tmp_path: Path, start_writer: StartWriter
) -> None:
    rng = random.Random(7)
    for round_number in range(3):
        survivor = start_writer(tmp_path, seed=100 + round_number, operations=1500)
        victim = start_writer(tmp_path, seed=200 + round_number)
        wait_until_writing(survivor)
        wait_until_writing(victim)
        # The survivor must get the write lock back even if the victim died in a
        # write transaction.
        kill_after(victim, rng.uniform(0.0, 0.2))
        wait_finished(survivor)
        check_store(tmp_path)
