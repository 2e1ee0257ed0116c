"""The piece transport interface: how one peer fetches a piece from another.

A transport has two halves. ``PieceClient.fetch`` asks a parent for one piece of a
task and returns the piece's place, the digest the parent claims and its bytes; the
caller verifies the digest before storing or serving anything. ``PieceServer`` answers
such requests from the local piece store, within its ``UploadLimits``. A store holds a
piece with its digest only once the piece was verified, so a server sends nothing but
verified pieces of tasks it knows. Transports are chosen by name (``tcp``, ``http``);
every one passes the conformance suite in ``tests/test_transports.py``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import anyio.abc

from .._errors import PieceNotFound, TransportError
from .._pieces import Piece
from .._storage import PieceStore
from ._limits import DEFAULT_UPLOAD_LIMITS, UploadLimits, UploadThrottle

__all__ = ["PieceClient", "PieceNotFound", "PieceServer", "TransportError"]


class PieceClient(abc.ABC):
    """Fetches pieces from parents; keeps connections to them between calls."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def fetch(
        self, address: str, task_id: str, number: int
    ) -> tuple[Piece, bytes | bytearray]:
        """Piece ``number`` of ``task_id`` from the parent at ``host:port``.

        Raises ``PieceNotFound`` when the parent does not hold it and
        ``TransportError`` when the parent cannot be reached or misbehaves.
        """

    async def aclose(self) -> None:  # noqa: B027 (stateless clients hold nothing)
        """Close connections to parents."""


class PieceServer(abc.ABC):
    """Serves the pieces of a store to other peers."""

    name: ClassVar[str]

    def __init__(
        self, store: PieceStore, *, limits: UploadLimits = DEFAULT_UPLOAD_LIMITS
    ) -> None:
        self.store = store
        self.throttle = UploadThrottle(limits)

    def describe_missing(self, task_id: str, number: int) -> str:
        """The error message for a piece the store cannot serve."""
        if self.store.get_task(task_id) is None:
            return f"unknown task {task_id}"
        return f"no piece {number} of task {task_id}"

    @abc.abstractmethod
    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 for any free port) until cancelled.

        Reports the port actually bound through ``task_status`` once listening, so
        ``port = await task_group.start(server.serve, host, 0)`` works.
        """
