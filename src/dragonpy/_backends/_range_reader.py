"""Byte ranges over HTTP/1.1, read straight into the caller's buffer.

httpx carries every request dragonpy makes to an origin except one: the body of a
piece. There, httpx's chunk-by-chunk streaming tops out near 400 MB/s on loopback
(measured in ``docs/pieces.md``), because each 64 KiB chunk passes through several
layers of Python. This reader sends a plain ``GET`` with ``Range`` on a pooled blocking
socket and ``recv_into``s the body directly into the piece buffer from a worker thread,
with the GIL released for the whole transfer. It handles only the common case (a
``206`` with ``Content-Length``); for anything else it raises ``NeedsFullClient`` and
the caller repeats the request with httpx, which handles everything.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from .._errors import (
    OriginAuthError,
    OriginProtocolError,
    OriginStatusError,
    OriginTimeout,
    OriginUnreachable,
    RangeNotSupported,
)
from .._http11 import (
    BodyOverrun,
    HeadError,
    ResponseHead,
    StaleConnection,
    TruncatedBody,
    read_body,
    read_head,
)

_MAX_HEAD: Final = 64 * 1024
_SOCKET_BUFFER: Final = 4 * 1024 * 1024
_IDLE_PER_ORIGIN: Final = 32


class NeedsFullClient(Exception):
    """The response is not a plain ``206``; repeat the request with httpx."""


class RangeReader:
    """A pool of HTTP/1.1 connections that read byte ranges into buffers.

    Blocking: call it from a worker thread. Thread-safe.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext,
        user_agent: str,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[socket.socket]] = {}
        self._lock = threading.Lock()

    def read_into(
        self, url: str, offset: int, buffer: memoryview, headers: Mapping[str, str]
    ) -> None:
        """Fill ``buffer`` with the bytes of ``url`` starting at ``offset``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NeedsFullClient(url)

        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = self._request(parts.netloc, target, offset, len(buffer), headers)

        sock, reused = self._checkout(origin)
        try:
            keep = self._exchange(sock, request, url, offset, buffer)
        except StaleConnection:
            sock.close()
            if not reused:
                raise OriginUnreachable(
                    "origin closed the connection before answering", url=url
                ) from None
            # A pooled connection the server had already closed: one fresh try.
            sock, _ = self._checkout(origin, fresh=True)
            keep = self._guarded_exchange(sock, request, url, offset, buffer)
        except BaseException:
            sock.close()
            raise

        self._checkin(origin, sock, keep)

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for sockets in idle.values():
            for sock in sockets:
                sock.close()

    def _guarded_exchange(
        self,
        sock: socket.socket,
        request: bytes,
        url: str,
        offset: int,
        buf: memoryview,
    ) -> bool:
        try:
            return self._exchange(sock, request, url, offset, buf)
        except StaleConnection:
            sock.close()
            raise OriginUnreachable(
                "origin closed the connection before answering", url=url
            ) from None
        except BaseException:
            sock.close()
            raise

    def _request(
        self,
        netloc: str,
        target: str,
        offset: int,
        length: int,
        headers: Mapping[str, str],
    ) -> bytes:
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {netloc.rpartition('@')[2]}",
            f"Range: bytes={offset}-{offset + length - 1}",
            "Accept-Encoding: identity",
        ]
        names = {name.lower() for name in headers}
        if "user-agent" not in names:
            lines.append(f"User-Agent: {self._user_agent}")
        for name, value in headers.items():
            if name.lower() not in ("host", "range", "accept-encoding"):
                lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _checkout(
        self, origin: tuple[str, str, int], *, fresh: bool = False
    ) -> tuple[socket.socket, bool]:
        if not fresh:
            with self._lock:
                idle = self._idle.get(origin)
                if idle:
                    return idle.pop(), True
        return self._connect(origin), False

    def _checkin(
        self, origin: tuple[str, str, int], sock: socket.socket, keep: bool
    ) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if keep and len(idle) < _IDLE_PER_ORIGIN:
                idle.append(sock)
                return
        sock.close()

    def _connect(self, origin: tuple[str, str, int]) -> socket.socket:
        scheme, host, port = origin
        url = f"{scheme}://{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise OriginTimeout(
                f"connecting to {host}:{port} timed out", url=url
            ) from exc
        except OSError as exc:
            raise OriginUnreachable(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}", url=url
            ) from exc

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        sock.settimeout(self._read_timeout)
        if scheme == "https":
            try:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise OriginUnreachable(
                    f"TLS with {host}:{port} failed: {exc}", url=url
                ) from exc
        return sock

    def _exchange(
        self,
        sock: socket.socket,
        request: bytes,
        url: str,
        offset: int,
        buffer: memoryview,
    ) -> bool:
        """Send one request and read its body into ``buffer``; True if reusable."""
        try:
            sock.sendall(request)
            head_buffer = bytearray(_MAX_HEAD)
            try:
                head, received = read_head(sock, head_buffer)
            except HeadError:
                # Anything unusual in the head: httpx handles it, or says what is wrong.
                raise NeedsFullClient(url) from None
            keep = _check_head(head, url, offset, len(buffer))
            try:
                read_body(sock, buffer, head, head_buffer, received)
            except BodyOverrun:
                raise OriginProtocolError(
                    "origin sent more bytes than asked for", url=url
                ) from None
            except TruncatedBody as exc:
                raise OriginProtocolError(f"origin {exc}", url=url) from None
        except TimeoutError as exc:
            raise OriginTimeout("origin stopped sending data", url=url) from exc
        except (ssl.SSLError, ConnectionError) as exc:
            raise OriginUnreachable(
                f"connection to origin failed: {exc}", url=url
            ) from exc
        return keep


def _check_head(head: ResponseHead, url: str, offset: int, length: int) -> bool:
    """Accept only a ``206`` for exactly the requested range; True if reusable."""
    status = head.status
    if status in (401, 403):
        raise OriginAuthError(
            f"origin refused access ({status}); pass credentials or check them",
            url=url,
            status=status,
        )
    if status == 200:
        raise RangeNotSupported(
            "origin ignored the Range header and sent the whole content", url=url
        )
    if status != 206:
        if status >= 400 and status not in (408, 429) and status < 500:
            raise OriginStatusError(f"origin answered {status}", url=url, status=status)
        raise NeedsFullClient(url)

    if "transfer-encoding" in head.headers or "content-encoding" in head.headers:
        raise NeedsFullClient(url)
    expected = f"bytes {offset}-{offset + length - 1}/"
    if not head.headers.get("content-range", "").startswith(expected):
        raise OriginProtocolError(
            f"origin sent Content-Range {head.headers.get('content-range')!r}, "
            f"expected {expected}*",
            url=url,
        )
    if head.headers.get("content-length") != str(length):
        raise OriginProtocolError(
            f"origin sent Content-Length {head.headers.get('content-length')!r} "
            f"for a {length}-byte range",
            url=url,
        )
    return head.keep_alive
