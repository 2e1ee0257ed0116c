"""The scheduler: who downloads what from whom, so the origin is fetched once.

``Scheduler`` is the in-memory core, ``SchedulerServer`` its HTTP/JSON API
(``dragonpy scheduler``, port 8002) and ``SchedulerClient`` the daemon's side.
The protocol is described in ``docs/scheduler.md``.
"""

from ._client import (
    SchedulerClient,
    SchedulerForgot,
    SchedulerRefused,
    SchedulerUnreachable,
)
from ._core import Scheduler, SchedulerConfig, SchedulerError, UnknownHost, UnknownPeer
from ._messages import (
    AnnounceReply,
    FailureKind,
    HostAnnounce,
    ParentFailure,
    ParentInfo,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceInfo,
    PieceReport,
    Priority,
    ReportedPiece,
    Role,
    SeedTrigger,
    SeedTriggers,
)
from ._server import DEFAULT_PORT, SchedulerServer, run_scheduler

__all__ = [
    "DEFAULT_PORT",
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
    "Priority",
    "ReportedPiece",
    "Role",
    "Scheduler",
    "SchedulerClient",
    "SchedulerConfig",
    "SchedulerError",
    "SchedulerForgot",
    "SchedulerRefused",
    "SchedulerServer",
    "SchedulerUnreachable",
    "SeedTrigger",
    "SeedTriggers",
    "UnknownHost",
    "UnknownPeer",
    "run_scheduler",
]
