"""The peer daemon (``dragonpy-daemon``)."""

from ._control import (
    DaemonDownloadFailed,
    DaemonUnavailable,
    DownloadDone,
    DownloadOrder,
    order_download,
)
from ._node import Daemon, DaemonConfig
from ._proxy import ProxyConfig, RegistryMirror
from ._swarm import SwarmDownload, SwarmResult, TaskFailed

__all__ = [
    "Daemon",
    "DaemonConfig",
    "DaemonDownloadFailed",
    "DaemonUnavailable",
    "DownloadDone",
    "DownloadOrder",
    "ProxyConfig",
    "RegistryMirror",
    "SwarmDownload",
    "SwarmResult",
    "TaskFailed",
    "order_download",
]
