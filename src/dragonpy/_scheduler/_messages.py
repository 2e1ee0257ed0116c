"""What daemons and the scheduler say to each other, as JSON over HTTP.

Every message is an attrs class, encoded and checked by ``_wire``. The exchanges
are described in ``docs/scheduler.md``::

    POST   /hosts                      HostAnnounce         -> AnnounceReply
    DELETE /hosts/{host_id}                                 -> 204
    GET    /hosts/{host_id}/triggers?timeout=S              -> SeedTriggers (long poll)
    POST   /peers                      PeerRegister         -> PeerView
    GET    /peers/{peer_id}/view?since=V&timeout=S          -> PeerView (long poll)
    POST   /peers/{peer_id}/report     PieceReport          -> 204
    POST   /peers/{peer_id}/finished   PeerFinished         -> 204
    DELETE /peers/{peer_id}                                 -> 204
"""

from __future__ import annotations

import enum
import re
from typing import Final

import attrs

__all__ = [
    "AnnounceReply",
    "FailureKind",
    "HostAnnounce",
    "ParentFailure",
    "ParentInfo",
    "PeerFinished",
    "PeerRegister",
    "PeerView",
    "PieceInfo",
    "PieceReport",
    "ReportedPiece",
    "Role",
    "SeedTrigger",
    "SeedTriggers",
    "route_of",
]

#: The longest a long poll may be held open, in seconds.
MAX_POLL_TIMEOUT: Final = 60.0

_ID_IN_PATH: Final = re.compile(r"^/(hosts|peers)/[^/]+")


def route_of(path: str) -> str:
    """An API path with its host or peer ID left out (``/peers/{id}/view``): names
    for spans that do not grow with the swarm."""
    return _ID_IN_PATH.sub(r"/\1/{id}", path)


class Role(enum.Enum):
    """What the scheduler wants a peer to do for its task."""

    #: Fetch from the origin the pieces nobody in the swarm holds; the task's only one.
    FETCHER = "fetcher"
    #: Fetch pieces from the parents listed; wait for more when they run out.
    CHILD = "child"
    #: The task failed at the origin; ``PeerView.failure`` says why.
    FAILED = "failed"


class Priority(enum.IntEnum):
    """How a download may reach the origin: Dragonfly's levels, where 0 and 4 to 6
    are the default."""

    DEFAULT = 0
    #: No swarm at all: the daemon does not download (the mirror passes through).
    FORBIDDEN = 1
    #: Only from peers: refused while nobody holds, fetches or seeds the task.
    PEERS_ONLY = 2
    #: Fetch from the origin itself rather than ask a seed to.
    OWN_ORIGIN = 3
    LEVEL4 = 4
    LEVEL5 = 5
    LEVEL6 = 6


class FailureKind(enum.Enum):
    """Why a piece could not be had from a parent."""

    UNREACHABLE = "unreachable"  # connection refused, reset or timed out
    CORRUPT = "corrupt"  # bytes did not match the digest: the parent is blocked
    MISSING = "missing"  # the parent said it does not hold the piece


@attrs.frozen
class HostAnnounce:
    """A daemon's machine, sent at start and then every ``keepalive`` seconds."""

    id: str
    hostname: str
    ip: str
    piece_port: int
    transport: str = "tcp"
    seed: bool = False
    #: Pieces the host serves at once; more children than that share them.
    upload_capacity: int = 32
    idc: str = ""
    #: ``|``-separated hierarchy, such as ``country|region|city|zone|rack``.
    location: str = ""


@attrs.frozen
class AnnounceReply:
    #: Announce again within this many seconds, or be considered gone.
    keepalive: float
    #: Changes when the scheduler restarts: a daemon that sees a new one registers
    #: the tasks it finished again, so the new scheduler knows who holds them.
    instance: str = ""


@attrs.frozen
class SeedTrigger:
    """Asks a seed to download a task from the origin."""

    task_id: str
    url: str
    headers: dict[str, str] = attrs.field(factory=dict)
    tag: str = ""
    application: str = ""
    digest: str | None = None


@attrs.frozen
class SeedTriggers:
    triggers: list[SeedTrigger]


@attrs.frozen
class PieceInfo:
    """A piece's number and its digest, as computed by the peer that fetched it from
    the origin. Offset and length follow from the task's piece length."""

    number: int
    digest: str


@attrs.frozen
class PeerRegister:
    """A host starts (or resumes) downloading a task."""

    peer_id: str
    host_id: str
    task_id: str
    url: str
    headers: dict[str, str] = attrs.field(factory=dict)
    tag: str = ""
    application: str = ""
    digest: str | None = None
    #: Known when the peer already asked the origin or held part of the task.
    content_length: int | None = None
    piece_length: int | None = None
    #: Pieces wanted before the others (a range read); empty means all, in order.
    wanted: list[int] = attrs.field(factory=list)
    #: Pieces the peer already holds, verified, with their digests.
    held: list[PieceInfo] = attrs.field(factory=list)
    #: Set when re-registering an unfinished download (after a scheduler restart).
    resumed: bool = False
    #: Set when re-registering a download this peer was fetching from the origin.
    was_fetcher: bool = False
    priority: Priority = Priority.DEFAULT
    #: This host's earlier peer of the same task, done downloading, which this one
    #: takes the place of.
    replaces: str | None = None


@attrs.frozen
class ParentInfo:
    """A peer to fetch pieces from, and which pieces it holds now."""

    peer_id: str
    host_id: str
    address: str  # ip:port of its piece server
    transport: str
    seed: bool
    pieces: list[int]


@attrs.frozen
class PeerView:
    """Everything a peer needs to go on with its download.

    ``version`` grows whenever anything in it changes; a long poll with
    ``since=version`` returns as soon as it does.
    """

    version: int
    role: Role
    content_length: int | None
    piece_length: int | None
    #: Digests of every piece anyone in the swarm holds.
    pieces: list[PieceInfo]
    parents: list[ParentInfo]
    #: For the fetcher: pieces some peer is waiting for, to fetch first.
    demanded: list[int] = attrs.field(factory=list)
    failure: str | None = None


@attrs.frozen
class ReportedPiece:
    """A piece a peer now holds, verified and stored."""

    number: int
    digest: str
    #: The parent it came from; None when it came from the origin.
    parent_id: str | None
    #: Seconds the transfer took.
    cost: float


@attrs.frozen
class ParentFailure:
    parent_id: str
    number: int
    kind: FailureKind
    reason: str = ""


@attrs.frozen
class PieceReport:
    """Pieces stored and failures met since the previous report."""

    pieces: list[ReportedPiece] = attrs.field(factory=list)
    failures: list[ParentFailure] = attrs.field(factory=list)
    #: The fetcher sends these with its first report, once the origin answered.
    content_length: int | None = None
    piece_length: int | None = None
    #: The pieces the peer now wants before the others, when that changed (a new
    #: range read joined its download).
    wanted: list[int] | None = None


@attrs.frozen
class PeerFinished:
    """The download ended. A fetcher's failure (the origin said 404, say) fails the
    task for everyone; a child's failure concerns only itself. A ``partial`` success
    ends a range read: the peer holds the pieces it wanted and serves those."""

    success: bool
    reason: str = ""
    partial: bool = False
