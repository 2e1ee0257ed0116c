from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dragonpy import piece_digest, piece_length_for, plan_pieces
from dragonpy._pieces import (
    MAX_PIECE_LENGTH,
    MIB,
    MIN_PIECE_LENGTH,
    piece_count,
    pieces_covering,
)

lengths = st.integers(min_value=0, max_value=1 << 42)


@given(lengths)
def test_piece_length_is_a_bounded_power_of_two(content_length: int) -> None:
    length = piece_length_for(content_length)
    assert length & (length - 1) == 0
    assert MIN_PIECE_LENGTH <= length <= MAX_PIECE_LENGTH


@given(lengths, lengths)
def test_piece_length_never_shrinks_as_content_grows(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert piece_length_for(low) <= piece_length_for(high)


def test_piece_length_table() -> None:
    assert piece_length_for(0) == 4 * MIB
    assert piece_length_for(1024**3) == 4 * MIB
    assert piece_length_for(4 * 1024**3) == 8 * MIB
    assert piece_length_for(1024**4) == 64 * MIB


def test_negative_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        piece_length_for(-1)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from([7, 100, 4096]))
def test_plan_covers_the_content_exactly_once(content_length: int, size: int) -> None:
    pieces = plan_pieces(content_length, size)
    assert len(pieces) == piece_count(content_length, size)
    assert sum(piece.length for piece in pieces) == content_length
    offset = 0
    for number, piece in enumerate(pieces):
        assert (piece.number, piece.offset) == (number, offset)
        assert 0 < piece.length <= size
        offset = piece.end


@given(st.data())
def test_covering_pieces_hold_the_range(data: st.DataObject) -> None:
    content_length = data.draw(st.integers(min_value=1, max_value=10**6))
    size = data.draw(st.sampled_from([1, 100, 4096]))
    start = data.draw(st.integers(min_value=0, max_value=content_length - 1))
    end = data.draw(st.integers(min_value=start, max_value=content_length - 1))
    numbers = pieces_covering(content_length, size, start, end)
    pieces = plan_pieces(content_length, size)
    assert pieces[numbers[0]].offset <= start
    assert pieces[numbers[-1]].end > end
    assert all(pieces[n].offset <= end for n in numbers)


def test_ranges_outside_the_content_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        pieces_covering(100, 10, 50, 100)


def test_piece_digest_is_blake3_and_detects_changes() -> None:
    digest = piece_digest(b"hello")
    assert digest.startswith("blake3:")
    assert len(digest) == len("blake3:") + 64
    assert piece_digest(bytearray(b"hello")) == digest
    assert piece_digest(memoryview(b"hellp")) != digest
