"""Writes pieces into a piece store as fast as it can, for the crash tests.

Run as ``python tests/_store_writer.py DIR --seed N [--operations N]``. It opens the
store in ``DIR`` and, driven by a seeded RNG, stores pieces of a few tasks (and now and
then removes a task, changes a task's validator or makes room), forever or for
``--operations`` steps. It prints ``ready`` once its first piece is committed, so a test
knows it is writing before it kills it.

Piece bytes and lengths are pure functions of (task ID, piece number), so a checker can
recompute exactly what any stored piece must hold. ``tests/test_store_crash.py`` imports
those functions from here.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from typing import Final

import blake3

from dragonpy import Piece, StoreError, Task, piece_digest
from dragonpy._storage import PieceStore, StorePolicy, open_store

KIB: Final = 1024
MAX_PIECE_LENGTH: Final = 256 * KIB
SMALL_PIECE_LENGTH: Final = 4 * KIB
PIECES_PER_TASK: Final = 16
TASK_IDS: Final = [
    hashlib.sha256(f"crash-task-{index}".encode()).hexdigest() for index in range(4)
]
#: Small enough that ``make_room`` evicts: the tasks hold about 1 MiB together.
POLICY: Final = StorePolicy(capacity=512 * KIB, high=0.9, low=0.5)
READY: Final = "ready"


def piece_length(task_id: str, number: int) -> int:
    """Between 1 byte and 256 KiB, fixed for each (task, number).

    One piece in eight is large (up to 256 KiB), the others up to 4 KiB: small pieces
    make short transactions, so a kill at a random instant often lands between two
    store calls, or inside a commit, rather than while a large piece is hashed.
    """
    seed = blake3.blake3(f"length:{task_id}/{number}".encode()).digest(length=4)
    value = int.from_bytes(seed, "big")
    limit = MAX_PIECE_LENGTH if value % 8 == 0 else SMALL_PIECE_LENGTH
    return 1 + (value >> 3) % limit


def piece_bytes(task_id: str, number: int) -> bytes:
    """The content of piece ``number`` of a task."""
    key = f"bytes:{task_id}/{number}".encode()
    return blake3.blake3(key).digest(length=piece_length(task_id, number))


def task_record(task_id: str, validator: str) -> Task:
    return Task(
        id=task_id,
        url=f"https://example.com/{task_id}",
        content_length=PIECES_PER_TASK * MAX_PIECE_LENGTH,
        piece_length=MAX_PIECE_LENGTH,
        validator=validator,
    )


def put_piece(store: PieceStore, task_id: str, number: int) -> None:
    if store.get_task(task_id) is None:
        store.put_task(task_record(task_id, "v0"))
    data = piece_bytes(task_id, number)
    piece = Piece(number, number * MAX_PIECE_LENGTH, len(data), piece_digest(data))
    try:
        store.put_piece(task_id, piece, data)
    except StoreError:
        # Another writer evicted or removed the task since we recorded it.
        return


def write(directory: str, seed: int, operations: int | None) -> None:
    rng = random.Random(seed)
    store = open_store(directory, POLICY)
    ready = False
    step = 0
    while operations is None or step < operations:
        step += 1
        task_id = rng.choice(TASK_IDS)
        roll = rng.random()
        if roll < 0.03:
            store.remove_task(task_id)
        elif roll < 0.06:
            store.put_task(task_record(task_id, f"v{rng.randrange(3)}"))
        elif roll < 0.09:
            store.make_room()
        else:
            put_piece(store, task_id, rng.randrange(PIECES_PER_TASK))
            if not ready:
                print(READY, flush=True)
                ready = True
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--operations", type=int, default=None)
    args = parser.parse_args(argv)
    write(args.directory, args.seed, args.operations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
