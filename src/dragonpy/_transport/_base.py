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
import contextlib
import time
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio.abc
from opentelemetry import context, trace
from opentelemetry.util.types import Attributes

from .._errors import ParentBusy, PieceNotFound, TransportError
from .._pieces import Piece
from .._storage import PieceStore
from .._telemetry import LatencyHistogram, child_span
from ._limits import DEFAULT_UPLOAD_LIMITS, UploadLimits, UploadThrottle

__all__ = [
    "ParentBusy",
    "PieceClient",
    "PieceNotFound",
    "PieceServer",
    "TransportError",
    "fetch_span",
]


class PieceClient(abc.ABC):
    """Fetches pieces from parents; keeps connections to them between calls."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def fetch(
        self, address: str, task_id: str, number: int
    ) -> tuple[Piece, bytes | bytearray]:
        """Piece ``number`` of ``task_id`` from the parent at ``host:port``.

        Raises ``PieceNotFound`` when the parent does not hold it, ``ParentBusy``
        when it has as many pieces waiting as it sends at once, and
        ``TransportError`` when the parent cannot be reached or misbehaves.
        """

    async def aclose(self) -> None:  # noqa: B027 (stateless clients hold nothing)
        """Close connections to parents."""


def fetch_span(
    transport: str, address: str, task_id: str, number: int
) -> contextlib.AbstractContextManager[object]:
    """The span of one piece fetched from a parent, in the download's trace; the
    transport sends its context along, so the parent's ``piece upload`` span joins
    the trace."""
    attributes: Attributes = {
        "dragonpy.task_id": task_id,
        "dragonpy.piece": number,
        "dragonpy.transport": transport,
        "server.address": address,
    }
    return child_span("piece fetch", trace.SpanKind.CLIENT, attributes)


class PieceServer(abc.ABC):
    """Serves the pieces of a store to other peers."""

    name: ClassVar[str]

    def __init__(
        self, store: PieceStore, *, limits: UploadLimits = DEFAULT_UPLOAD_LIMITS
    ) -> None:
        self.store = store
        self.throttle = UploadThrottle(limits)
        #: Seconds from a piece request's turn to its last byte handed to the
        #: socket, waits for a slot or for bandwidth included.
        self.upload_latency = LatencyHistogram()

    @contextlib.asynccontextmanager
    async def upload(
        self, task_id: str, number: int, parent: context.Context | None
    ) -> AsyncIterator[None]:
        """Answer one piece request within the upload limits: a span (a child of
        the requester's, whose context came with the request) and its latency."""
        began = time.monotonic()
        attributes: Attributes = {
            "dragonpy.task_id": task_id,
            "dragonpy.piece": number,
            "dragonpy.transport": self.name,
        }
        span = child_span("piece upload", trace.SpanKind.SERVER, attributes, parent)
        with span:
            async with self.throttle.slot():
                yield
        self.upload_latency.observe(time.monotonic() - began)

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
