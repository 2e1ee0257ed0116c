"""The ``tcp`` transport's server: answers GET frames from the piece store."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from typing import Final

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import zstandard
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..._errors import StoreError
from ..._pieces import Piece
from ..._storage import PieceStore
from ..._telemetry import context_from_traceparent
from .._base import PieceServer
from .._limits import BUSY_MESSAGE, DEFAULT_UPLOAD_LIMITS, UploadBusy, UploadLimits
from .._sockets import accept, listen, send_all
from ._wire import (
    CAP_CANCEL,
    CAP_TRACE,
    CAP_ZSTD,
    COMPRESSION_SAMPLE,
    FLAG_TRACE,
    FLAG_ZSTD,
    GET,
    HEADER,
    HELLO,
    HELLO_ACK,
    LINGER,
    MAGIC,
    MAX_REQUEST_BODY,
    MIN_COMPRESS,
    PIECE,
    SEND_THREADS,
    VERSION,
    ErrorCode,
    FrameType,
    encode_error,
    encode_frame,
)

logger = logging.getLogger("dragonpy.transport.tcp")

# The server


@attrs.frozen
class TcpServerStatistics:
    connections_accepted: int
    connections_open: int
    connections_refused: int
    #: GET frames read, and CANCEL frames for one of them not answered yet.
    requests_received: int
    requests_called_off: int
    pieces_sent: int
    pieces_compressed: int
    bytes_sent: int


@attrs.frozen
class _Get:
    request_id: int
    task_id: str
    number: int
    #: The requester's W3C trace context, or "".
    traceparent: str = ""


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
        limits: UploadLimits = DEFAULT_UPLOAD_LIMITS,
    ) -> None:
        super().__init__(store, limits=limits)
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self.capabilities = (CAP_ZSTD if compression else 0) | CAP_TRACE | CAP_CANCEL
        self.compression_level = compression_level
        self._send_threads = anyio.CapacityLimiter(SEND_THREADS)
        self._accepted = self._open = self._refused = 0
        self._requests = self._called_off = 0
        self._pieces = self._compressed = self._bytes = 0

    def statistics(self) -> TcpServerStatistics:
        return TcpServerStatistics(
            connections_accepted=self._accepted,
            connections_open=self._open,
            connections_refused=self._refused,
            requests_received=self._requests,
            requests_called_off=self._called_off,
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
        listener = await listen(host, port)
        try:
            async with anyio.create_task_group() as task_group:
                task_status.started(listener.getsockname()[1])
                while True:
                    sock, peer = await accept(listener)
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
        #: Requests read and not answered yet, those of them called off, and how
        #: to end the wait of one waiting for an upload slot.
        self.pending: set[int] = set()
        self.withdrawn: set[int] = set()
        self._turns: dict[int, anyio.CancelScope] = {}
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
            kind, _, request_id, body = await self._read_frame()
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
            kind, flags, request_id, body = await self._read_frame()
        except EOFError:
            return False

        if kind == FrameType.GET:
            try:
                task_id, number, traceparent = _parse_get(body, flags)
            except _BadRequest as exc:
                logger.debug("tcp: bad request from %s: %s", self.peer, exc)
                error = encode_error(request_id, ErrorCode.BAD_REQUEST, str(exc))
                await replies.send(_Raw(error))
                return True
            self.in_flight += 1
            self.server._requests += 1
            self.pending.add(request_id)
            await replies.send(_Get(request_id, task_id, number, traceparent))
        elif kind == FrameType.CANCEL:
            # A request already answered, or never made, is nothing to call off.
            if request_id in self.pending and request_id not in self.withdrawn:
                self.server._called_off += 1
                self.withdrawn.add(request_id)
                turn = self._turns.get(request_id)
                if turn is not None:
                    turn.cancel()
        elif kind == FrameType.HELLO:
            raise _Fatal(ErrorCode.PROTOCOL, "HELLO sent twice", request_id)
        else:
            logger.debug("tcp: unknown frame type %d from %s", kind, self.peer)
            message = f"unknown frame type {kind}"
            error = encode_error(request_id, ErrorCode.UNKNOWN_FRAME, message)
            await replies.send(_Raw(error))
        return True

    async def _read_frame(self) -> tuple[int, int, int, bytes]:
        """The next frame's type, flags, request ID and body; EOFError between
        frames."""
        header = await self._receive(HEADER.size, between_frames=True)
        kind, flags, _, request_id, length = HEADER.unpack(header)
        if length > MAX_REQUEST_BODY:
            raise _Fatal(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame body of {length} bytes exceeds {MAX_REQUEST_BODY}",
                request_id,
            )
        body = await self._receive(length, between_frames=False)
        return kind, flags, request_id, body

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
        """Send one reply; False if the connection broke."""
        if isinstance(reply, _Get):
            return await self._answer(reply)
        return await self._send_now(reply)

    async def _answer(self, request: _Get) -> bool:
        """Send the piece a GET asks for, within the upload limits, or the error
        that answers it instead: busy, or called off before its turn came."""
        request_id = request.request_id
        parent = context_from_traceparent(request.traceparent)
        try:
            if request_id not in self.withdrawn:
                # A CANCEL while it waits for a slot ends the wait (``turn``).
                with anyio.CancelScope() as turn:
                    self._turns[request_id] = turn
                    async with self.server.upload(
                        request.task_id, request.number, parent
                    ):
                        del self._turns[request_id]
                        return await self._send_now(request)
            self.server.throttle.count_withdrawal()
            return await self._send_now(_Raw(_cancelled(request_id)))
        except UploadBusy:
            return await self._send_now(_Raw(_busy(request_id)))
        finally:
            self._turns.pop(request_id, None)
            self.in_flight -= 1
            self.pending.discard(request_id)
            self.withdrawn.discard(request_id)

    async def _send_now(self, reply: _Reply) -> bool:
        """Send one reply from a worker thread; False if the connection broke."""
        try:
            sent, compressed = await anyio.to_thread.run_sync(
                self._send_blocking, reply, limiter=self.server._send_threads
            )
        except OSError as exc:
            logger.debug("tcp: cannot send to %s: %s", self.peer, exc)
            return False
        self.server._record(sent, compressed)
        return True

    def _send_blocking(self, reply: _Reply) -> tuple[int, bool | None]:
        """Send a reply; the bytes sent, and whether a piece went compressed."""
        if isinstance(reply, _Raw):
            send_all(self.sock, reply.frame, self.server.idle_timeout)
            return len(reply.frame), None

        if reply.request_id in self.withdrawn:
            # Called off between getting its slot and this thread starting.
            self.server.throttle.count_withdrawal()
            return self._send_error(reply, ErrorCode.CANCELLED, _CANCELLED), None

        started = False
        try:
            with self.server.store.read_verified_piece(
                reply.task_id, reply.number
            ) as found:
                if found is not None:
                    head, payload, compressed = self._encode_piece(reply, *found)
                    self.server.throttle.pace(len(head) + len(payload))
                    started = True
                    send_all(self.sock, head, self.server.idle_timeout)
                    send_all(self.sock, payload, self.server.idle_timeout)
                    return len(head) + len(payload), compressed

            message = self.server.describe_missing(reply.task_id, reply.number)
            return self._send_error(reply, ErrorCode.NOT_FOUND, message), None
        except StoreError as exc:
            if started:
                raise ConnectionAbortedError(errno.ECONNABORTED, str(exc)) from exc
            return self._send_error(reply, ErrorCode.INTERNAL, str(exc)), None

    def _send_error(self, reply: _Get, code: ErrorCode, message: str) -> int:
        frame = encode_error(reply.request_id, code, message)
        send_all(self.sock, frame, self.server.idle_timeout)
        return len(frame)

    def _encode_piece(
        self, reply: _Get, piece: Piece, view: memoryview
    ) -> tuple[bytes, bytes | memoryview, bool]:
        payload: bytes | memoryview = view
        flags = 0
        if self.compress and len(view) >= MIN_COMPRESS:
            compressor = zstandard.ZstdCompressor(level=self.server.compression_level)
            if _worth_compressing(view, compressor):
                packed = compressor.compress(view)
                if len(packed) < len(view):
                    payload, flags = packed, FLAG_ZSTD

        digest = piece.digest.encode("ascii")
        fields = PIECE.pack(piece.number, piece.offset, piece.length, len(digest))
        length = len(fields) + len(digest) + len(payload)
        header = HEADER.pack(FrameType.PIECE, flags, 0, reply.request_id, length)
        return header + fields + digest, payload, bool(flags)


def _worth_compressing(view: memoryview, compressor: zstandard.ZstdCompressor) -> bool:
    """Whether a sample from the middle of a piece shrinks by at least 1/32.

    Most pieces (image layers, archives, media) are compressed already; trying the
    sample rather than the whole piece costs them a 64th of the attempt.
    """
    if len(view) <= 2 * COMPRESSION_SAMPLE:
        return True
    middle = (len(view) - COMPRESSION_SAMPLE) // 2
    sample = view[middle : middle + COMPRESSION_SAMPLE]
    return len(compressor.compress(sample)) <= COMPRESSION_SAMPLE * 31 // 32


def _busy(request_id: int) -> bytes:
    return encode_error(request_id, ErrorCode.BUSY, BUSY_MESSAGE)


_CANCELLED: Final = "called off by the client before its piece was sent"


def _cancelled(request_id: int) -> bytes:
    return encode_error(request_id, ErrorCode.CANCELLED, _CANCELLED)


def _parse_get(body: bytes, flags: int) -> tuple[str, int, str]:
    """The task ID, piece number and trace context ("" without one) of a GET."""
    if len(body) < GET.size:
        raise _BadRequest(f"GET body of {len(body)} bytes is too short")
    number, id_length = GET.unpack_from(body)
    end = GET.size + id_length
    trace = b""
    if flags & FLAG_TRACE:
        # The task ID is followed by the trace context's length and the context.
        if len(body) <= end or body[end] != len(body) - end - 1:
            raise _BadRequest("the trace context does not end the GET body")
        body, trace = body[:end], body[end + 1 :]
    if id_length == 0 or id_length != len(body) - GET.size:
        raise _BadRequest(
            f"task ID length {id_length} does not match a {len(body)}-byte GET body"
        )
    try:
        return body[GET.size :].decode(), number, trace.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest("task ID or trace context is not text") from None


async def _refuse(sock: socket.socket, peer: str) -> None:
    logger.debug("tcp: refusing %s: too many connections", peer)
    frame = encode_error(0, ErrorCode.BUSY, "too many connections; try another parent")
    with contextlib.suppress(OSError):
        sock.send(frame)
    await _close_gracefully(sock)


async def _close_gracefully(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
        with anyio.move_on_after(LINGER):
            while True:
                await anyio.wait_readable(sock)
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    if not sock.recv(65536):
                        break
    except OSError:
        pass
    finally:
        sock.close()
