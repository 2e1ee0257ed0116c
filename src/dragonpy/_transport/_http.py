"""The ``http`` piece transport: plain HTTP/1.1, readable with curl.

``GET /pieces/{task_id}/{number}`` answers ``200`` with the piece's bytes and two
headers, ``X-Dragonpy-Piece-Offset`` and ``X-Dragonpy-Piece-Digest``; ``404`` when the
task or piece is not held, with a text body naming which; ``503`` with ``Retry-After``
when every upload slot is taken and as many pieces wait. Connections are kept alive.

Both halves keep piece bodies out of Python objects. The server parses requests with
h11 on the event loop, then answers each one from a worker thread that holds the
store's read transaction open while it writes the head and the memory-mapped piece to
the socket with one gather ``sendmsg`` loop. The client follows ``_range_reader``:
pooled blocking sockets in worker threads, ``recv_into`` a buffer sized from
``Content-Length``. Worker threads notice cancellation within ``_CANCEL_CHECK``
seconds (server) or at once (client, which shuts its socket down).
"""

from __future__ import annotations

import contextlib
import http
import logging
import re
import select
import socket
import threading
import time
from typing import ClassVar, Final, cast

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import h11

from .._errors import StoreError
from .._http11 import (
    BodyOverrun,
    HeadError,
    StaleConnection,
    TruncatedBody,
    read_body,
    read_head,
)
from .._pieces import MIB, Piece
from .._storage import PieceStore
from .._telemetry import extract_headers, inject_headers
from ._base import (
    ParentBusy,
    PieceClient,
    PieceNotFound,
    PieceServer,
    TransportError,
    fetch_span,
)
from ._limits import BUSY_MESSAGE, DEFAULT_UPLOAD_LIMITS, UploadBusy, UploadLimits
from ._sockets import accept, listen

logger = logging.getLogger("dragonpy.transport.http")

OFFSET_HEADER: Final = "X-Dragonpy-Piece-Offset"
DIGEST_HEADER: Final = "X-Dragonpy-Piece-Digest"

_MAX_HEAD: Final = 8 * 1024
_MAX_ERROR_BODY: Final = 64 * 1024
_MAX_NUMBER: Final = 2**32
_RECEIVE_SIZE: Final = 64 * 1024
_SOCKET_BUFFER: Final = 4 * 1024 * 1024
_IDLE_PER_PARENT: Final = 16
_CANCEL_CHECK: Final = 0.2
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 1024 * 1024
_PIECE_PATH: Final = re.compile(rb"/pieces/([0-9a-f]{64})/([0-9]{1,10})")
_TASK_ID: Final = re.compile(r"[0-9a-f]{64}")


def piece_path(task_id: str, number: int) -> str:
    """The request target of a piece; ``ValueError`` for an impossible request."""
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"task ID must be 64 lowercase hex digits, got {task_id!r}")
    if not 0 <= number < _MAX_NUMBER:
        raise ValueError(f"piece number must be in [0, 2**32), got {number}")
    return f"/pieces/{task_id}/{number}"


# Server


class HttpPieceServer(PieceServer):
    """Serves the store's pieces over HTTP/1.1.

    At most ``max_connections`` connections are open at once; more wait in the
    listen backlog. A connection closes after ``idle_timeout`` seconds without a
    complete request head, or when its peer stops reading for ``send_timeout``.
    Pieces go out within ``limits``.
    """

    name: ClassVar[str] = "http"

    def __init__(
        self,
        store: PieceStore,
        *,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        send_timeout: float = 30.0,
        limits: UploadLimits = DEFAULT_UPLOAD_LIMITS,
    ) -> None:
        super().__init__(store, limits=limits)
        if max_connections < 1:
            raise ValueError(f"max_connections must be positive: {max_connections}")
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = await listen(host, port)
        with listener:
            slots = anyio.Semaphore(self.max_connections)
            # One thread call at a time per connection: never wait for a thread.
            threads = anyio.CapacityLimiter(self.max_connections)
            task_status.started(listener.getsockname()[1])
            async with anyio.create_task_group() as group:
                while True:
                    await slots.acquire()
                    try:
                        sock, _ = await accept(listener)
                    except BaseException:
                        slots.release()
                        raise
                    group.start_soon(self._connection, sock, slots, threads)

    async def _connection(
        self,
        sock: socket.socket,
        slots: anyio.Semaphore,
        threads: anyio.CapacityLimiter,
    ) -> None:
        try:
            with sock:
                await _Connection(self, sock, threads).run()
        except (OSError, h11.ProtocolError) as exc:
            logger.debug("piece connection ended: %r", exc)
        except Exception:
            logger.exception("piece connection failed")
        finally:
            slots.release()


class _Connection:
    """One client connection: requests read on the event loop, answers in threads."""

    def __init__(
        self,
        server: HttpPieceServer,
        sock: socket.socket,
        threads: anyio.CapacityLimiter,
    ) -> None:
        self._server = server
        self._sock = sock
        self._threads = threads
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        # Answers to HEAD have no body, whatever their Content-Length says.
        self._is_head_request = False

    async def run(self) -> None:
        while True:
            self._is_head_request = False
            try:
                request = await self._read_request()
                if request is None:
                    return
                self._is_head_request = request.method == b"HEAD"
                # A GET has no body; a request with one is answered, then closed.
                end = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                # 400, or 431 for an overlong head.
                status = exc.error_status_hint
                await self._respond(status, f"bad request: {exc}", close=True)
                await self._linger()
                return

            close = not isinstance(end, h11.EndOfMessage)

            await self._answer(request, close)
            if not self._ready_for_next():
                await self._linger()
                return
            self._h11.start_next_cycle()

    async def _read_request(self) -> h11.Request | None:
        """The next request head, or None if the client left or idled too long."""
        received = 0
        with anyio.move_on_after(self._server.idle_timeout):
            while True:
                event = self._h11.next_event()
                if isinstance(event, h11.Request):
                    return event
                if event is not h11.NEED_DATA:
                    return None
                if received > _MAX_HEAD:
                    raise h11.RemoteProtocolError("request head over 8 KiB", 431)
                # Never read past the limit, so no head longer than it is parsed.
                received += await self._receive(_MAX_HEAD + 1 - received)
        return None

    async def _receive(self, size: int) -> int:
        await anyio.wait_readable(self._sock)
        try:
            data = self._sock.recv(size)
        except BlockingIOError:
            return 0
        self._h11.receive_data(data)
        return len(data)

    async def _answer(self, request: h11.Request, close: bool) -> None:
        if request.method != b"GET":
            await self._respond(
                405, "only GET is supported", close=True, extra=[("Allow", "GET")]
            )
            return

        match = _PIECE_PATH.fullmatch(request.target)
        if match is None or int(match[2]) >= _MAX_NUMBER:
            await self._respond(400, "expected /pieces/{task_id}/{number}", close=True)
            return

        task_id, number = match[1].decode(), int(match[2])
        parent = extract_headers(
            {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in request.headers
            }
        )
        try:
            async with self._server.upload(task_id, number, parent):
                await anyio.to_thread.run_sync(
                    self._send_piece, task_id, number, close, limiter=self._threads
                )
        except UploadBusy:
            retry = [("Retry-After", "1")]
            await self._respond(503, BUSY_MESSAGE, close=close, extra=retry)
        except StoreError as exc:
            if self._h11.our_state is not h11.SEND_RESPONSE:
                raise
            logger.warning("reading piece %d of %s failed: %s", number, task_id, exc)
            await self._respond(500, "the piece store failed", close=True)

    async def _linger(self) -> None:
        """Close gracefully: unread input would make the kernel reset the
        connection, and the client could lose the answer just sent."""
        with contextlib.suppress(OSError), anyio.move_on_after(_LINGER_SECONDS):
            self._sock.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < _LINGER_BYTES:
                await anyio.wait_readable(self._sock)
                data = self._sock.recv(_RECEIVE_SIZE)
                if not data:
                    return
                drained += len(data)

    def _ready_for_next(self) -> bool:
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def _send_piece(self, task_id: str, number: int, close: bool) -> None:
        """Write the piece, or a 404 saying what is missing."""
        with self._server.store.read_verified_piece(task_id, number) as found:
            if found is not None:
                self._send_found(*found, close)
                return

        message = self._server.describe_missing(task_id, number)
        self._send_simple(404, message, close, [])

    def _send_found(self, piece: Piece, view: memoryview, close: bool) -> None:
        """Write a piece while the store's read transaction is open."""
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(piece.length)),
            (OFFSET_HEADER, str(piece.offset)),
            (DIGEST_HEADER, piece.digest),
            *_closing(close),
        ]
        head = self._h11.send(h11.Response(status_code=200, headers=headers))
        # h11 only counts the bytes here; passthrough keeps it from copying them.
        self._h11.send_with_data_passthrough(h11.Data(data=cast(bytes, view)))
        self._h11.send(h11.EndOfMessage())

        self._server.throttle.pace(len(head) + len(view))
        _send_all(self._sock, [head, view], self._server.send_timeout)

    async def _respond(
        self,
        status: int,
        text: str,
        *,
        close: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        await anyio.to_thread.run_sync(
            self._send_simple, status, text, close, extra or [], limiter=self._threads
        )

    def _send_simple(
        self, status: int, text: str, close: bool, extra: list[tuple[str, str]]
    ) -> None:
        body = (text + "\n").encode("utf-8", "replace")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *extra,
            *_closing(close),
        ]
        reason = http.HTTPStatus(status).phrase.encode()
        head = self._h11.send(
            h11.Response(status_code=status, headers=headers, reason=reason)
        )
        if self._is_head_request:
            body = b""
        self._h11.send(h11.Data(data=body))
        self._h11.send(h11.EndOfMessage())
        _send_all(self._sock, [head, body], self._server.send_timeout)


def _closing(close: bool) -> list[tuple[str, str]]:
    return [("Connection", "close")] if close else []


def _send_all(
    sock: socket.socket, buffers: list[bytes | memoryview], timeout: float
) -> None:
    """Write every buffer to a non-blocking socket, from a worker thread.

    ``timeout`` bounds each stall, not the whole transfer: a slow reader is fine, a
    peer that stops reading is not.
    """
    pending = [memoryview(buffer).cast("B") for buffer in buffers if len(buffer)]
    deadline = time.monotonic() + timeout
    while pending:
        try:
            sent = sock.sendmsg(pending)
        except BlockingIOError:
            _wait_writable(sock, deadline)
            continue
        deadline = time.monotonic() + timeout
        _advance(pending, sent)


def _advance(pending: list[memoryview], sent: int) -> None:
    while sent and pending:
        first = pending[0]
        if sent < first.nbytes:
            pending[0] = first[sent:]
            return
        sent -= first.nbytes
        del pending[0]


def _wait_writable(sock: socket.socket, deadline: float) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client stopped reading")
        if poller.poll(min(remaining, _CANCEL_CHECK) * 1000):
            return
        anyio.from_thread.check_cancelled()


# Client


class HttpPieceClient(PieceClient):
    """Fetches pieces over HTTP/1.1 with pooled keep-alive connections per parent."""

    name: ClassVar[str] = "http"

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        max_piece_length: int = 64 * MIB,
        concurrency: int = 64,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_piece_length = max_piece_length
        self._threads = anyio.CapacityLimiter(concurrency)
        self._idle: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._closed = False

    async def fetch(
        self, address: str, task_id: str, number: int
    ) -> tuple[Piece, bytes | bytearray]:
        with fetch_span(self.name, address, task_id, number):
            call = _Call(self, address, task_id, number)
            try:
                return await anyio.to_thread.run_sync(
                    call.run, abandon_on_cancel=True, limiter=self._threads
                )
            except anyio.get_cancelled_exc_class():
                call.abort()
                raise

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for sockets in idle.values():
            for sock in sockets:
                sock.close()

    def _checkout(self, address: str) -> socket.socket | None:
        with self._lock:
            idle = self._idle.get(address)
            return idle.pop() if idle else None

    def _checkin(self, address: str, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if not self._closed and len(idle) < _IDLE_PER_PARENT:
                idle.append(sock)
                return
        sock.close()


class _Response:
    __slots__ = ("body", "headers", "keep", "status")

    def __init__(
        self, status: int, headers: dict[str, str], body: bytearray, keep: bool
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep = keep


class _Call:
    """One fetch, run in a worker thread; ``abort`` ends it from the event loop."""

    def __init__(
        self, client: HttpPieceClient, address: str, task_id: str, number: int
    ) -> None:
        self._client = client
        self._address = address
        self._task_id = task_id
        self._number = number
        # Made on the event loop, inside the fetch's span: its trace context goes
        # along.
        trace: dict[str, str] = {}
        inject_headers(trace)
        extra = "".join(f"{name}: {value}\r\n" for name, value in trace.items())
        self._request = (
            f"GET {piece_path(task_id, number)} HTTP/1.1\r\n"
            f"Host: {address}\r\nAccept-Encoding: identity\r\n{extra}\r\n"
        ).encode("ascii")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = False

    def run(self) -> tuple[Piece, bytes | bytearray]:
        response = self._exchange()
        if response.status == 404:
            raise PieceNotFound(
                f"{self._address} does not hold piece {self._number} "
                f"of task {self._task_id}",
                task_id=self._task_id,
                number=self._number,
            )
        if response.status == 503:
            message = response.body.decode("utf-8", "replace").strip()
            address = self._address
            raise ParentBusy(f"{address} is busy: {message}", address=address)
        if response.status != 200:
            raise self._error(f"answered {response.status}")
        return self._piece(response), response.body

    def abort(self) -> None:
        """Wake the worker thread: its socket reads fail at once."""
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _exchange(self) -> _Response:
        pooled = self._client._checkout(self._address)
        sock = pooled or self._connect()
        try:
            response = self._attempt(sock)
        except StaleConnection:
            self._discard(sock)
            if pooled is None:
                raise self._error("closed the connection without answering") from None
            # The parent had closed the pooled connection: one try on a new one.
            sock = self._connect()
            try:
                response = self._attempt(sock)
            except StaleConnection:
                self._discard(sock)
                raise self._error("closed the connection without answering") from None
            except BaseException:
                self._discard(sock)
                raise
        except BaseException:
            self._discard(sock)
            raise

        self._release(sock, response.keep)
        return response

    def _connect(self) -> socket.socket:
        host, port = _split_address(self._address)
        try:
            sock = socket.create_connection(
                (host, port), timeout=self._client.connect_timeout
            )
        except TimeoutError as exc:
            raise self._error("did not accept a connection in time") from exc
        except OSError as exc:
            raise self._error(f"refused a connection: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        sock.settimeout(self._client.read_timeout)
        return sock

    def _attempt(self, sock: socket.socket) -> _Response:
        with self._lock:
            if self._aborted:
                raise self._error("fetch cancelled")
            self._sock = sock
        try:
            return self._request_response(sock)
        except TimeoutError as exc:
            raise self._error("stopped sending data") from exc
        except OSError as exc:
            raise self._error(f"connection failed: {exc}") from exc

    def _request_response(self, sock: socket.socket) -> _Response:
        try:
            sock.sendall(self._request)
        except (BrokenPipeError, ConnectionResetError):
            raise StaleConnection from None
        buffer = bytearray(_MAX_HEAD)
        try:
            head, received = read_head(sock, buffer)
        except HeadError as exc:
            raise self._error(str(exc)) from None
        body = bytearray(self._body_length(head.status, head.headers))
        try:
            read_body(sock, memoryview(body), head, buffer, received)
        except BodyOverrun:
            raise self._error("sent more bytes than its Content-Length") from None
        except TruncatedBody as exc:
            raise self._error(str(exc)) from None
        return _Response(head.status, head.headers, body, head.keep_alive)

    def _body_length(self, status: int, headers: dict[str, str]) -> int:
        if "transfer-encoding" in headers:
            raise self._error("sent a body without Content-Length")
        length = headers.get("content-length")
        if length is None or not _is_digits(length):
            raise self._error(f"sent Content-Length {length!r}")
        limit = self._max_body(status)
        if len(length) > 20 or int(length) > limit:
            raise self._error(f"sent Content-Length {length}, over {limit}")
        return int(length)

    def _max_body(self, status: int) -> int:
        return self._client.max_piece_length if status == 200 else _MAX_ERROR_BODY

    def _piece(self, response: _Response) -> Piece:
        offset = response.headers.get(OFFSET_HEADER.lower(), "")
        digest = response.headers.get(DIGEST_HEADER.lower(), "")
        if not _is_digits(offset):
            raise self._error(f"sent {OFFSET_HEADER} {offset!r}")
        if not digest:
            raise self._error(f"sent no {DIGEST_HEADER}")
        return Piece(self._number, int(offset), len(response.body), digest)

    def _release(self, sock: socket.socket, keep: bool) -> None:
        with self._lock:
            self._sock = None
            aborted = self._aborted
        if keep and not aborted:
            self._client._checkin(self._address, sock)
        else:
            sock.close()

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = None
            sock.close()

    def _error(self, what: str) -> TransportError:
        return TransportError(f"parent {self._address} {what}", address=self._address)


def _split_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not _is_digits(port) or not 0 < int(port) < 65536:
        raise TransportError(
            f"parent address {address!r} is not host:port", address=address
        )
    return host, int(port)


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20
