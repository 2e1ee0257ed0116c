"""The conformance suite every piece transport passes, client against server."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from dragonpy import Piece, PieceStore, Task, piece_digest
from dragonpy._transport import (
    TRANSPORTS,
    PieceClient,
    PieceNotFound,
    TransportError,
    open_client,
    open_server,
)

from .origin import free_port

pytestmark = pytest.mark.anyio

PIECE_LENGTH = 64 * 1024
CONTENT = os.urandom(5 * PIECE_LENGTH + 777)
TASK_ID = "ab" * 32


def fill_store(store: PieceStore) -> None:
    store.put_task(
        Task(
            id=TASK_ID,
            url="https://example.com/content",
            content_length=len(CONTENT),
            piece_length=PIECE_LENGTH,
            validator="v1",
        )
    )
    # Pieces 0 to 4 and the short last piece 5, except piece 3: a gap to ask for.
    for number in (0, 1, 2, 4, 5):
        data = CONTENT[number * PIECE_LENGTH : (number + 1) * PIECE_LENGTH]
        piece = Piece(number, number * PIECE_LENGTH, len(data), piece_digest(data))
        store.put_piece(TASK_ID, piece, data)


def send_garbage(address: str, garbage: bytes) -> None:
    """Send bytes, half-close, and read until the server closes."""
    host, _, port = address.partition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


@pytest.fixture(params=TRANSPORTS)
async def served(
    request: pytest.FixtureRequest, store: PieceStore
) -> AsyncIterator[tuple[PieceClient, str]]:
    """A client, and the address of a server of the same transport."""
    fill_store(store)
    server = open_server(request.param, store)
    client = open_client(request.param)
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        yield client, f"127.0.0.1:{port}"
        await client.aclose()
        group.cancel_scope.cancel()


async def test_fetch_returns_the_piece_and_its_digest(
    served: tuple[PieceClient, str],
) -> None:
    client, address = served
    piece, data = await client.fetch(address, TASK_ID, 1)
    assert bytes(data) == CONTENT[PIECE_LENGTH : 2 * PIECE_LENGTH]
    assert (piece.number, piece.offset, piece.length) == (1, PIECE_LENGTH, PIECE_LENGTH)
    assert piece.digest == piece_digest(data)


async def test_the_short_last_piece(served: tuple[PieceClient, str]) -> None:
    client, address = served
    piece, data = await client.fetch(address, TASK_ID, 5)
    assert bytes(data) == CONTENT[5 * PIECE_LENGTH :]
    assert piece.length == 777


async def test_missing_pieces_and_tasks_are_not_found(
    served: tuple[PieceClient, str],
) -> None:
    client, address = served
    with pytest.raises(PieceNotFound):
        await client.fetch(address, TASK_ID, 3)
    with pytest.raises(PieceNotFound):
        await client.fetch(address, TASK_ID, 99)
    with pytest.raises(PieceNotFound):
        await client.fetch(address, "cd" * 32, 0)
    # The connection is still good after errors.
    _, data = await client.fetch(address, TASK_ID, 0)
    assert bytes(data) == CONTENT[:PIECE_LENGTH]


async def test_many_concurrent_fetches(served: tuple[PieceClient, str]) -> None:
    client, address = served
    results: dict[int, bytes] = {}

    async def fetch(round_: int, number: int) -> None:
        _, data = await client.fetch(address, TASK_ID, number)
        results[round_ * 10 + number] = bytes(data)

    async with anyio.create_task_group() as group:
        for round_ in range(8):
            for number in (0, 1, 2, 4, 5):
                group.start_soon(fetch, round_, number)

    assert len(results) == 40
    for key, data in results.items():
        number = key % 10
        assert data == CONTENT[number * PIECE_LENGTH : (number + 1) * PIECE_LENGTH]


async def test_garbage_on_the_server_port_does_not_stop_it(
    served: tuple[PieceClient, str],
) -> None:
    client, address = served
    for garbage in (b"\x00" * 64, b"\xff" * 5000, b"GET / HTTP/1.1\r\n\r\n", b""):
        # Blocking socket calls, so in a thread: the server shares this event loop.
        await anyio.to_thread.run_sync(send_garbage, address, garbage)

    _, data = await client.fetch(address, TASK_ID, 2)
    assert bytes(data) == CONTENT[2 * PIECE_LENGTH : 3 * PIECE_LENGTH]


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_an_unreachable_parent_is_a_transport_error(name: str) -> None:
    client = open_client(name)
    try:
        with anyio.fail_after(10), pytest.raises(TransportError):
            await client.fetch(f"127.0.0.1:{free_port()}", TASK_ID, 0)
    finally:
        await client.aclose()


def test_unknown_transports_are_refused(store: PieceStore) -> None:
    with pytest.raises(ValueError, match="unknown piece transport 'quic'"):
        open_client("quic")
    with pytest.raises(ValueError, match="known: tcp, http"):
        open_server("quic", store)
