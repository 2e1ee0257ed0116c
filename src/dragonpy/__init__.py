"""dragonpy: peer-to-peer distribution of container images and large files.

The front door of the SDK. Everything listed in ``__all__`` is public and stable;
modules with a leading underscore are not.
"""

import typing

from . import _lazy
from ._api import download, download_sync, read_range
from ._backends import (
    Backend,
    BackendOptions,
    Backends,
    Credentials,
    OriginStat,
    register_backend,
)
from ._download import Download, Downloader, DownloadResult, check_digest_syntax
from ._errors import (
    DigestMismatch,
    DiskFull,
    DownloadTimeout,
    DragonpyError,
    OriginAuthError,
    OriginError,
    OriginProtocolError,
    OriginStatusError,
    OriginTimeout,
    OriginUnreachable,
    OutputError,
    PieceNotFound,
    RangeNotSupported,
    StoreError,
    TransportError,
    UnsupportedURL,
)
from ._identity import (
    DEFAULT_FILTERED_QUERY_PARAMS,
    blob_digest,
    host_id,
    normalize_url,
    peer_id,
    task_id,
)
from ._pieces import Piece, piece_digest, piece_length_for, plan_pieces
from ._storage import PieceStore, StoredTask, StorePolicy, StoreStatistics, open_store
from ._task import Host, Peer, Task
from ._version import __version__

if typing.TYPE_CHECKING:
    from ._daemon import Daemon, DaemonConfig, ProxyConfig, SwarmResult, TaskFailed
    from ._scheduler import Scheduler, SchedulerClient, SchedulerConfig, SchedulerServer
    from ._transport import UploadLimits

else:
    # The daemon and the scheduler are imported when first used: a download needs
    # neither, and they take longer to import than the rest of the package.
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        {
            **dict.fromkeys(
                ["Daemon", "DaemonConfig", "ProxyConfig", "SwarmResult", "TaskFailed"],
                "._daemon",
            ),
            **dict.fromkeys(
                ["Scheduler", "SchedulerClient", "SchedulerConfig", "SchedulerServer"],
                "._scheduler",
            ),
            "UploadLimits": "._transport",
        },
    )

__all__ = [
    "DEFAULT_FILTERED_QUERY_PARAMS",
    "Backend",
    "BackendOptions",
    "Backends",
    "Credentials",
    "Daemon",
    "DaemonConfig",
    "DigestMismatch",
    "DiskFull",
    "Download",
    "DownloadResult",
    "DownloadTimeout",
    "Downloader",
    "DragonpyError",
    "Host",
    "OriginAuthError",
    "OriginError",
    "OriginProtocolError",
    "OriginStat",
    "OriginStatusError",
    "OriginTimeout",
    "OriginUnreachable",
    "OutputError",
    "Peer",
    "Piece",
    "PieceNotFound",
    "PieceStore",
    "ProxyConfig",
    "RangeNotSupported",
    "Scheduler",
    "SchedulerClient",
    "SchedulerConfig",
    "SchedulerServer",
    "StoreError",
    "StorePolicy",
    "StoreStatistics",
    "StoredTask",
    "SwarmResult",
    "Task",
    "TaskFailed",
    "TransportError",
    "UnsupportedURL",
    "UploadLimits",
    "__version__",
    "blob_digest",
    "check_digest_syntax",
    "download",
    "download_sync",
    "host_id",
    "normalize_url",
    "open_store",
    "peer_id",
    "piece_digest",
    "piece_length_for",
    "plan_pieces",
    "read_range",
    "register_backend",
    "task_id",
]
