"""The ``tcp`` transport's client: pooled, pipelined connections to parents."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import attrs
import zstandard

from ..._pieces import MAX_PIECE_LENGTH, Piece
from ..._telemetry import traceparent
from .._base import ParentBusy, PieceClient, PieceNotFound, TransportError, fetch_span
from ._wire import (
    CAP_CANCEL,
    CAP_TRACE,
    CAP_ZSTD,
    ERROR,
    FLAG_ZSTD,
    GET,
    HEADER,
    HELLO,
    HELLO_ACK,
    MAGIC,
    MAX_CONTROL_BODY,
    MAX_REQUEST_BODY,
    PIECE,
    SOCKET_BUFFER,
    VERSION,
    ErrorCode,
    FrameType,
    encode_frame,
    encode_get,
)

_T = TypeVar("_T")
# A CANCEL is a 16-byte frame: if it cannot be sent this quickly, the connection
# is in trouble anyway.
_CALL_OFF_TIMEOUT = 1.0

# The client


@attrs.frozen
class _PieceResponse:
    request_id: int
    piece: Piece
    data: bytes | bytearray


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
            capabilities=(CAP_ZSTD if compression else 0) | CAP_TRACE | CAP_CANCEL,
            max_piece_length=max_piece_length,
        )
        self._pools: dict[str, _Pool] = {}
        self._closed = False

    async def fetch(
        self, address: str, task_id: str, number: int
    ) -> tuple[Piece, bytes | bytearray]:
        if self._closed:
            raise TransportError("the tcp client is closed", address=address)
        if not 0 <= number < 2**32:
            raise ValueError(f"piece number {number} is out of range")
        if not 0 < len(task_id.encode()) <= MAX_REQUEST_BODY - GET.size:
            raise ValueError(f"task ID {task_id!r} is empty or too long")

        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = _Pool(address, self._options)
        with fetch_span(self.name, address, task_id, number):
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

    async def fetch(self, task_id: str, number: int) -> tuple[Piece, bytes | bytearray]:
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
        sock, capabilities, depth = await anyio.to_thread.run_sync(
            _connect, self.address, self.options
        )
        connection = _ClientConnection(
            sock,
            self.address,
            capabilities,
            min(depth, self.options.depth),
            self.options,
        )
        self._connections.append(connection)
        return connection


class _Reading:
    """One answer being read in a worker thread, for whichever task awaits it."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: _Response | TransportError | None = None

    def run(self, read: Callable[[], _Response]) -> None:
        try:
            self.outcome = read()
        except TransportError as exc:
            self.outcome = exc
        finally:
            anyio.from_thread.run_sync(self.done.set)


class _ClientConnection:
    """One connection to a parent. Requests are pipelined; whichever waiter holds
    the read lock reads the next answer and hands it to its owner."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        capabilities: int,
        depth: int,
        options: _ClientOptions,
    ) -> None:
        self.sock = sock
        self.address = address
        self.compress = bool(capabilities & CAP_ZSTD)
        # Parents from before trace contexts take GETs without one, and parents
        # from before CANCEL send every piece asked for.
        self.trace = bool(capabilities & CAP_TRACE)
        self.cancel = bool(capabilities & CAP_CANCEL)
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
        #: A read whose reader was cancelled mid-way: the next reader takes its
        #: answer rather than lose it.
        self._reading: _Reading | None = None

    async def fetch(self, task_id: str, number: int) -> tuple[Piece, bytes | bytearray]:
        request_id = self._new_id()
        self.load += 1
        self._waiting.add(request_id)
        try:
            trace = traceparent() if self.trace else ""
            await self._send(encode_get(request_id, task_id, number, trace))
            response = await self._receive(request_id)
        except BaseException:
            if request_id not in self._ready and self.broken is None:
                self._abandoned.add(request_id)
                # Even if the GET never left: a parent ignores a CANCEL for a
                # request it does not have.
                await self._call_off(request_id)
            raise
        finally:
            self.load -= 1
            self._waiting.discard(request_id)
            self._ready.pop(request_id, None)
            if self.broken is not None and self.load == 0:
                self.sock.close()
        return self._result(response, task_id, number)

    async def _call_off(self, request_id: int) -> None:
        """Tell the parent a request is no longer wanted (the requester was
        cancelled: another parent's copy came first, or it timed out), so that it
        does not spend its upload on the piece if it has not started sending it.
        The answer, PIECE or ERROR CANCELLED, is read and dropped as usual."""
        if not self.cancel:
            return
        with anyio.move_on_after(_CALL_OFF_TIMEOUT, shield=True):
            with contextlib.suppress(TransportError):
                await self._send(encode_frame(FrameType.CANCEL, request_id))

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
        """The next answer on the connection. Its reader can be cancelled at once
        (to call its request off, say) even while a worker thread is blocked
        reading: the thread goes on, and the next reader takes what it read."""
        reading = self._reading
        if reading is None:
            reading = self._reading = _Reading()
            await anyio.to_thread.run_sync(
                reading.run, self._read_blocking, abandon_on_cancel=True
            )
        await reading.done.wait()
        self._reading = None
        if isinstance(reading.outcome, TransportError):
            raise self._fail(reading.outcome)
        assert reading.outcome is not None
        return reading.outcome

    def _read_blocking(self) -> _Response:
        return read_response(self.sock, self.address, self.compress, self.options)

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
    ) -> tuple[Piece, bytes | bytearray]:
        if isinstance(response, _ErrorResponse):
            if response.code == ErrorCode.BUSY:
                raise ParentBusy(
                    f"parent {self.address} is busy: {response.message}",
                    address=self.address,
                )
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


def _connect(address: str, options: _ClientOptions) -> tuple[socket.socket, int, int]:
    """Connect and exchange HELLOs; the socket, the capabilities accepted, and the
    depth."""
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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
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
    return sock, capabilities, depth


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
    data = _decompress(payload, piece_length, address) if flags else payload
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
