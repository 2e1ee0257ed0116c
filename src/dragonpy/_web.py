"""A small HTTP/1.1 server for the JSON and plain-text endpoints of dragonpy's
processes: the scheduler's API, a daemon's health, metrics and control endpoints.

It speaks h11 over anyio streams (TCP or a Unix socket), keeps connections alive,
reads whole request bodies up to ``MAX_BODY`` and answers with a whole body or a
chunked stream, or a body a worker thread writes straight to the socket (stored
blobs, from the store's map without a copy). A request that is not HTTP, too large or
too slow gets a 4xx and the connection closes; a handler that raises gets a 500 and a
log line, and the server goes on. Piece bodies between peers never pass through here:
the piece transports have their own zero-copy servers.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Final, cast
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import h11

from ._transport._sockets import send_all

logger = logging.getLogger("dragonpy.web")

MAX_BODY: Final = 4 * 1024 * 1024
_MAX_HEAD: Final = 16 * 1024
_RECEIVE_SIZE: Final = 64 * 1024
_IDLE_TIMEOUT: Final = 120.0
_BODY_TIMEOUT: Final = 30.0


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, str]
    #: The request target as sent: path and query string.
    target: str
    headers: dict[str, str]  # names lowercased
    body: bytes
    #: Groups of the route pattern that matched the path.
    params: tuple[str, ...] = ()


SendChunk = Callable[[memoryview], None]


@attrs.frozen
class WrittenBody:
    """A body written from a worker thread: ``write`` is called with a function that
    sends one chunk to the client's socket as it is, so a chunk may be a view into
    the store's map, valid only while ``write`` holds its read transaction."""

    write: Callable[[SendChunk], None]


@attrs.frozen
class Response:
    status: int
    body: bytes | AsyncIterator[bytes] | WrittenBody = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    #: For a streamed body: its length when known (sent as Content-Length rather
    #: than chunked), and for any body, what a HEAD answer announces.
    length: int | None = None
    #: For a 2xx answer to CONNECT: takes over the connection once the answer is
    #: sent, with any bytes the client sent after its request.
    tunnel: Tunnel | None = None
    #: Awaited once the answer is over, whether its body went out, failed or was
    #: never sent (a HEAD's): where a handler lets go of what the body needed.
    closed: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Request], Awaitable[Response]]
Tunnel = Callable[[anyio.abc.ByteStream, bytes], Awaitable[None]]


def text(status: int, message: str) -> Response:
    """A plain-text answer, newline-terminated for terminals."""
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


class Router:
    """Dispatches requests by method and a full-match path pattern."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern), handler))

    async def __call__(self, request: Request) -> Response:
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method == request.method:
                return await handler(attrs.evolve(request, params=match.groups()))
            allowed.append(method)
        if allowed:
            return text(405, f"{request.method} is not allowed here; use {allowed[0]}")
        return text(404, f"no endpoint at {request.path}")


async def serve_tcp(
    host: str,
    port: int,
    handler: Handler,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on ``host:port`` until cancelled; reports the bound port once listening."""
    listener = await anyio.create_tcp_listener(
        local_host=host, local_port=port, reuse_port=False
    )
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(bound)
        await listener.serve(lambda stream: _serve_connection(stream, handler))


async def serve_unix(
    path: str,
    handler: Handler,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on the Unix socket ``path`` (replacing a stale one) until cancelled."""
    await anyio.Path(path).unlink(missing_ok=True)
    listener = await anyio.create_unix_listener(path)
    try:
        async with listener:
            task_status.started()
            await listener.serve(lambda stream: _serve_connection(stream, handler))
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.Path(path).unlink(missing_ok=True)


class _BodyFailed(Exception):
    """A streamed body could not be finished."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _serve_connection(stream: anyio.abc.ByteStream, handler: Handler) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
    async with stream:
        try:
            while True:
                try:
                    request = await _read_request(stream, connection)
                except _BadRequest as exc:
                    await _send_error(stream, connection, exc.status, str(exc))
                    return
                if request is None:
                    return
                response = await _handle(handler, request)
                if response.tunnel is not None and request.method == "CONNECT":
                    await _open_tunnel(stream, connection, response)
                    return
                head = request.method == "HEAD"
                try:
                    await _send_response(stream, connection, response, head=head)
                finally:
                    if response.closed is not None:
                        with anyio.CancelScope(shield=True):
                            await response.closed()
                if connection.our_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return  # the client went away
        except _BodyFailed:
            return
        except h11.LocalProtocolError as exc:
            logger.debug("connection ended: %r", exc)


async def _read_request(
    stream: anyio.abc.ByteStream, connection: h11.Connection
) -> Request | None:
    """The next request, or None when the client closed or idled out between them."""
    event = await _next_event(stream, connection, _IDLE_TIMEOUT, between=True)
    if event is None:
        return None
    if not isinstance(event, h11.Request):
        raise _BadRequest(400, "expected an HTTP/1.1 request")
    body = bytearray()
    with anyio.move_on_after(_BODY_TIMEOUT) as scope:
        while True:
            part = await _next_event(stream, connection, _BODY_TIMEOUT, between=False)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > MAX_BODY:
                    raise _BadRequest(413, f"request body is over {MAX_BODY} bytes")
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise _BadRequest(400, "request body ended early")
    if scope.cancelled_caught:
        raise _BadRequest(408, "request body was not sent in time")

    raw_target = event.target.decode("ascii", "replace")
    target = urlsplit(raw_target)
    return Request(
        method=event.method.decode("ascii", "replace"),
        path=target.path,
        query=dict(parse_qsl(target.query)),
        target=raw_target,
        headers=_joined(event.headers),
        body=bytes(body),
    )


def _joined(lines: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header lines by name; repeated lines of a name joined with ", ", which means
    the same (RFC 9110, 5.3): several ``Accept`` lines stay several media types."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in lines:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _next_event(
    stream: anyio.abc.ByteStream,
    connection: h11.Connection,
    timeout: float,
    *,
    between: bool,
) -> h11.Event | None:
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            raise _BadRequest(exc.error_status_hint, f"bad request: {exc}") from exc
        if event is not h11.NEED_DATA:
            if isinstance(event, h11.ConnectionClosed):
                if between:
                    return None
                raise _BadRequest(400, "connection closed mid-request")
            return event  # type: ignore[return-value]
        with anyio.move_on_after(timeout):
            try:
                data = await stream.receive(_RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            connection.receive_data(data)
            continue
        if between:
            return None
        raise _BadRequest(408, "request was not sent in time")


async def _handle(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return text(500, "internal error; see the server's log")


async def _send_response(
    stream: anyio.abc.ByteStream,
    connection: h11.Connection,
    response: Response,
    *,
    head: bool,
) -> None:
    headers = [("Content-Type", response.content_type), *response.headers]
    length = response.length
    if length is None and isinstance(response.body, bytes):
        length = len(response.body)
    if length is None:
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        headers.append(("Content-Length", str(length)))
    await _send(
        stream, connection, h11.Response(status_code=response.status, headers=headers)
    )
    # h11 sends no body for a HEAD answer, whatever it announces.
    if not head:
        await _send_body(stream, connection, response.body)
    await _send(stream, connection, h11.EndOfMessage())


async def _send_body(
    stream: anyio.abc.ByteStream,
    connection: h11.Connection,
    body: bytes | AsyncIterator[bytes] | WrittenBody,
) -> None:
    if isinstance(body, bytes):
        await _send(stream, connection, h11.Data(data=body))
    else:
        try:
            if isinstance(body, WrittenBody):
                await _write_from_thread(stream, connection, body)
            else:
                async for chunk in body:
                    if chunk:
                        # Passed through h11 as it is: no copy of the body.
                        data = h11.Data(data=chunk)
                        for part in connection.send_with_data_passthrough(data) or ():
                            await stream.send(part)
        except Exception as exc:
            # Too late for a status: closing the connection mid-body is how the
            # client learns, and falls back.
            logger.warning("response body failed, closing the connection: %s", exc)
            raise _BodyFailed from exc
        finally:
            # A client that went away leaves the generator mid-way: close it now,
            # so what it holds (a lease, a connection) is let go at once.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


async def _write_from_thread(
    stream: anyio.abc.ByteStream, connection: h11.Connection, body: WrittenBody
) -> None:
    """Let a worker thread send ``body`` on the stream's socket.

    Nothing sent earlier is still buffered: anyio's streams wait, on every send,
    until the transport's buffer is empty. While the thread sends, the event loop
    does not touch the connection.
    """
    # asyncio lends out a wrapper of its socket that cannot send: wrap the same
    # descriptor, and let go of it after, so that closing stays asyncio's business.
    lent = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock = socket.socket(fileno=lent.fileno())

    def send(chunk: memoryview) -> None:
        # h11 counts the bytes against Content-Length and hands the chunk back
        # untouched; it never needs the chunk to be ``bytes``.
        data = h11.Data(data=cast(bytes, chunk))
        for part in connection.send_with_data_passthrough(data) or ():
            send_all(sock, part, _BODY_TIMEOUT)

    try:
        await anyio.to_thread.run_sync(body.write, send)
    finally:
        sock.detach()


async def _open_tunnel(
    stream: anyio.abc.ByteStream, connection: h11.Connection, response: Response
) -> None:
    """Answer a CONNECT, then let the tunnel have the connection."""
    assert response.tunnel is not None
    await _send(
        stream, connection, h11.Response(status_code=response.status, headers=[])
    )
    leftover, _ = connection.trailing_data
    await response.tunnel(stream, bytes(leftover))


async def _send_error(
    stream: anyio.abc.ByteStream, connection: h11.Connection, status: int, message: str
) -> None:
    if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = (message + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    try:
        await _send(
            stream, connection, h11.Response(status_code=status, headers=headers)
        )
        await _send(stream, connection, h11.Data(data=body))
        await _send(stream, connection, h11.EndOfMessage())
    except (anyio.BrokenResourceError, OSError, h11.LocalProtocolError):
        pass


async def _send(
    stream: anyio.abc.ByteStream, connection: h11.Connection, event: h11.Event
) -> None:
    data = connection.send(event)
    if data:
        await stream.send(data)
