"""The conformance suite every piece transport passes, client against server."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from dragonpy import Piece, PieceStore, Task, piece_digest
from dragonpy._transport import (
    TRANSPORTS,
    ParentBusy,
    PieceClient,
    PieceNotFound,
    PieceServer,
    TransportError,
    UploadLimits,
    open_client,
    open_server,
)
from dragonpy._transport._limits import TokenBucket, UploadStatistics, UploadThrottle

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


@contextlib.asynccontextmanager
async def serving(server: PieceServer) -> AsyncIterator[str]:
    """Runs ``server`` on a free port; its address."""
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        yield f"127.0.0.1:{port}"
        group.cancel_scope.cancel()


@pytest.fixture(params=TRANSPORTS)
async def served(
    request: pytest.FixtureRequest, store: PieceStore
) -> AsyncIterator[tuple[PieceClient, str]]:
    """A client, and the address of a server of the same transport."""
    fill_store(store)
    client = open_client(request.param)
    async with serving(open_server(request.param, store)) as address:
        yield client, address
        await client.aclose()


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


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_many_concurrent_fetches(name: str, store: PieceStore) -> None:
    fill_store(store)
    # Room for all 40 at once: none is answered busy.
    server = open_server(name, store, limits=UploadLimits(max_concurrent_pieces=20))
    client = open_client(name)
    results: dict[int, bytes] = {}

    async def fetch(round_: int, number: int) -> None:
        _, data = await client.fetch(address, TASK_ID, number)
        results[round_ * 10 + number] = bytes(data)

    async with serving(server) as address, anyio.create_task_group() as group:
        for round_ in range(8):
            for number in (0, 1, 2, 4, 5):
                group.start_soon(fetch, round_, number)

    await client.aclose()
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


# Upload limits


class OverlappingReads:
    """Stands in for ``store.read_verified_piece``: holds each read open until
    another one is, so that piece sends overlap, and records the most open at once."""

    def __init__(self, store: PieceStore) -> None:
        self._read = store.read_verified_piece
        self._partner = threading.Barrier(2, timeout=10)
        self._lock = threading.Lock()
        self.open = self.most_open = 0

    @contextlib.contextmanager
    def __call__(
        self, task_id: str, number: int
    ) -> Iterator[tuple[Piece, memoryview] | None]:
        with self._lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            self._partner.wait()
            with self._read(task_id, number) as found:
                yield found
        finally:
            with self._lock:
                self.open -= 1


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_pieces_past_the_concurrency_limit_wait_their_turn(
    name: str, store: PieceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_store(store)
    reads = OverlappingReads(store)
    monkeypatch.setattr(store, "read_verified_piece", reads)
    server = open_server(name, store, limits=UploadLimits(max_concurrent_pieces=2))
    # One fetch per client: each on its own connection, none queued behind another.
    # Two are sent at once, and as many may wait their turn.
    clients = [open_client(name) for _ in range(4)]
    fetched: list[bytes] = []

    async def fetch(client: PieceClient, address: str) -> None:
        _, data = await client.fetch(address, TASK_ID, 0)
        fetched.append(bytes(data))

    async with serving(server) as address, anyio.create_task_group() as group:
        for client in clients:
            group.start_soon(fetch, client, address)
    for client in clients:
        await client.aclose()

    assert fetched == [CONTENT[:PIECE_LENGTH]] * 4
    assert reads.most_open == 2
    statistics = server.throttle.statistics()
    assert (statistics.pieces_in_flight, statistics.pieces_sent) == (0, 4)
    assert statistics.busy_refusals == 0


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_busy_answer_leaves_the_connection_usable(
    name: str, store: PieceStore
) -> None:
    fill_store(store)
    server = open_server(name, store, limits=UploadLimits(max_concurrent_pieces=1))
    client = open_client(name)
    async with serving(server) as address:
        # Every slot taken and one waiting: the next request is refused as busy.
        async with server.throttle.slot(), anyio.create_task_group() as group:
            group.start_soon(_hold_a_waiting_slot, server.throttle)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ParentBusy):
                await client.fetch(address, TASK_ID, 1)
            group.cancel_scope.cancel()
        _, data = await client.fetch(address, TASK_ID, 1)
    await client.aclose()
    assert bytes(data) == CONTENT[PIECE_LENGTH : 2 * PIECE_LENGTH]


async def _hold_a_waiting_slot(throttle: UploadThrottle) -> None:
    async with throttle.slot():
        await anyio.sleep_forever()


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_the_bandwidth_limit_paces_every_piece_byte(
    name: str, store: PieceStore
) -> None:
    fill_store(store)
    limits = UploadLimits(bandwidth=250_000)
    server = open_server(name, store, limits=limits)
    # A clock that stands still: the bucket never refills, so exactly the pieces
    # past the burst (one second, 250 kB) wait, however slow the machine.
    server.throttle = UploadThrottle(limits, clock=lambda: 0.0)
    client = open_client(name)

    async with serving(server) as address:
        for number in (0, 1, 2, 4):
            _, data = await client.fetch(address, TASK_ID, number)
            start = number * PIECE_LENGTH
            assert bytes(data) == CONTENT[start : start + PIECE_LENGTH]
    await client.aclose()

    statistics = server.throttle.statistics()
    assert (statistics.pieces_sent, statistics.bandwidth_waits) == (4, 1)
    # Every byte of a piece answer is paced: the piece and its header.
    assert 4 * PIECE_LENGTH < statistics.bytes_sent < 4 * (PIECE_LENGTH + 300)


def test_the_token_bucket_lends_and_queues_reservations() -> None:
    now = 0.0
    bucket = TokenBucket(rate=1000, burst=1000, clock=lambda: now)

    assert bucket.reserve(600) == 0
    # 200 bytes over the budget: 0.2 s at 1000 bytes/s.
    assert bucket.reserve(600) == pytest.approx(0.2)
    # Queued behind the debt, not beside it.
    assert bucket.reserve(100) == pytest.approx(0.3)
    now = 0.3
    assert bucket.reserve(0) == 0
    # Idle time earns no more than the burst.
    now = 100.0
    assert bucket.reserve(1500) == pytest.approx(0.5)


async def test_a_piece_waits_for_a_free_slot() -> None:
    throttle = UploadThrottle(UploadLimits(max_concurrent_pieces=1))
    second_sent = anyio.Event()

    async def send_second() -> None:
        async with throttle.slot():
            second_sent.set()

    async with anyio.create_task_group() as group:
        async with throttle.slot():
            group.start_soon(send_second)
            await anyio.wait_all_tasks_blocked()
            assert not second_sent.is_set()
            statistics = throttle.statistics()
            assert (statistics.pieces_in_flight, statistics.slot_waits) == (1, 1)
        await second_sent.wait()

    assert throttle.statistics().pieces_in_flight == 0


async def test_pace_holds_only_the_sends_past_the_budget() -> None:
    throttle = UploadThrottle(UploadLimits(bandwidth=100_000), clock=lambda: 0.0)
    # The last one is 1 kB over: it waits 10 ms.
    for size in (60_000, 40_000, 1_000):
        await anyio.to_thread.run_sync(throttle.pace, size)

    assert throttle.statistics() == UploadStatistics(
        pieces_in_flight=0,
        pieces_sent=3,
        bytes_sent=101_000,
        slot_waits=0,
        busy_refusals=0,
        bandwidth_waits=1,
        withdrawals=0,
    )


async def test_cancelling_a_paced_send_ends_its_wait() -> None:
    throttle = UploadThrottle(UploadLimits(bandwidth=1), clock=lambda: 0.0)
    # A million bytes at one byte per second: eleven days, unless cancelled.
    with anyio.move_on_after(0.1) as scope:
        await anyio.to_thread.run_sync(throttle.pace, 1_000_000)
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrent_pieces": 0}, "max_concurrent_pieces must be at least 1"),
        ({"bandwidth": 0}, "bandwidth must be a positive number of bytes per second"),
        ({"bandwidth": -1}, "or None for no limit; got -1"),
    ],
)
def test_impossible_upload_limits_are_refused(
    options: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        UploadLimits(**options)
