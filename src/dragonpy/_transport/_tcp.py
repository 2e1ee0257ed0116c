"""The ``tcp`` piece transport: a small framed binary protocol over TCP.

The wire format is specified in ``docs/transport-tcp.md``. In short: every frame is a
16-byte header (type, flags, request ID, body length, big-endian) and a body. A
connection opens with HELLO / HELLO_ACK, which fixes the protocol version and whether
zstd may be used; then the client pipelines GET frames and the server answers each
with a PIECE or an ERROR frame carrying the same request ID, in request order.

The server reads requests on the event loop and sends each answer from a worker
thread, inside the store's read transaction, so an uncompressed piece goes from the
LMDB map to the socket without being copied into a Python object. The client keeps a
few connections per parent, pipelines requests over them and reads each body with
``recv_into`` from a worker thread, with the GIL released for the transfer.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import select
import socket
import struct
from collections.abc import Callable
from typing import Final, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import zstandard
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import StoreError
from .._pieces import MAX_PIECE_LENGTH, Piece
from .._storage import PieceStore
from ._base import PieceClient, PieceNotFound, PieceServer, TransportError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

VERSION: Final = 1
MAGIC: Final = b"DPYT"
#: Capability bits of HELLO and HELLO_ACK.
CAP_ZSTD: Final = 0x1
#: Flag bits of a PIECE frame.
FLAG_ZSTD: Final = 0x1
#: The largest body of a frame a client may send (HELLO, GET).
MAX_REQUEST_BODY: Final = 4096
#: The largest body of an ERROR or HELLO_ACK frame a client accepts.
MAX_CONTROL_BODY: Final = 4096

HEADER: Final = struct.Struct(">BBHIQ")  # type, flags, reserved, request ID, length
HELLO: Final = struct.Struct(">4sHI")  # magic, version, capabilities
HELLO_ACK: Final = struct.Struct(">4sHIH")  # magic, version, capabilities, depth
GET: Final = struct.Struct(">II")  # piece number, task ID length
PIECE: Final = struct.Struct(">IQQB")  # number, offset, length, digest length
ERROR: Final = struct.Struct(">HH")  # code, message length

# Pieces smaller than this are never worth a compression attempt.
_MIN_COMPRESS: Final = 512
# How long a closing connection waits for the peer's FIN: closing with unread bytes
# makes the kernel send RST, which can destroy an error frame not yet read.
_LINGER: Final = 1.0
_SEND_THREADS: Final = 32
_SOCKET_BUFFER: Final = 4 * 1024 * 1024


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    GET = 3
    PIECE = 4
    ERROR = 5


class ErrorCode(enum.IntEnum):
    NOT_FOUND = 1
    BAD_REQUEST = 2
    UNKNOWN_FRAME = 3
    FRAME_TOO_LARGE = 4
    PROTOCOL = 5
    UNSUPPORTED_VERSION = 6
    BUSY = 7
    INTERNAL = 8


def encode_frame(
    kind: int, request_id: int, body: bytes = b"", *, flags: int = 0
) -> bytes:
    return HEADER.pack(kind, flags, 0, request_id, len(body)) + body


def encode_error(request_id: int, code: ErrorCode, message: str) -> bytes:
    text = message.encode()[:1024]
    body = ERROR.pack(code, len(text)) + text
    return encode_frame(FrameType.ERROR, request_id, body)


def encode_get(request_id: int, task_id: str, number: int) -> bytes:
    encoded = task_id.encode()
    body = GET.pack(number, len(encoded)) + encoded
    return encode_frame(FrameType.GET, request_id, body)


def _send_all(sock: socket.socket, data: bytes | memoryview, timeout: float) -> None:
    """``sendall`` for a non-blocking socket, from a worker thread, without copies."""
    view = memoryview(data)
    poller: select.poll | None = None
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            if not poller.poll(timeout * 1000):
                raise TimeoutError(f"peer read nothing for {timeout:g} s") from None
            continue
        view = view[sent:]


# The server


@attrs.frozen
class TcpServerStatistics:
    connections_accepted: int
    connections_open: int
    connections_refused: int
    pieces_sent: int
    pieces_compressed: int
    bytes_sent: int


@attrs.frozen
class _Get:
    request_id: int
    task_id: str
    number: int


@attrs.frozen
class _Raw:
    frame: bytes


_Reply = _Get | _Raw


class _Fatal(Exception):
    """A request the connection cannot recover from: answer, then close."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class _BadRequest(Exception):
    """A malformed request inside a well-formed frame: answer it and go on."""


class _Closed(Exception):
    """The peer went away, or fell silent for too long."""


class TcpPieceServer(PieceServer):
    """Serves a store's pieces over the ``tcp`` protocol."""

    name = "tcp"

    def __init__(
        self,
        store: PieceStore,
        *,
        max_connections: int = 256,
        max_in_flight: int = 16,
        idle_timeout: float = 60.0,
        compression: bool = True,
        compression_level: int = 3,
    ) -> None:
        super().__init__(store)
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self.capabilities = CAP_ZSTD if compression else 0
        self.compression_level = compression_level
        self._send_threads = anyio.CapacityLimiter(_SEND_THREADS)
        self._accepted = self._open = self._refused = 0
        self._pieces = self._compressed = self._bytes = 0

    def statistics(self) -> TcpServerStatistics:
        return TcpServerStatistics(
            connections_accepted=self._accepted,
            connections_open=self._open,
            connections_refused=self._refused,
            pieces_sent=self._pieces,
            pieces_compressed=self._compressed,
            bytes_sent=self._bytes,
        )

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = await _listen(host, port)
        try:
            async with anyio.create_task_group() as task_group:
                task_status.started(listener.getsockname()[1])
                while True:
                    sock, peer = await _accept(listener)
                    self._accepted += 1
                    if self._open >= self.max_connections:
                        self._refused += 1
                        task_group.start_soon(_refuse, sock, peer)
                    else:
                        self._open += 1
                        task_group.start_soon(self._serve_connection, sock, peer)
        finally:
            listener.close()

    async def _serve_connection(self, sock: socket.socket, peer: str) -> None:
        try:
            await _ServerConnection(self, sock, peer).run()
        except Exception:
            # A bug here must not take the listener down with it.
            logger.exception("tcp: connection from %s failed", peer)
        finally:
            self._open -= 1
            await _close_gracefully(sock)

    def _record(self, sent: int, compressed: bool | None) -> None:
        self._bytes += sent
        if compressed is not None:
            self._pieces += 1
            self._compressed += compressed


class _ServerConnection:
    """One client connection: a reader task feeds replies to a writer task."""

    def __init__(self, server: TcpPieceServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.compress = False
        self.in_flight = 0
        self.finished = False

    async def run(self) -> None:
        send, receive = anyio.create_memory_object_stream[_Reply](
            self.server.max_in_flight
        )
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._shutdown_on_cancel)
            task_group.start_soon(self._write_replies, receive, task_group.cancel_scope)
            await self._read_requests(send)

    async def _shutdown_on_cancel(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            # Wakes a writer thread blocked on a slow peer, so cancelling ``serve``
            # ends every connection at once; shutdown keeps the descriptor valid.
            if not self.finished:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    # Reading

    async def _read_requests(self, replies: MemoryObjectSendStream[_Reply]) -> None:
        async with replies:
            try:
                await self._hello(replies)
                while await self._read_request(replies):
                    pass
            except _Closed as exc:
                logger.debug("tcp: closing connection from %s: %s", self.peer, exc)
            except _Fatal as exc:
                logger.debug("tcp: protocol error from %s: %s", self.peer, exc)
                error = encode_error(exc.request_id, exc.code, str(exc))
                with contextlib.suppress(anyio.BrokenResourceError):
                    await replies.send(_Raw(error))
            except anyio.BrokenResourceError:
                # The writer stopped: the connection is broken already.
                pass

    async def _hello(self, replies: MemoryObjectSendStream[_Reply]) -> None:
        try:
            kind, request_id, body = await self._read_frame()
        except EOFError:
            raise _Closed("closed before HELLO") from None
        if kind != FrameType.HELLO or len(body) < HELLO.size:
            raise _Fatal(ErrorCode.PROTOCOL, "the first frame must be HELLO")

        magic, version, capabilities = HELLO.unpack_from(body)
        if magic != MAGIC:
            raise _Fatal(ErrorCode.PROTOCOL, "not a dragonpy tcp transport peer")
        if version != VERSION:
            raise _Fatal(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported; this peer speaks "
                f"version {VERSION}",
            )

        accepted = capabilities & self.server.capabilities
        self.compress = bool(accepted & CAP_ZSTD)
        ack = HELLO_ACK.pack(MAGIC, VERSION, accepted, self.server.max_in_flight)
        await replies.send(_Raw(encode_frame(FrameType.HELLO_ACK, request_id, ack)))

    async def _read_request(self, replies: MemoryObjectSendStream[_Reply]) -> bool:
        """Read and queue one request; False once the peer has finished sending."""
        try:
            kind, request_id, body = await self._read_frame()
        except EOFError:
            return False

        if kind == FrameType.GET:
            try:
                task_id, number = _parse_get(body)
            except _BadRequest as exc:
                logger.debug("tcp: bad request from %s: %s", self.peer, exc)
                error = encode_error(request_id, ErrorCode.BAD_REQUEST, str(exc))
                await replies.send(_Raw(error))
                return True
            self.in_flight += 1
            await replies.send(_Get(request_id, task_id, number))
        elif kind == FrameType.HELLO:
            raise _Fatal(ErrorCode.PROTOCOL, "HELLO sent twice", request_id)
        else:
            logger.debug("tcp: unknown frame type %d from %s", kind, self.peer)
            message = f"unknown frame type {kind}"
            error = encode_error(request_id, ErrorCode.UNKNOWN_FRAME, message)
            await replies.send(_Raw(error))
        return True

    async def _read_frame(self) -> tuple[int, int, bytes]:
        """The next frame's type, request ID and body; EOFError between frames."""
        header = await self._receive(HEADER.size, between_frames=True)
        kind, _, _, request_id, length = HEADER.unpack(header)
        if length > MAX_REQUEST_BODY:
            raise _Fatal(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame body of {length} bytes exceeds {MAX_REQUEST_BODY}",
                request_id,
            )
        body = await self._receive(length, between_frames=False)
        return kind, request_id, body

    async def _receive(self, size: int, *, between_frames: bool) -> bytes:
        buffer = bytearray(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            try:
                count = self.sock.recv_into(view[filled:])
            except (BlockingIOError, InterruptedError):
                await self._wait_readable(idle=between_frames and filled == 0)
                continue
            except OSError as exc:
                raise _Closed(f"receive failed: {exc}") from exc

            if count == 0:
                if between_frames and filled == 0:
                    raise EOFError
                raise _Closed(f"peer closed the connection mid-frame ({filled} bytes)")
            filled += count
        return bytes(buffer)

    async def _wait_readable(self, *, idle: bool) -> None:
        while True:
            with anyio.move_on_after(self.server.idle_timeout):
                await anyio.wait_readable(self.sock)
                return
            # Silence while answers are still being sent is a client waiting for
            # them, not an idle connection.
            if not (idle and self.in_flight):
                raise _Closed(f"idle for {self.server.idle_timeout:g} s")

    # Writing

    async def _write_replies(
        self,
        replies: MemoryObjectReceiveStream[_Reply],
        scope: anyio.CancelScope,
    ) -> None:
        try:
            async with replies:
                async for reply in replies:
                    if not await self._send(reply):
                        break
        finally:
            self.finished = True
            scope.cancel()

    async def _send(self, reply: _Reply) -> bool:
        """Send one reply from a worker thread; False if the connection broke."""
        try:
            sent, compressed = await anyio.to_thread.run_sync(
                self._send_blocking, reply, limiter=self.server._send_threads
            )
        except OSError as exc:
            logger.debug("tcp: cannot send to %s: %s", self.peer, exc)
            return False
        finally:
            if isinstance(reply, _Get):
                self.in_flight -= 1

        self.server._record(sent, compressed)
        return True

    def _send_blocking(self, reply: _Reply) -> tuple[int, bool | None]:
        """Send a reply; the bytes sent, and whether a piece went compressed."""
        if isinstance(reply, _Raw):
            _send_all(self.sock, reply.frame, self.server.idle_timeout)
            return len(reply.frame), None

        started = False
        try:
            with self.server.store.read_verified_piece(
                reply.task_id, reply.number
            ) as found:
                if found is None:
                    message = f"no piece {reply.number} of task {reply.task_id}"
                    frame = encode_error(reply.request_id, ErrorCode.NOT_FOUND, message)
                    _send_all(self.sock, frame, self.server.idle_timeout)
                    return len(frame), None

                piece, view = found
                head, payload, compressed = self._encode_piece(reply, piece, view)
                started = True
                _send_all(self.sock, head, self.server.idle_timeout)
                _send_all(self.sock, payload, self.server.idle_timeout)
                return len(head) + len(payload), compressed
        except StoreError as exc:
            if started:
                raise ConnectionAbortedError(errno.ECONNABORTED, str(exc)) from exc
            frame = encode_error(reply.request_id, ErrorCode.INTERNAL, str(exc))
            _send_all(self.sock, frame, self.server.idle_timeout)
            return len(frame), None

    def _encode_piece(
        self, reply: _Get, piece: Piece, view: memoryview
    ) -> tuple[bytes, bytes | memoryview, bool]:
        payload: bytes | memoryview = view
        flags = 0
        if self.compress and len(view) >= _MIN_COMPRESS:
            compressor = zstandard.ZstdCompressor(level=self.server.compression_level)
            packed = compressor.compress(view)
            if len(packed) < len(view):
                payload, flags = packed, FLAG_ZSTD

        digest = piece.digest.encode("ascii")
        fields = PIECE.pack(piece.number, piece.offset, piece.length, len(digest))
        length = len(fields) + len(digest) + len(payload)
        header = HEADER.pack(FrameType.PIECE, flags, 0, reply.request_id, length)
        return header + fields + digest, payload, bool(flags)


def _parse_get(body: bytes) -> tuple[str, int]:
    if len(body) < GET.size:
        raise _BadRequest(f"GET body of {len(body)} bytes is too short")
    number, id_length = GET.unpack_from(body)
    if id_length == 0 or id_length != len(body) - GET.size:
        raise _BadRequest(
            f"task ID length {id_length} does not match a {len(body)}-byte GET body"
        )
    try:
        task_id = body[GET.size :].decode()
    except UnicodeDecodeError:
        raise _BadRequest("task ID is not UTF-8") from None
    return task_id, number


async def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = (
        await anyio.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


async def _accept(listener: socket.socket) -> tuple[socket.socket, str]:
    while True:
        await anyio.wait_readable(listener)
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue
        except OSError as exc:
            # Out of descriptors, most likely: wait rather than spin.
            logger.warning("tcp: cannot accept connections: %s", exc)
            await anyio.sleep(0.1)
            continue

        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, f"{address[0]}:{address[1]}"


async def _refuse(sock: socket.socket, peer: str) -> None:
    logger.debug("tcp: refusing %s: too many connections", peer)
    frame = encode_error(0, ErrorCode.BUSY, "too many connections; try another parent")
    with contextlib.suppress(OSError):
        sock.send(frame)
    await _close_gracefully(sock)


async def _close_gracefully(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
        with anyio.move_on_after(_LINGER):
            while True:
                await anyio.wait_readable(sock)
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    if not sock.recv(65536):
                        break
    except OSError:
        pass
    finally:
        sock.close()


# The client


@attrs.frozen
class _PieceResponse:
    request_id: int
    piece: Piece
    data: bytes


@attrs.frozen
class _ErrorResponse:
    request_id: int
    code: int
    message: str


_Response = _PieceResponse | _ErrorResponse


class _Stale(TransportError):
    """The connection closed before any byte of an answer: safe to try again."""


class TcpPieceClient(PieceClient):
    """Fetches pieces over the ``tcp`` protocol, pipelining over pooled connections.

    At most ``connections_per_parent`` connections are kept per parent, each with at
    most ``pipeline_depth`` requests in flight (or fewer, if the parent says so).
    """

    name = "tcp"

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        connections_per_parent: int = 4,
        pipeline_depth: int = 8,
        compression: bool = True,
        max_piece_length: int = MAX_PIECE_LENGTH,
    ) -> None:
        self._options = _ClientOptions(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            connections=connections_per_parent,
            depth=pipeline_depth,
            capabilities=CAP_ZSTD if compression else 0,
            max_piece_length=max_piece_length,
        )
        self._pools: dict[str, _Pool] = {}
        self._closed = False

    async def fetch(
        self, address: str, task_id: str, number: int
    ) -> tuple[Piece, bytes]:
        if self._closed:
            raise TransportError("the tcp client is closed", address=address)
        if not 0 <= number < 2**32:
            raise ValueError(f"piece number {number} is out of range")
        if not 0 < len(task_id.encode()) <= MAX_REQUEST_BODY - GET.size:
            raise ValueError(f"task ID {task_id!r} is empty or too long")

        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = _Pool(address, self._options)
        return await pool.fetch(task_id, number)

    async def aclose(self) -> None:
        self._closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


@attrs.frozen
class _ClientOptions:
    connect_timeout: float
    read_timeout: float
    connections: int
    depth: int
    capabilities: int
    max_piece_length: int


class _Pool:
    """The connections to one parent."""

    def __init__(self, address: str, options: _ClientOptions) -> None:
        self.address = address
        self.options = options
        self._connections: list[_ClientConnection] = []
        self._open_lock = anyio.Lock()
        self._slots = anyio.Semaphore(options.connections * options.depth)

    async def fetch(self, task_id: str, number: int) -> tuple[Piece, bytes]:
        async with self._slots:
            connection, reused = await self._checkout()
            try:
                return await connection.fetch(task_id, number)
            except _Stale:
                if not reused:
                    raise
            # The parent had closed a pooled connection (idle, restarted): one more
            # try on a new one.
            connection = await self._open()
            return await connection.fetch(task_id, number)

    def close(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    async def _checkout(self) -> tuple[_ClientConnection, bool]:
        best = self._best()
        if best is not None and (best.load == 0 or not self._room()):
            return best, True

        # One connection opens at a time, so a burst of fetches cannot open more
        # than the pool holds.
        async with self._open_lock:
            best = self._best()
            if best is not None and (best.load == 0 or not self._room()):
                return best, True
            return await self._open(), False

    def _best(self) -> _ClientConnection | None:
        """The least loaded connection with room for another request."""
        self._connections = [c for c in self._connections if c.broken is None]
        usable = [c for c in self._connections if c.load < c.depth]
        return min(usable, key=lambda c: c.load, default=None)

    def _room(self) -> bool:
        return len(self._connections) < self.options.connections

    async def _open(self) -> _ClientConnection:
        sock, compress, depth = await anyio.to_thread.run_sync(
            _connect, self.address, self.options
        )
        connection = _ClientConnection(
            sock, self.address, compress, min(depth, self.options.depth), self.options
        )
        self._connections.append(connection)
        return connection


class _ClientConnection:
    """One connection to a parent. Requests are pipelined; whichever waiter holds
    the read lock reads the next answer and hands it to its owner."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        compress: bool,
        depth: int,
        options: _ClientOptions,
    ) -> None:
        self.sock = sock
        self.address = address
        self.compress = compress
        self.depth = depth
        self.options = options
        self.load = 0
        self.broken: TransportError | None = None
        self._next_id = 1
        self._send_lock = anyio.Lock()
        self._read_lock = anyio.Lock()
        self._waiting: set[int] = set()
        self._abandoned: set[int] = set()
        self._ready: dict[int, _Response] = {}

    async def fetch(self, task_id: str, number: int) -> tuple[Piece, bytes]:
        request_id = self._new_id()
        self.load += 1
        self._waiting.add(request_id)
        try:
            await self._send(encode_get(request_id, task_id, number))
            response = await self._receive(request_id)
        except BaseException:
            if request_id not in self._ready and self.broken is None:
                self._abandoned.add(request_id)
            raise
        finally:
            self.load -= 1
            self._waiting.discard(request_id)
            self._ready.pop(request_id, None)
            if self.broken is not None and self.load == 0:
                self.sock.close()
        return self._result(response, task_id, number)

    def close(self) -> None:
        self._fail(TransportError("the tcp client is closed", address=self.address))
        if self.load == 0:
            self.sock.close()

    def _new_id(self) -> int:
        request_id = self._next_id
        self._next_id = self._next_id % (2**32 - 1) + 1
        return request_id

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            self._check()
            try:
                await anyio.to_thread.run_sync(self.sock.sendall, frame)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise self._fail(
                    _Stale(f"parent {self.address} closed the connection: {exc}")
                ) from exc
            except OSError as exc:
                raise self._fail(
                    TransportError(
                        f"cannot send to parent {self.address}: {exc}",
                        address=self.address,
                    )
                ) from exc

    async def _receive(self, request_id: int) -> _Response:
        while True:
            async with self._read_lock:
                response = self._ready.pop(request_id, None)
                if response is not None:
                    return response
                self._check()
                response = await self._read()
            if response.request_id == request_id:
                return response
            self._dispatch(response)

    async def _read(self) -> _Response:
        try:
            return await anyio.to_thread.run_sync(
                read_response, self.sock, self.address, self.compress, self.options
            )
        except TransportError as exc:
            raise self._fail(exc) from exc

    def _dispatch(self, response: _Response) -> None:
        """Hand an answer to the request it belongs to."""
        request_id = response.request_id
        if request_id in self._waiting:
            self._ready[request_id] = response
        elif request_id in self._abandoned:
            self._abandoned.discard(request_id)
        elif isinstance(response, _ErrorResponse) and request_id == 0:
            raise self._fail(_error(response, self.address))
        else:
            message = f"parent {self.address} answered unknown request {request_id}"
            raise self._fail(TransportError(message, address=self.address))

    def _result(
        self, response: _Response, task_id: str, number: int
    ) -> tuple[Piece, bytes]:
        if isinstance(response, _ErrorResponse):
            if response.code == ErrorCode.NOT_FOUND:
                raise PieceNotFound(
                    f"parent {self.address} does not hold piece {number} of task "
                    f"{task_id}",
                    task_id=task_id,
                    number=number,
                )
            raise _error(response, self.address)

        if response.piece.number != number:
            message = (
                f"parent {self.address} sent piece {response.piece.number} "
                f"when asked for piece {number}"
            )
            raise self._fail(TransportError(message, address=self.address))
        return response.piece, response.data

    def _check(self) -> None:
        broken = self.broken
        if broken is not None:
            kind = _Stale if isinstance(broken, _Stale) else TransportError
            raise kind(str(broken), address=self.address)

    def _fail(self, exc: TransportError) -> TransportError:
        """Mark the connection unusable; returns ``exc`` for raising."""
        if self.broken is None:
            self.broken = exc
            # Wakes a thread blocked on this socket; closing comes once it is idle.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        return exc


def _error(response: _ErrorResponse, address: str) -> TransportError:
    try:
        code = ErrorCode(response.code).name
    except ValueError:
        code = f"error {response.code}"
    return TransportError(
        f"parent {address} answered {code}: {response.message}", address=address
    )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TransportError(f"{address!r} is not host:port", address=address)
    return host.strip("[]"), int(port)


def _connect(address: str, options: _ClientOptions) -> tuple[socket.socket, bool, int]:
    """Connect and exchange HELLOs; the socket, whether zstd is on, and the depth."""
    host, port = _split_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=options.connect_timeout)
    except TimeoutError as exc:
        raise TransportError(
            f"connecting to parent {address} timed out after "
            f"{options.connect_timeout:g} s",
            address=address,
        ) from exc
    except OSError as exc:
        raise TransportError(
            f"cannot connect to parent {address}: {exc.strerror or exc}",
            address=address,
        ) from exc

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        hello = HELLO.pack(MAGIC, VERSION, options.capabilities)
        _guard(address, lambda: sock.sendall(encode_frame(FrameType.HELLO, 0, hello)))
        capabilities, depth = _guard(address, lambda: _read_hello_ack(sock, address))
        if capabilities & ~options.capabilities:
            raise TransportError(
                f"parent {address} accepted capabilities it was not offered",
                address=address,
            )
        sock.settimeout(options.read_timeout)
    except BaseException:
        sock.close()
        raise
    return sock, bool(capabilities & CAP_ZSTD), depth


def _read_hello_ack(sock: socket.socket, address: str) -> tuple[int, int]:
    kind, _, request_id, length = _read_header(sock, address)
    if length > MAX_CONTROL_BODY:
        raise _malformed(address, f"a {length}-byte answer to HELLO")
    body = _recv_exactly(sock, length, address)
    if kind == FrameType.ERROR:
        raise _error(_parse_error(request_id, body, address), address)
    if kind != FrameType.HELLO_ACK or length < HELLO_ACK.size:
        raise _malformed(address, "no HELLO_ACK")

    magic, version, capabilities, depth = HELLO_ACK.unpack_from(body)
    if magic != MAGIC or version != VERSION or depth == 0:
        raise _malformed(address, f"HELLO_ACK for version {version}, depth {depth}")
    return capabilities, depth


def read_response(
    sock: socket.socket, address: str, compress: bool, options: _ClientOptions
) -> _Response:
    """Read one answer from a parent (blocking); TransportError if it is bad."""
    return _guard(address, lambda: _read_response(sock, address, compress, options))


def _read_response(
    sock: socket.socket, address: str, compress: bool, options: _ClientOptions
) -> _Response:
    kind, flags, request_id, length = _read_header(sock, address)
    if kind == FrameType.ERROR:
        if length > MAX_CONTROL_BODY:
            raise _malformed(address, f"a {length}-byte ERROR frame")
        return _parse_error(request_id, _recv_exactly(sock, length, address), address)
    if kind != FrameType.PIECE:
        raise _malformed(address, f"a frame of unexpected type {kind}")

    if flags & ~FLAG_ZSTD or (flags & FLAG_ZSTD and not compress):
        raise _malformed(address, f"a PIECE frame with flags {flags:#x}")
    if length < PIECE.size:
        raise _malformed(address, f"a {length}-byte PIECE frame")
    number, offset, piece_length, digest_length = PIECE.unpack(
        _recv_exactly(sock, PIECE.size, address)
    )
    payload_length = length - PIECE.size - digest_length
    _check_lengths(address, flags, piece_length, payload_length, options)

    try:
        digest = _recv_exactly(sock, digest_length, address).decode("ascii")
    except UnicodeDecodeError:
        raise _malformed(address, "a digest that is not ASCII") from None
    payload = bytearray(payload_length)
    _recv_into(sock, memoryview(payload), address)
    data = _decompress(payload, piece_length, address) if flags else bytes(payload)
    return _PieceResponse(request_id, Piece(number, offset, piece_length, digest), data)


def _check_lengths(
    address: str,
    flags: int,
    piece_length: int,
    payload_length: int,
    options: _ClientOptions,
) -> None:
    """Refuse inconsistent or oversized lengths before allocating anything."""
    if piece_length > options.max_piece_length:
        raise _malformed(
            address,
            f"a {piece_length}-byte piece (at most {options.max_piece_length} "
            "are accepted)",
        )
    if flags & FLAG_ZSTD:
        # Compressed data is sent only when it is smaller than the piece.
        consistent = 0 < payload_length < piece_length
    else:
        consistent = payload_length == piece_length
    if not consistent:
        raise _malformed(
            address,
            f"{payload_length} payload bytes for a {piece_length}-byte piece",
        )


def _decompress(payload: bytearray, length: int, address: str) -> bytes:
    try:
        declared = zstandard.get_frame_parameters(payload).content_size
        if declared != length:
            raise _malformed(
                address, f"zstd data of {declared} bytes for a {length}-byte piece"
            )
        data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=length)
    except zstandard.ZstdError as exc:
        raise _malformed(address, f"bad zstd data ({exc})") from exc
    if len(data) != length:
        raise _malformed(
            address, f"zstd data of {len(data)} bytes for a {length}-byte piece"
        )
    return data


def _parse_error(request_id: int, body: bytes, address: str) -> _ErrorResponse:
    if len(body) < ERROR.size:
        raise _malformed(address, "a truncated ERROR frame")
    code, message_length = ERROR.unpack_from(body)
    message = body[ERROR.size : ERROR.size + message_length]
    return _ErrorResponse(request_id, code, message.decode(errors="replace"))


def _read_header(sock: socket.socket, address: str) -> tuple[int, int, int, int]:
    buffer = bytearray(HEADER.size)
    try:
        first = sock.recv_into(buffer)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Stale(f"parent {address} reset the connection", address=address) from exc
    if first == 0:
        raise _Stale(f"parent {address} closed the connection", address=address)

    _recv_into(sock, memoryview(buffer)[first:], address)
    kind, flags, _, request_id, length = HEADER.unpack(buffer)
    return kind, flags, request_id, length


def _recv_exactly(sock: socket.socket, size: int, address: str) -> bytes:
    buffer = bytearray(size)
    _recv_into(sock, memoryview(buffer), address)
    return bytes(buffer)


def _recv_into(sock: socket.socket, view: memoryview, address: str) -> None:
    filled = 0
    while filled < len(view):
        count = sock.recv_into(view[filled:])
        if count == 0:
            raise TransportError(
                f"parent {address} closed the connection mid-frame", address=address
            )
        filled += count


def _guard(address: str, call: Callable[[], _T]) -> _T:
    """Run blocking socket code, turning OS errors into ``TransportError``."""
    try:
        return call()
    except TimeoutError as exc:
        raise TransportError(
            f"parent {address} sent nothing for too long", address=address
        ) from exc
    except OSError as exc:
        raise TransportError(
            f"connection to parent {address} failed: {exc}", address=address
        ) from exc


def _malformed(address: str, what: str) -> TransportError:
    return TransportError(
        f"parent {address} broke the tcp protocol: it sent {what}", address=address
    )
