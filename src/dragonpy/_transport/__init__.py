"""Piece transports: how peers exchange pieces. Chosen by name."""

from __future__ import annotations

from collections.abc import Callable

from .._storage import PieceStore
from ._base import PieceClient, PieceNotFound, PieceServer, TransportError

__all__ = [
    "TRANSPORTS",
    "PieceClient",
    "PieceNotFound",
    "PieceServer",
    "TransportError",
    "open_client",
    "open_server",
]

#: Transport names, the default first.
TRANSPORTS = ("tcp", "http")


def open_client(name: str) -> PieceClient:
    """A client of the named transport."""
    return _factories(name)[0]()


def open_server(name: str, store: PieceStore) -> PieceServer:
    """A server of the named transport, serving ``store``."""
    return _factories(name)[1](store)


def _factories(
    name: str,
) -> tuple[Callable[[], PieceClient], Callable[[PieceStore], PieceServer]]:
    # Imported on use: a process speaks one transport, usually.
    if name == "tcp":
        from ._tcp import TcpPieceClient, TcpPieceServer

        return TcpPieceClient, TcpPieceServer
    if name == "http":
        from ._http import HttpPieceClient, HttpPieceServer

        return HttpPieceClient, HttpPieceServer
    raise ValueError(
        f"unknown piece transport {name!r} (known: {', '.join(TRANSPORTS)})"
    )
