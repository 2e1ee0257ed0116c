"""Non-blocking sockets on anyio: listening and accepting for the piece servers, and
sending from worker threads.

Both piece servers drive raw sockets (reads on the event loop, sends from worker
threads), so they listen and accept here rather than through anyio's stream
listeners; the mirror sends stored blobs the same way.
"""

from __future__ import annotations

import logging
import select
import socket

import anyio

logger = logging.getLogger("dragonpy.transport")


async def listen(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket on the first address ``host`` resolves to."""
    family, kind, proto, _, address = (
        await anyio.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


async def accept(listener: socket.socket) -> tuple[socket.socket, str]:
    """The next connection, non-blocking with Nagle off, and its ``host:port``."""
    while True:
        await anyio.wait_readable(listener)
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue
        except OSError as exc:
            # Out of file descriptors, most likely: wait rather than spin.
            logger.warning("cannot accept piece connections: %s", exc)
            await anyio.sleep(0.1)
            continue

        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, f"{address[0]}:{address[1]}"


def send_all(sock: socket.socket, data: bytes | memoryview, timeout: float) -> None:
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
