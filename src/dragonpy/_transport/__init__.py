"""Piece transports: how peers exchange pieces. Chosen by name."""

from __future__ import annotations

from .._storage import PieceStore
from ._base import ParentBusy, PieceClient, PieceNotFound, PieceServer, TransportError
from ._limits import DEFAULT_UPLOAD_LIMITS, UploadLimits

__all__ = [
    "TRANSPORTS",
    "ParentBusy",
    "PieceClient",
    "PieceNotFound",
    "PieceServer",
    "TransportError",
    "UploadLimits",
    "open_client",
    "open_server",
]

#: Transport names, the default first.
TRANSPORTS = ("tcp", "http")


def open_client(name: str) -> PieceClient:
    """A client of the named transport."""
    return _factories(name)[0]()


def open_server(
    name: str, store: PieceStore, *, limits: UploadLimits | None = None
) -> PieceServer:
    """A server of the named transport, serving ``store`` within ``limits``
    (by default 32 pieces at once and no bandwidth limit)."""
    return _factories(name)[1](store, limits=limits or DEFAULT_UPLOAD_LIMITS)


def _factories(name: str) -> tuple[type[PieceClient], type[PieceServer]]:
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
