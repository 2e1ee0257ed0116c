"""The peer daemon (``dragonpy-daemon``)."""

from ._control import (
    DaemonDownloadFailed,
    DaemonUnavailable,
    DownloadDone,
    DownloadOrder,
    order_download,
)
from ._node import CONTROL_SOCKET, Daemon, DaemonConfig
from ._proxy import ProxyConfig, RegistryMirror
from ._swarm import SwarmDownload, SwarmResult, TaskFailed

__all__ = [
    "CONTROL_SOCKET",
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
