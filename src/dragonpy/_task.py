"""Tasks, hosts and peers: the nouns every other part speaks in.

A *task* is one piece of content (a file, a blob), known by its task ID. A *host* is a
machine running a daemon. A *peer* is one host's download of one task.
"""

from __future__ import annotations

import attrs

from ._pieces import Piece, piece_count, plan_pieces


@attrs.frozen
class Task:
    """A task as the piece store records it.

    ``validator`` changes whenever the origin's content changes (length, ETag,
    Last-Modified); pieces stored under another validator are dropped. ``digest`` is
    the whole content's expected ``algorithm:hex`` digest, if one is known, and
    ``complete`` is set once every piece is stored and that digest matched.
    """

    id: str
    url: str
    content_length: int
    piece_length: int
    validator: str
    digest: str | None = None
    complete: bool = False
    created_at: float = 0.0

    @property
    def piece_count(self) -> int:
        return piece_count(self.content_length, self.piece_length)

    def pieces(self) -> list[Piece]:
        """Every piece of the task, in order (digests are in the store)."""
        return plan_pieces(self.content_length, self.piece_length)


@attrs.frozen
class Host:
    """A machine that runs a dragonpy daemon."""

    id: str
    ip: str
    hostname: str
    port: int
    seed: bool = False


@attrs.frozen
class Peer:
    """One host's download of one task."""

    id: str
    task_id: str
    host: Host
