"""Pieces: how a task's content is cut, and how each piece is checked.

The piece length is a pure function of the content length, so every peer cuts a task
the same way without asking anyone. Each piece carries a BLAKE3 digest computed by the
peer that fetched it from the origin; receivers check it before storing or serving.
BLAKE3 is cryptographic and hashes about 2.5 times faster than SHA-256 here (see
``docs/pieces.md``), and it releases the GIL, so piece workers hash in parallel.
"""

from __future__ import annotations

from typing import Final

import blake3

MIB: Final = 1024 * 1024

#: Bounds of the automatic piece length, and the piece count it aims for. Chosen by
#: ``benchmarks/piece_length.py``; the reasons are in ``docs/pieces.md``.
MIN_PIECE_LENGTH: Final = 4 * MIB
MAX_PIECE_LENGTH: Final = 64 * MIB
TARGET_PIECE_COUNT: Final = 512

DIGEST_ALGORITHM: Final = "blake3"


def piece_length_for(content_length: int) -> int:
    """The piece length of content of this size: a power of two within the bounds."""
    if content_length < 0:
        raise ValueError(f"content length must not be negative, got {content_length}")
    wanted = -(-content_length // TARGET_PIECE_COUNT)
    length = MIN_PIECE_LENGTH
    while length < wanted and length < MAX_PIECE_LENGTH:
        length *= 2
    return length


def piece_count(content_length: int, piece_length: int) -> int:
    """How many pieces cover ``content_length`` bytes (an empty task has none)."""
    return -(-content_length // piece_length)


class Piece:
    """One piece of a task: its place in the content and, once known, its digest."""

    __slots__ = ("digest", "length", "number", "offset")

    def __init__(self, number: int, offset: int, length: int, digest: str = "") -> None:
        self.number = number
        self.offset = offset
        self.length = length
        self.digest = digest

    @property
    def end(self) -> int:
        """The offset just past the piece's last byte."""
        return self.offset + self.length

    def __repr__(self) -> str:
        return (
            f"Piece(number={self.number}, offset={self.offset}, "
            f"length={self.length}, digest={self.digest!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Piece):
            return NotImplemented
        return (self.number, self.offset, self.length, self.digest) == (
            other.number,
            other.offset,
            other.length,
            other.digest,
        )

    def __hash__(self) -> int:
        return hash((self.number, self.offset, self.length, self.digest))


def plan_pieces(content_length: int, piece_length: int) -> list[Piece]:
    """Every piece of the content, in order, without digests."""
    return [
        Piece(number, offset, min(piece_length, content_length - offset))
        for number, offset in enumerate(range(0, content_length, piece_length))
    ]


def pieces_covering(
    content_length: int, piece_length: int, start: int, end: int
) -> range:
    """Numbers of the pieces that hold bytes ``start`` to ``end`` (inclusive)."""
    if not 0 <= start <= end < content_length:
        raise ValueError(
            f"range {start}-{end} is outside content of length {content_length}"
        )
    return range(start // piece_length, end // piece_length + 1)


def piece_digest(data: bytes | bytearray | memoryview) -> str:
    """The digest of a piece's bytes, as ``blake3:<hex>``."""
    return DIGEST_ALGORITHM + ":" + str(blake3.blake3(data).hexdigest())
