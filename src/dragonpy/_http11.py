"""Reading HTTP/1.1 response heads from blocking sockets.

Shared by the clients that read bodies straight into caller buffers (origin range
reads and the ``http`` piece transport). Each turns ``HeadError`` into its own
exception, naming the URL or the peer.
"""

from __future__ import annotations

import socket


class StaleConnection(Exception):
    """The connection was closed before any byte of a response arrived.

    On a pooled connection this means the server closed it while idle: the request
    can be retried once on a fresh connection.
    """


class HeadError(Exception):
    """The response head is malformed, too large, or cut short."""


class BodyOverrun(Exception):
    """More bytes came behind the head than its body was to hold."""


class TruncatedBody(Exception):
    """The connection closed before the body was complete."""

    def __init__(self, received: int, expected: int) -> None:
        super().__init__(f"closed the connection after {received} of {expected} bytes")


class ResponseHead:
    """A parsed status line and headers (names lower-cased)."""

    __slots__ = ("body_start", "headers", "status", "version")

    def __init__(
        self, version: str, status: int, headers: dict[str, str], body_start: int
    ) -> None:
        self.version = version
        self.status = status
        self.headers = headers
        self.body_start = body_start

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (RFC 9112 §9.3)."""
        close = self.headers.get("connection", "").lower() == "close"
        return self.version == "HTTP/1.1" and not close


def read_head(sock: socket.socket, buffer: bytearray) -> tuple[ResponseHead, int]:
    """Receive into ``buffer`` until the head is complete.

    Returns the head and how many bytes were received; bytes past
    ``head.body_start`` are the start of the body.
    """
    view = memoryview(buffer)
    received = 0
    while True:
        try:
            count = sock.recv_into(view[received:])
        except ConnectionResetError:
            if received == 0:
                raise StaleConnection from None
            raise
        if count == 0:
            if received == 0:
                raise StaleConnection
            raise HeadError("closed the connection mid-headers")

        # The blank line may straddle two reads: search from a little before.
        start = max(received - 3, 0)
        received += count
        end = buffer.find(b"\r\n\r\n", start, received)
        if end >= 0:
            return parse_head(bytes(buffer[:end]), end + 4), received
        if received == len(buffer):
            raise HeadError(f"sent a response head over {len(buffer)} bytes")


def parse_head(raw: bytes, body_start: int) -> ResponseHead:
    """Parse a head without its final blank line. Folded or repeated headers
    that disagree are refused, as RFC 9112 §5.2 allows."""
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not (
        code.isascii() and code.isdigit()
    ):
        raise HeadError(f"sent a malformed status line {status_line[:80]!r}")

    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(f"sent a malformed header line {line[:80]!r}")
        name = name.lower()
        if name in headers and headers[name] != value.strip():
            raise HeadError(f"sent conflicting {name} headers")
        headers[name] = value.strip()
    return ResponseHead(version, int(code), headers, body_start)


def read_body(
    sock: socket.socket,
    body: memoryview,
    head: ResponseHead,
    head_buffer: bytearray,
    received: int,
) -> None:
    """Fill ``body``: first with the bytes that came in behind the head (``read_head``
    received ``received`` bytes into ``head_buffer``), then from ``sock``."""
    filled = received - head.body_start
    total = len(body)
    if filled > total:
        raise BodyOverrun(f"sent more than the {total} bytes of its body")
    body[:filled] = head_buffer[head.body_start : received]
    while filled < total:
        count = sock.recv_into(body[filled:])
        if count == 0:
            raise TruncatedBody(filled, total)
        filled += count
