"""The ``tcp`` transport: its wire protocol, and how both ends survive bad peers.

Behaviour every transport shares is checked in ``test_transports.py``; this file
checks what is particular to ``tcp``: HELLO negotiation, compression, pipelining, and
hostile input, sent from raw sockets at a real server or from a fake parent at a real
client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.to_thread
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from dragonpy import PieceStore
from dragonpy._pieces import Piece, piece_digest
from dragonpy._task import Task
from dragonpy._transport._base import PieceNotFound, TransportError
from dragonpy._transport._limits import UploadLimits
from dragonpy._transport._tcp import TcpPieceClient, TcpPieceServer
from dragonpy._transport._tcp._client import _ClientOptions, read_response
from dragonpy._transport._tcp._wire import (
    CAP_ZSTD,
    COMPRESSION_SAMPLE,
    ERROR,
    FLAG_ZSTD,
    GET,
    HEADER,
    HELLO,
    HELLO_ACK,
    MAGIC,
    PIECE,
    VERSION,
    ErrorCode,
    FrameType,
    encode_frame,
    encode_get,
)

pytestmark = pytest.mark.anyio

TASK = "t" * 64
PIECE_LENGTH = 64 * 1024
RAW_TIMEOUT = 10.0


def put_task(store: PieceStore, pieces: list[bytes], task_id: str = TASK) -> None:
    length = sum(len(data) for data in pieces)
    store.put_task(Task(task_id, "https://example.test/f", length, PIECE_LENGTH, "v"))
    for number, data in enumerate(pieces):
        piece = Piece(number, number * PIECE_LENGTH, len(data), piece_digest(data))
        store.put_piece(task_id, piece, data)


def random_pieces(count: int) -> list[bytes]:
    return [os.urandom(PIECE_LENGTH) for _ in range(count)]


@contextlib.asynccontextmanager
async def running(server: TcpPieceServer, port: int = 0) -> AsyncIterator[int]:
    async with anyio.create_task_group() as task_group:
        yield await task_group.start(server.serve, "127.0.0.1", port)
        task_group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def client(**options: int | float | bool) -> AsyncIterator[TcpPieceClient]:
    tcp = TcpPieceClient(**options)  # type: ignore[arg-type]
    try:
        yield tcp
    finally:
        await tcp.aclose()


async def assert_serves(port: int, data: bytes) -> None:
    """A fresh client fetches piece 0 correctly: the server still works."""
    async with client() as tcp:
        piece, received = await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)
    assert received == data
    assert piece == Piece(0, 0, len(data), piece_digest(data))


# Raw sockets, used from worker threads so the server keeps running


def hello_frame(version: int = VERSION, capabilities: int = CAP_ZSTD) -> bytes:
    return encode_frame(FrameType.HELLO, 0, HELLO.pack(MAGIC, version, capabilities))


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    kind, flags, _, request_id, length = HEADER.unpack(recv_exactly(sock, HEADER.size))
    return kind, flags, request_id, recv_exactly(sock, length)


def read_error(sock: socket.socket) -> tuple[int, int]:
    """The request ID and code of the ERROR frame that must come next."""
    request_id, code, _ = read_error_and_message(sock)
    return request_id, code


def read_error_and_message(sock: socket.socket) -> tuple[int, int, str]:
    kind, _, request_id, body = read_frame(sock)
    assert kind == FrameType.ERROR
    code, length = ERROR.unpack_from(body)
    return request_id, code, body[ERROR.size : ERROR.size + length].decode()


def at_eof(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def raw_connect(port: int, *, hello: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT)
    if hello:
        sock.sendall(hello_frame())
        assert read_frame(sock)[0] == FrameType.HELLO_ACK
    return sock


async def in_thread(call: Callable[[], None]) -> None:
    await anyio.to_thread.run_sync(call)


# Negotiation and compression


@pytest.mark.parametrize(
    ("offered", "server_compresses", "accepted"),
    [
        (CAP_ZSTD, True, CAP_ZSTD),
        (0, True, 0),
        (CAP_ZSTD, False, 0),
        (CAP_ZSTD | 0x80, True, CAP_ZSTD),
    ],
)
async def test_hello_negotiates_compression(
    store: PieceStore, offered: int, server_compresses: bool, accepted: int
) -> None:
    server = TcpPieceServer(store, compression=server_compresses, max_in_flight=5)

    def exchange(port: int) -> None:
        with raw_connect(port, hello=False) as sock:
            sock.sendall(hello_frame(capabilities=offered))
            kind, _, _, body = read_frame(sock)
            assert kind == FrameType.HELLO_ACK
            assert HELLO_ACK.unpack(body) == (MAGIC, VERSION, accepted, 5)

    async with running(server) as port:
        await in_thread(lambda: exchange(port))


@pytest.mark.parametrize("client_compresses", [True, False])
@pytest.mark.parametrize("server_compresses", [True, False])
async def test_fetch_with_and_without_compression(
    store: PieceStore, client_compresses: bool, server_compresses: bool
) -> None:
    pieces = [b"abc" * 30000, os.urandom(1000)]
    put_task(store, pieces)
    server = TcpPieceServer(store, compression=server_compresses)

    async with running(server) as port, client(compression=client_compresses) as tcp:
        for number, data in enumerate(pieces):
            piece, received = await tcp.fetch(f"127.0.0.1:{port}", TASK, number)
            assert received == data
            assert piece == Piece(
                number, number * PIECE_LENGTH, len(data), piece.digest
            )
            assert piece.digest == piece_digest(data)

    compressed = server.statistics().pieces_compressed
    assert compressed == (1 if client_compresses and server_compresses else 0)


async def test_compressible_piece_travels_compressed(store: PieceStore) -> None:
    data = bytes(PIECE_LENGTH)
    put_task(store, [data])
    server = TcpPieceServer(store)

    async with running(server) as port, client() as tcp:
        _, received = await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)

    assert received == data
    statistics = server.statistics()
    assert statistics.pieces_compressed == 1
    assert statistics.bytes_sent < PIECE_LENGTH // 20


async def test_random_piece_travels_uncompressed(store: PieceStore) -> None:
    data = os.urandom(PIECE_LENGTH)
    put_task(store, [data])
    server = TcpPieceServer(store)

    async with running(server) as port, client() as tcp:
        _, received = await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)

    assert received == data
    statistics = server.statistics()
    assert (statistics.pieces_sent, statistics.pieces_compressed) == (1, 0)
    assert PIECE_LENGTH < statistics.bytes_sent < PIECE_LENGTH + 200


@pytest.mark.parametrize(
    ("data", "compressed"),
    [
        (bytes(10 * COMPRESSION_SAMPLE), 1),
        (
            bytes(4 * COMPRESSION_SAMPLE)
            + os.urandom(2 * COMPRESSION_SAMPLE)
            + bytes(4 * COMPRESSION_SAMPLE),
            0,
        ),
    ],
    ids=["compressible throughout", "random in the middle"],
)
async def test_a_large_piece_is_judged_by_a_sample_from_its_middle(
    store: PieceStore, data: bytes, compressed: int
) -> None:
    """Compression is tried on the middle of a large piece first: where that does
    not shrink, the piece travels uncompressed, however well the rest would."""
    store.put_task(Task(TASK, "https://example.test/f", len(data), len(data), "v"))
    store.put_piece(TASK, Piece(0, 0, len(data), piece_digest(data)), data)
    server = TcpPieceServer(store)

    async with running(server) as port, client() as tcp:
        _, received = await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)

    assert received == data
    assert server.statistics().pieces_compressed == compressed


async def test_missing_task_or_piece_raises_piece_not_found(store: PieceStore) -> None:
    put_task(store, random_pieces(1))

    async with running(TcpPieceServer(store)) as port, client() as tcp:
        address = f"127.0.0.1:{port}"
        with pytest.raises(PieceNotFound) as missing_piece:
            await tcp.fetch(address, TASK, 7)
        with pytest.raises(PieceNotFound):
            await tcp.fetch(address, "unknown", 0)
        # The connection survives an error answer.
        assert (await tcp.fetch(address, TASK, 0))[0].number == 0

    assert (missing_piece.value.task_id, missing_piece.value.number) == (TASK, 7)


async def test_not_found_errors_say_what_is_missing(store: PieceStore) -> None:
    put_task(store, random_pieces(1))
    unknown = "u" * 64

    def ask(port: int) -> list[tuple[int, int, str]]:
        with raw_connect(port) as sock:
            sock.sendall(encode_get(1, TASK, 5) + encode_get(2, unknown, 0))
            return [read_error_and_message(sock) for _ in range(2)]

    async with running(TcpPieceServer(store)) as port:
        errors = await anyio.to_thread.run_sync(ask, port)

    assert errors == [
        (1, ErrorCode.NOT_FOUND, f"no piece 5 of task {TASK}"),
        (2, ErrorCode.NOT_FOUND, f"unknown task {unknown}"),
    ]


# Pipelining


async def test_concurrent_fetches_share_one_connection(store: PieceStore) -> None:
    pieces = random_pieces(16)
    put_task(store, pieces)
    server = TcpPieceServer(store)
    results: dict[int, bytes | bytearray] = {}

    async def fetch(tcp: TcpPieceClient, address: str, number: int) -> None:
        piece, data = await tcp.fetch(address, TASK, number % 16)
        assert piece.number == number % 16
        results[number] = data

    async with (
        running(server) as port,
        client(connections_per_parent=1) as tcp,
        anyio.create_task_group() as task_group,
    ):
        for number in range(64):
            task_group.start_soon(fetch, tcp, f"127.0.0.1:{port}", number)

    assert all(data == pieces[number % 16] for number, data in results.items())
    assert len(results) == 64
    assert server.statistics().connections_accepted == 1


async def test_pipelined_answers_carry_request_ids_in_order(store: PieceStore) -> None:
    pieces = random_pieces(5)
    put_task(store, pieces)

    def pipeline(port: int) -> None:
        with raw_connect(port) as sock:
            sock.sendall(b"".join(encode_get(10 + n, TASK, n) for n in range(5)))
            for number in range(5):
                kind, flags, request_id, body = read_frame(sock)
                assert (kind, flags, request_id) == (FrameType.PIECE, 0, 10 + number)
                fields = PIECE.unpack_from(body)
                assert fields[:3] == (number, number * PIECE_LENGTH, PIECE_LENGTH)
                assert body[-PIECE_LENGTH:] == pieces[number]

    async with running(TcpPieceServer(store)) as port:
        await in_thread(lambda: pipeline(port))


# A server facing bad clients

FATAL_INPUTS = {
    "http request": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "FRAME_TOO_LARGE"),
    "zeros": (False, bytes(HEADER.size), "PROTOCOL"),
    "bad magic": (
        False,
        encode_frame(FrameType.HELLO, 0, HELLO.pack(b"XXXX", VERSION, 0)),
        "PROTOCOL",
    ),
    "unsupported version": (False, hello_frame(version=99), "UNSUPPORTED_VERSION"),
    "short hello": (False, encode_frame(FrameType.HELLO, 0, b"DP"), "PROTOCOL"),
    "get before hello": (False, encode_get(1, TASK, 0), "PROTOCOL"),
    "frame length 2**63": (
        True,
        HEADER.pack(FrameType.GET, 0, 0, 1, 2**63),
        "FRAME_TOO_LARGE",
    ),
    "second hello": (True, hello_frame(), "PROTOCOL"),
}


@pytest.mark.parametrize("case", FATAL_INPUTS)
async def test_fatal_input_gets_error_then_close(
    store: PieceStore, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(1000)
    put_task(store, [data])
    hello, sent, code = FATAL_INPUTS[case]

    def misbehave(port: int) -> None:
        with raw_connect(port, hello=hello) as sock:
            sock.sendall(sent)
            assert read_error(sock)[1] == ErrorCode[code]
            assert at_eof(sock)

    caplog.set_level(logging.DEBUG, logger="dragonpy.transport.tcp")
    async with running(TcpPieceServer(store)) as port:
        await in_thread(lambda: misbehave(port))
        await assert_serves(port, data)

    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    assert not any(record.levelno >= logging.WARNING for record in caplog.records)


RECOVERABLE_INPUTS = {
    "task ID length 10**9": (
        encode_frame(FrameType.GET, 7, struct.pack(">II", 0, 10**9) + b"abc"),
        "BAD_REQUEST",
    ),
    "short GET": (encode_frame(FrameType.GET, 7, b"abc"), "BAD_REQUEST"),
    "empty task ID": (encode_frame(FrameType.GET, 7, GET.pack(0, 0)), "BAD_REQUEST"),
    "task ID not UTF-8": (
        encode_frame(FrameType.GET, 7, GET.pack(0, 2) + b"\xff\xfe"),
        "BAD_REQUEST",
    ),
    "unknown frame type": (encode_frame(99, 7, b"future"), "UNKNOWN_FRAME"),
    "a PIECE sent to the server": (encode_frame(FrameType.PIECE, 7), "UNKNOWN_FRAME"),
    "unknown task": (encode_get(7, "nope", 0), "NOT_FOUND"),
}


@pytest.mark.parametrize("case", RECOVERABLE_INPUTS)
async def test_bad_request_gets_error_and_connection_goes_on(
    store: PieceStore, case: str
) -> None:
    data = os.urandom(1000)
    put_task(store, [data])
    sent, code = RECOVERABLE_INPUTS[case]

    def misbehave(port: int) -> None:
        with raw_connect(port) as sock:
            sock.sendall(sent)
            assert read_error(sock) == (7, ErrorCode[code])
            sock.sendall(encode_get(8, TASK, 0))
            kind, _, request_id, body = read_frame(sock)
            assert (kind, request_id) == (FrameType.PIECE, 8)
            assert body.endswith(data)

    async with running(TcpPieceServer(store)) as port:
        await in_thread(lambda: misbehave(port))
        await assert_serves(port, data)


@pytest.mark.parametrize("hello", [False, True])
@pytest.mark.parametrize("cut", [3, HEADER.size + 5])
async def test_peer_closing_mid_frame_is_dropped(
    store: PieceStore, hello: bool, cut: int
) -> None:
    data = os.urandom(1000)
    put_task(store, [data])
    frame = encode_get(1, TASK, 0)

    def hang_up(port: int) -> None:
        with raw_connect(port, hello=hello) as sock:
            sock.sendall(frame[:cut])
            sock.shutdown(socket.SHUT_WR)
            assert at_eof(sock)

    async with running(TcpPieceServer(store)) as port:
        await in_thread(lambda: hang_up(port))
        await assert_serves(port, data)


# Calling requests off


async def _wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(RAW_TIMEOUT):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("called_off", ["waiting for a slot", "queued behind another"])
async def test_a_request_called_off_before_its_turn_is_not_sent(
    store: PieceStore, called_off: str
) -> None:
    pieces = random_pieces(2)
    put_task(store, pieces)
    server = TcpPieceServer(store, limits=UploadLimits(max_concurrent_pieces=1))
    fetched: dict[int, bytes] = {}
    scopes = {number: anyio.CancelScope() for number in (0, 1)}

    async def fetch(tcp: TcpPieceClient, address: str, number: int) -> None:
        with scopes[number]:
            _, data = await tcp.fetch(address, TASK, number)
            fetched[number] = bytes(data)

    # One connection: piece 0 waits for the only upload slot, which the test
    # holds, and piece 1 waits behind it.
    number = 0 if called_off == "waiting for a slot" else 1
    async with running(server) as port, client(connections_per_parent=1) as tcp:
        address = f"127.0.0.1:{port}"
        async with anyio.create_task_group() as group, server.throttle.slot():
            for piece in (0, 1):
                group.start_soon(fetch, tcp, address, piece)
            await _wait_for(lambda: server.statistics().requests_received == 2)
            scopes[number].cancel()
            await _wait_for(lambda: server.statistics().requests_called_off == 1)

        other = 1 - number
        assert fetched == {other: pieces[other]}
        await _wait_for(lambda: server.throttle.statistics().withdrawals == 1)
        assert server.statistics().pieces_sent == 1
        # The connection goes on, and the piece called off can be asked again.
        _, data = await tcp.fetch(address, TASK, number)
        assert bytes(data) == pieces[number]
        assert server.statistics().pieces_sent == 2


def test_cancel_for_no_request_in_flight_is_ignored(store: PieceStore) -> None:
    pieces = random_pieces(1)
    put_task(store, pieces)

    def exchange(port: int) -> None:
        with raw_connect(port) as sock:
            sock.sendall(encode_frame(FrameType.CANCEL, 99) + encode_get(1, TASK, 0))
            kind, _, request_id, body = read_frame(sock)
            assert (kind, request_id) == (FrameType.PIECE, 1)
            assert body[-PIECE_LENGTH:] == pieces[0]

    async def run() -> None:
        async with running(TcpPieceServer(store)) as port:
            await in_thread(lambda: exchange(port))

    anyio.run(run)


async def test_half_closed_connection_gets_its_answers(store: PieceStore) -> None:
    pieces = random_pieces(3)
    put_task(store, pieces)

    def half_close(port: int) -> None:
        with raw_connect(port) as sock:
            sock.sendall(b"".join(encode_get(n + 1, TASK, n) for n in range(3)))
            sock.shutdown(socket.SHUT_WR)
            for number in range(3):
                assert read_frame(sock)[3].endswith(pieces[number])
            assert at_eof(sock)

    async with running(TcpPieceServer(store)) as port:
        await in_thread(lambda: half_close(port))
        await assert_serves(port, pieces[0])


@pytest.mark.parametrize("hello", [False, True])
async def test_idle_connection_is_closed(store: PieceStore, hello: bool) -> None:
    data = os.urandom(1000)
    put_task(store, [data])

    def stay_idle(port: int) -> None:
        with raw_connect(port, hello=hello) as sock:
            assert at_eof(sock)

    async with running(TcpPieceServer(store, idle_timeout=0.2)) as port:
        await in_thread(lambda: stay_idle(port))
        await assert_serves(port, data)


async def test_connections_past_the_limit_are_refused(store: PieceStore) -> None:
    data = os.urandom(1000)
    put_task(store, [data])
    server = TcpPieceServer(store, max_connections=1)

    def refused(port: int) -> None:
        with raw_connect(port, hello=False) as sock:
            sock.sendall(hello_frame())
            assert read_error(sock) == (0, ErrorCode.BUSY)
            assert at_eof(sock)

    async with running(server) as port:
        first = await anyio.to_thread.run_sync(raw_connect, port)
        with first:
            await in_thread(lambda: refused(port))
            async with client() as tcp:
                with pytest.raises(TransportError, match="BUSY"):
                    await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)
            first.shutdown(socket.SHUT_WR)
            assert await anyio.to_thread.run_sync(at_eof, first)
        await assert_serves(port, data)

    assert server.statistics().connections_refused == 2


async def test_cancelling_serve_closes_connections(store: PieceStore) -> None:
    put_task(store, random_pieces(1))
    async with running(TcpPieceServer(store)) as port:
        sock = await anyio.to_thread.run_sync(raw_connect, port)

    with sock:
        assert await anyio.to_thread.run_sync(at_eof, sock)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=RAW_TIMEOUT)


async def test_client_replaces_connection_closed_by_parent(store: PieceStore) -> None:
    pieces = random_pieces(2)
    put_task(store, pieces)

    async with client() as tcp:
        async with running(TcpPieceServer(store)) as port:
            assert (await tcp.fetch(f"127.0.0.1:{port}", TASK, 0))[1] == pieces[0]
        # The restarted parent on the same port knows nothing of the old connection.
        async with running(TcpPieceServer(store), port):
            assert (await tcp.fetch(f"127.0.0.1:{port}", TASK, 1))[1] == pieces[1]


async def test_closed_client_refuses_to_fetch(store: PieceStore) -> None:
    put_task(store, random_pieces(1))
    async with running(TcpPieceServer(store)) as port:
        tcp = TcpPieceClient()
        await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)
        await tcp.aclose()
        with pytest.raises(TransportError, match="closed"):
            await tcp.fetch(f"127.0.0.1:{port}", TASK, 0)


# A client facing bad parents


@contextlib.contextmanager
def fake_parent(
    script: Callable[[socket.socket], None], *, read_hello: bool = True
) -> Iterator[str]:
    """A parent that accepts one connection and runs ``script`` on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(RAW_TIMEOUT)

    def run() -> None:
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(RAW_TIMEOUT)
            if read_hello:
                recv_exactly(sock, HEADER.size + HELLO.size)
            # The client may hang up as soon as it sees something wrong.
            with contextlib.suppress(OSError):
                script(sock)
                # Wait for the client to hang up, so that closing sends no reset.
                while sock.recv(65536):
                    pass

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join()
        listener.close()


def ack(capabilities: int = CAP_ZSTD) -> bytes:
    body = HELLO_ACK.pack(MAGIC, VERSION, capabilities, 8)
    return encode_frame(FrameType.HELLO_ACK, 0, body)


def piece_frame(
    number: int, length: int, payload: bytes, *, flags: int = 0, body: int = -1
) -> bytes:
    digest = b"blake3:00"
    fields = PIECE.pack(number, 0, length, len(digest)) + digest
    size = len(fields) + len(payload) if body < 0 else body
    return HEADER.pack(FrameType.PIECE, flags, 0, 1, size) + fields + payload


def sends(*chunks: bytes) -> Callable[[socket.socket], None]:
    """A script that sends ``chunks``, then ends its side of the connection."""

    def script(sock: socket.socket) -> None:
        sock.sendall(b"".join(chunks))
        sock.shutdown(socket.SHUT_WR)

    return script


def hangs_up(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)


BAD_PARENTS: dict[str, Callable[[socket.socket], None]] = {
    "garbage for HELLO_ACK": sends(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    "hangs up before HELLO_ACK": hangs_up,
    "HELLO_ACK for another version": sends(
        encode_frame(FrameType.HELLO_ACK, 0, HELLO_ACK.pack(MAGIC, 2, 0, 8))
    ),
    "capability not offered": sends(ack(0x10)),
    "garbage after HELLO_ACK": sends(ack(), os.urandom(64)),
    "unexpected frame type": sends(ack(), encode_frame(FrameType.HELLO_ACK, 1)),
    "closes mid-header": sends(ack(), piece_frame(0, 100, bytes(100))[:10]),
    "closes mid-body": sends(ack(), piece_frame(0, 100, bytes(100))[:-30]),
    "payload longer than piece": sends(ack(), piece_frame(0, 50, bytes(100))),
    "payload shorter than piece": sends(ack(), piece_frame(0, 100, bytes(50))),
    "wrong piece number": sends(ack(), piece_frame(3, 100, bytes(100))),
    "unknown flags": sends(ack(), piece_frame(0, 100, bytes(100), flags=0x80)),
    "zstd not negotiated": sends(
        ack(0), piece_frame(0, 1000, zstandard.compress(bytes(1000)), flags=FLAG_ZSTD)
    ),
    "zstd bigger than declared": sends(
        ack(), piece_frame(0, 1000, zstandard.compress(bytes(5000)), flags=FLAG_ZSTD)
    ),
    "zstd garbage": sends(ack(), piece_frame(0, 1000, bytes(100), flags=FLAG_ZSTD)),
    "unknown request ID": sends(
        ack(), HEADER.pack(FrameType.ERROR, 0, 0, 99, 4) + ERROR.pack(1, 0)
    ),
    "connection-level error": sends(
        ack(), HEADER.pack(FrameType.ERROR, 0, 0, 0, 4) + ERROR.pack(7, 0)
    ),
}


@pytest.mark.parametrize("case", BAD_PARENTS)
async def test_bad_parent_raises_transport_error(case: str) -> None:
    with fake_parent(BAD_PARENTS[case]) as address:
        async with client(read_timeout=RAW_TIMEOUT) as tcp:
            with pytest.raises(TransportError) as caught:
                await tcp.fetch(address, TASK, 0)

    assert caught.value.address == address
    assert address in str(caught.value)


@pytest.mark.parametrize(
    ("piece_length", "body_length"),
    [(2**30, PIECE.size + 9 + 2**30), (100, 2**63), (2**64 - 1, 2**64 - 1)],
)
async def test_huge_declared_lengths_are_refused_unallocated(
    piece_length: int, body_length: int
) -> None:
    frame = piece_frame(0, piece_length, b"", body=body_length)
    tracemalloc.start()
    try:
        with fake_parent(sends(ack(), frame)) as address:
            async with client() as tcp:
                with pytest.raises(TransportError, match="broke the tcp protocol"):
                    await tcp.fetch(address, TASK, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 8 * 1024 * 1024


async def test_silent_parent_times_out() -> None:
    with fake_parent(lambda sock: sock.sendall(ack())) as address:
        async with client(read_timeout=0.2) as tcp:
            with pytest.raises(TransportError, match="nothing for too long"):
                await tcp.fetch(address, TASK, 0)


async def test_unreachable_parent_raises_transport_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        address = f"127.0.0.1:{placeholder.getsockname()[1]}"
    async with client() as tcp:
        with pytest.raises(TransportError, match="cannot connect") as caught:
            await tcp.fetch(address, TASK, 0)
    assert caught.value.address == address


@given(st.binary(max_size=200), st.booleans())
def test_any_answer_parses_or_raises_transport_error(
    answer: bytes, compress: bool
) -> None:
    options = _ClientOptions(1.0, 1.0, 1, 1, CAP_ZSTD, 1024)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(1.0)
        theirs.sendall(answer)
        theirs.shutdown(socket.SHUT_WR)
        try:
            response = read_response(ours, "fake:1", compress, options)
        except TransportError:
            return
    assert response.request_id >= 0
