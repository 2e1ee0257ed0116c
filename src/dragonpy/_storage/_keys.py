"""Key and value encodings of the piece store (compiled: every piece access uses it)."""

from __future__ import annotations

from typing import Final

_SEPARATOR: Final = b"/"


def task_key(task_id: str) -> bytes:
    return task_id.encode("ascii")


def piece_key(task_id: str, number: int) -> bytes:
    """Pieces of a task sort together and in order: task ID, '/', big-endian number."""
    return task_id.encode("ascii") + _SEPARATOR + number.to_bytes(4, "big")


def piece_prefix(task_id: str) -> bytes:
    return task_id.encode("ascii") + _SEPARATOR


def piece_number(key: bytes) -> int:
    return int.from_bytes(key[-4:], "big")


def lease_key(task_id: str, pid: int) -> bytes:
    return task_id.encode("ascii") + _SEPARATOR + pid.to_bytes(4, "big")


def encode_u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def decode_u64(value: bytes | memoryview | None) -> int:
    return 0 if value is None else int.from_bytes(value, "big")
