"""The ``http`` transport on the wire: raw requests, bad input, misbehaving parents.

The conformance suite (``test_transports.py``) covers what every transport does; this
covers what only HTTP has. Raw sockets block, so they run in worker threads.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from dragonpy import Piece, PieceStore, Task, piece_digest
from dragonpy._transport import PieceNotFound, TransportError, UploadLimits
from dragonpy._transport._http import HttpPieceClient, HttpPieceServer

from .origin import free_port

pytestmark = pytest.mark.anyio

PIECE_LENGTH = 64 * 1024
CONTENT = os.urandom(3 * PIECE_LENGTH + 100)
TASK_ID = "0123456789abcdef" * 4
PATH = f"/pieces/{TASK_ID}"

Response = tuple[int, dict[str, str], bytes]


def fill(store: PieceStore, task_id: str = TASK_ID, content: bytes = CONTENT) -> None:
    store.put_task(
        Task(
            id=task_id,
            url="https://example.com/blob",
            content_length=len(content),
            piece_length=PIECE_LENGTH,
            validator="v",
        )
    )
    for offset in range(0, len(content), PIECE_LENGTH):
        data = content[offset : offset + PIECE_LENGTH]
        piece = Piece(offset // PIECE_LENGTH, offset, len(data), piece_digest(data))
        store.put_piece(task_id, piece, data)


def piece_bytes(number: int) -> bytes:
    return CONTENT[number * PIECE_LENGTH : (number + 1) * PIECE_LENGTH]


@pytest.fixture
async def server(store: PieceStore) -> AsyncIterator[str]:
    """The address of an HTTP piece server holding ``CONTENT``, with room for
    every request of these tests at once (none is answered busy)."""
    fill(store)
    limits = UploadLimits(max_concurrent_pieces=64)
    async with anyio.create_task_group() as group:
        serve = HttpPieceServer(store, limits=limits).serve
        port = await group.start(serve, "127.0.0.1", 0)
        yield f"127.0.0.1:{port}"
        group.cancel_scope.cancel()


@pytest.fixture
async def client() -> AsyncIterator[HttpPieceClient]:
    piece_client = HttpPieceClient()
    yield piece_client
    await piece_client.aclose()


# Raw HTTP, as curl would speak it


def connect(address: str) -> socket.socket:
    host, _, port = address.partition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(reader: socket.SocketIO) -> Response:
    """One response with a Content-Length body, read off a connection."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = reader.read(1)
        assert byte, f"connection closed mid-head after {head!r}"
        head += byte
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = b""
    while len(body) < int(headers["content-length"]):
        chunk = reader.read(int(headers["content-length"]) - len(body))
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def is_closed(sock: socket.socket, wait: float = 5.0) -> bool:
    """Whether the server closes the connection within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def exchange(address: str, request: bytes) -> tuple[Response, bool]:
    """Send raw bytes; the response, and whether the server closed afterwards."""
    with connect(address) as sock:
        sock.sendall(request)
        response = read_response(socket.SocketIO(sock, "rb"))
        return response, is_closed(sock, wait=0.5)


async def raw(address: str, request: bytes) -> tuple[Response, bool]:
    return await anyio.to_thread.run_sync(exchange, address, request)


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: peer", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def assert_still_serving(address: str) -> None:
    """A normal fetch, from a new client, succeeds."""
    fresh = HttpPieceClient()
    try:
        piece, data = await fresh.fetch(address, TASK_ID, 1)
    finally:
        await fresh.aclose()
    assert data == piece_bytes(1)
    assert piece == Piece(1, PIECE_LENGTH, PIECE_LENGTH, piece_digest(piece_bytes(1)))


async def test_a_piece_is_served_with_its_place_and_digest(server: str) -> None:
    (status, headers, body), closed = await raw(server, get(f"{PATH}/3"))
    assert status == 200
    assert body == CONTENT[3 * PIECE_LENGTH :]
    assert headers["content-length"] == "100"
    assert headers["x-dragonpy-piece-offset"] == str(3 * PIECE_LENGTH)
    assert headers["x-dragonpy-piece-digest"] == piece_digest(body)
    assert headers["x-dragonpy-piece-digest"].startswith("blake3:")
    assert not closed


async def test_two_requests_share_one_connection(server: str) -> None:
    def two_requests() -> list[Response]:
        with connect(server) as sock:
            reader = socket.SocketIO(sock, "rb")
            sock.sendall(get(f"{PATH}/0"))
            first = read_response(reader)
            sock.sendall(get(f"{PATH}/9"))
            second = read_response(reader)
            # Pipelined: both requests in one write.
            sock.sendall(get(f"{PATH}/1") + get(f"{PATH}/2", "Connection: close"))
            third, fourth = read_response(reader), read_response(reader)
            assert is_closed(sock)
        return [first, second, third, fourth]

    responses = await anyio.to_thread.run_sync(two_requests)
    assert [status for status, _, _ in responses] == [200, 404, 200, 200]
    assert responses[0][2] == piece_bytes(0)
    assert responses[2][2] == piece_bytes(1)
    assert responses[3][2] == piece_bytes(2)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{PATH}/4", f"no piece 4 of task {TASK_ID}"),
        (f"{PATH}/4294967295", f"no piece 4294967295 of task {TASK_ID}"),
        (f"/pieces/{'ee' * 32}/0", f"unknown task {'ee' * 32}"),
    ],
    ids=["missing piece", "largest number", "unknown task"],
)
async def test_unknown_pieces_are_404_and_keep_the_connection(
    server: str, target: str, message: str
) -> None:
    (status, headers, body), closed = await raw(server, get(target))
    assert (status, closed) == (404, False)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body.decode() == message + "\n"


@pytest.mark.parametrize(
    "target",
    [
        f"{PATH}/4294967296",
        f"{PATH}/-1",
        f"{PATH}/one",
        f"{PATH}/99999999999",
        f"{PATH}/",
        f"{PATH}/1/",
        f"{PATH}/1?x=1",
        f"/pieces/{TASK_ID.upper()}/1",
        f"/pieces/{TASK_ID[:-1]}/1",
        f"/pieces/{TASK_ID}0/1",
        f"/pieces/{'g' * 64}/1",
        "/",
        "/pieces",
        "*",
    ],
)
async def test_malformed_paths_are_400(server: str, target: str) -> None:
    (status, _, _), closed = await raw(server, get(target))
    assert (status, closed) == (400, True)
    await assert_still_serving(server)


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(server: str, method: str) -> None:
    request = f"{method} {PATH}/0 HTTP/1.1\r\nHost: peer\r\nContent-Length: 0\r\n\r\n"
    # HEAD responses have no body, whatever Content-Length says.
    with connect(server) as sock:
        await anyio.to_thread.run_sync(sock.sendall, request.encode())
        head = await anyio.to_thread.run_sync(sock.recv, 65536)
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET\r\n" in head
    await assert_still_serving(server)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00" * 100 + b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /pieces HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "garbage",
        "nul bytes",
        "no target",
        "bad version",
        "no host",
        "bad header",
        "negative length",
        "long header",
        "long target",
    ],
)
async def test_malformed_requests_get_4xx_and_a_closed_connection(
    server: str, request_bytes: bytes
) -> None:
    (status, _, _), closed = await raw(server, request_bytes)
    too_long = len(request_bytes) > 8192
    assert (status, closed) == (431 if too_long else 400, True)
    await assert_still_serving(server)


async def test_a_head_without_end_is_cut_off_at_8_kib(server: str) -> None:
    def endless_head() -> bytes:
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            with pytest.raises(OSError):
                for _ in range(100_000):
                    sock.sendall(b"X-Filler: " + b"b" * 1000 + b"\r\n")
            try:
                return sock.recv(65536)
            except OSError:
                return b""

    answer = await anyio.to_thread.run_sync(endless_head)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    await assert_still_serving(server)


async def test_clients_that_vanish_do_not_stop_the_server(server: str) -> None:
    def rude_clients() -> None:
        for request in (b"", b"GET /pie", get(f"{PATH}/0")):
            with connect(server) as sock:
                sock.sendall(request)
                # Linger 0: close with a reset, mid-answer for the last one.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0"
                )

    await anyio.to_thread.run_sync(rude_clients)
    await assert_still_serving(server)


async def test_a_request_with_a_body_is_answered_then_closed(server: str) -> None:
    request = get(f"{PATH}/0", "Content-Length: 5") + b"hello"
    (status, _, body), closed = await raw(server, request)
    assert (status, body, closed) == (200, piece_bytes(0), True)


async def test_idle_connections_are_closed(store: PieceStore) -> None:
    fill(store)
    async with anyio.create_task_group() as group:
        serve = HttpPieceServer(store, idle_timeout=0.3).serve
        port = await group.start(serve, "127.0.0.1", 0)
        with connect(f"127.0.0.1:{port}") as sock:
            sock.sendall(b"GET /pieces/")
            started = time.monotonic()
            assert await anyio.to_thread.run_sync(is_closed, sock)
            assert time.monotonic() - started < 5
        group.cancel_scope.cancel()


async def test_connections_beyond_the_limit_wait(store: PieceStore) -> None:
    fill(store)
    async with anyio.create_task_group() as group:
        serve = HttpPieceServer(store, max_connections=1).serve
        address = f"127.0.0.1:{await group.start(serve, '127.0.0.1', 0)}"
        with connect(address) as first, connect(address) as second:
            second.sendall(get(f"{PATH}/0"))
            second.settimeout(0.5)
            with pytest.raises(TimeoutError):
                await anyio.to_thread.run_sync(second.recv, 1)
            first.close()
            second.settimeout(10)
            reader = socket.SocketIO(second, "rb")
            status, _, _ = await anyio.to_thread.run_sync(read_response, reader)
            assert status == 200
        group.cancel_scope.cancel()


async def test_cancelling_the_server_is_prompt_with_a_stalled_client(
    store: PieceStore,
) -> None:
    big = 32 * 1024 * 1024
    store.put_task(
        Task(id=TASK_ID, url="u", content_length=big, piece_length=big, validator="v")
    )
    data = bytes(big)
    store.put_piece(TASK_ID, Piece(0, 0, big, piece_digest(data)), data)
    async with anyio.create_task_group() as group:
        port = await group.start(HttpPieceServer(store).serve, "127.0.0.1", 0)
        address = f"127.0.0.1:{port}"
        with connect(address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(get(f"{PATH}/0"))
            await anyio.sleep(0.5)
            started = time.monotonic()
            group.cancel_scope.cancel()
    assert time.monotonic() - started < 2


# The client


async def test_concurrent_fetches_through_one_client(
    server: str, client: HttpPieceClient
) -> None:
    results: dict[tuple[int, int], bytes | bytearray] = {}

    async def fetch(round_: int, number: int) -> None:
        piece, data = await client.fetch(server, TASK_ID, number)
        assert piece.digest == piece_digest(data)
        results[round_, number] = data

    async with anyio.create_task_group() as group:
        for round_ in range(20):
            for number in range(4):
                group.start_soon(fetch, round_, number)

    assert len(results) == 80
    for (_, number), data in results.items():
        assert data == piece_bytes(number)


async def test_not_found_keeps_the_connection(
    server: str, client: HttpPieceClient
) -> None:
    with pytest.raises(PieceNotFound) as caught:
        await client.fetch(server, TASK_ID, 7)
    assert (caught.value.task_id, caught.value.number) == (TASK_ID, 7)
    _, data = await client.fetch(server, TASK_ID, 0)
    assert data == piece_bytes(0)


async def test_impossible_requests_are_value_errors(client: HttpPieceClient) -> None:
    with pytest.raises(ValueError, match="task ID"):
        await client.fetch("127.0.0.1:1", "../etc", 0)
    with pytest.raises(ValueError, match="piece number"):
        await client.fetch("127.0.0.1:1", TASK_ID, 2**32)


@pytest.mark.parametrize("address", ["nohost", "host:", "host:http", ":80", "h:99999"])
async def test_bad_addresses_are_transport_errors(
    client: HttpPieceClient, address: str
) -> None:
    with pytest.raises(TransportError) as caught:
        await client.fetch(address, TASK_ID, 0)
    assert caught.value.address == address


async def test_a_refused_connection_names_the_parent(client: HttpPieceClient) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransportError, match=address) as caught:
        await client.fetch(address, TASK_ID, 0)
    assert caught.value.address == address


Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@pytest.fixture
async def fake_parent() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts servers that answer with whatever a test's handler sends."""
    async with anyio.create_task_group() as group:

        async def start(handler: Handler) -> str:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            group.start_soon(serve, listener, handler)
            return f"127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"

        yield start
        group.cancel_scope.cancel()


async def serve(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    handler: Handler,
) -> None:
    async with listener:
        await listener.serve(handler)


async def read_request(stream: anyio.abc.SocketStream) -> bytes:
    request = b""
    while not request.endswith(b"\r\n\r\n"):
        request += await stream.receive()
    return request


def answering(*responses: bytes, close: bool = True) -> Handler:
    """A handler that sends each response to one request, then closes."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            for response in responses:
                await read_request(stream)
                await stream.send(response)
            if not close:
                await anyio.sleep_forever()

    return handler


def ok_head(length: int, *extra: str) -> bytes:
    lines = [
        "HTTP/1.1 200 OK",
        f"Content-Length: {length}",
        "X-Dragonpy-Piece-Offset: 0",
        "X-Dragonpy-Piece-Digest: blake3:00",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (ok_head(2**40), "Content-Length 1099511627776, over"),
        (ok_head(1) + b"x" * 100, "more bytes than"),
        (ok_head(1000) + b"x" * 500, "after 500 of 1000 bytes"),
        (b"HTTP/1.1 200 OK\r\nX-Dragonpy-Piece-Offset: 0\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", "Offset"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Dragonpy-Piece-Offset: 0"
            b"\r\n\r\nx",
            "Digest",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Dragonpy-Piece-Offset: -1"
            b"\r\nX-Dragonpy-Piece-Digest: d\r\n\r\nx",
            "Offset",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "without"),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "answered 500"),
        (b"HTTP/1.1 404 Gone\r\nContent-Length: 99999999\r\n\r\n", "over 65536"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", "malformed header"),
        (b"\xff" * 20_000, "over 8192 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "mid-headers"),
        (b"", "without answering"),
    ],
    ids=[
        "huge length",
        "extra bytes",
        "closed mid-body",
        "no length",
        "no offset",
        "no digest",
        "bad offset",
        "chunked",
        "500",
        "huge 404",
        "not http",
        "folded header",
        "endless head",
        "closed mid-head",
        "closed at once",
    ],
)
async def test_misbehaving_parents_are_transport_errors(
    fake_parent: Callable[[Handler], Awaitable[str]],
    client: HttpPieceClient,
    response: bytes,
    message: str,
) -> None:
    address = await fake_parent(answering(response))
    with pytest.raises(TransportError, match=message) as caught:
        await client.fetch(address, TASK_ID, 0)
    assert caught.value.address == address
    assert address in str(caught.value)


async def test_max_piece_length_bounds_the_body(
    fake_parent: Callable[[Handler], Awaitable[str]],
) -> None:
    address = await fake_parent(answering(ok_head(11) + b"x" * 11))
    small = HttpPieceClient(max_piece_length=10)
    try:
        with pytest.raises(TransportError, match="over 10"):
            await small.fetch(address, TASK_ID, 0)
    finally:
        await small.aclose()


async def test_a_silent_parent_times_out(
    fake_parent: Callable[[Handler], Awaitable[str]],
) -> None:
    address = await fake_parent(answering(close=False))
    slow = HttpPieceClient(read_timeout=0.3)
    try:
        with anyio.fail_after(10), pytest.raises(TransportError, match="stopped"):
            await slow.fetch(address, TASK_ID, 0)
    finally:
        await slow.aclose()


async def test_cancelling_a_fetch_is_prompt(
    fake_parent: Callable[[Handler], Awaitable[str]], client: HttpPieceClient
) -> None:
    address = await fake_parent(answering(close=False))
    started = time.monotonic()
    with anyio.move_on_after(0.3):
        await client.fetch(address, TASK_ID, 0)
    assert time.monotonic() - started < 2


async def test_a_pooled_connection_closed_by_the_parent_is_replaced(
    fake_parent: Callable[[Handler], Awaitable[str]], client: HttpPieceClient
) -> None:
    # Every connection answers one request with keep-alive, then closes.
    address = await fake_parent(answering(ok_head(3) + b"abc"))
    for _ in range(3):
        piece, data = await client.fetch(address, TASK_ID, 0)
        assert (piece, data) == (Piece(0, 0, 3, "blake3:00"), b"abc")
        await anyio.sleep(0.05)


async def test_connection_close_from_the_parent_is_honoured(
    fake_parent: Callable[[Handler], Awaitable[str]], client: HttpPieceClient
) -> None:
    # The parent answers once per connection and keeps it open: a client that
    # pooled it despite "Connection: close" would wait forever for a second answer.
    answer = ok_head(3, "Connection: close") + b"abc"
    address = await fake_parent(answering(answer, close=False))
    with anyio.fail_after(5):
        for _ in range(2):
            _, data = await client.fetch(address, TASK_ID, 0)
            assert data == b"abc"
