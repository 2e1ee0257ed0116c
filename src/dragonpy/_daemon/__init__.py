"""The peer daemon (``dragonpy-daemon``)."""

from ._control import (
    DaemonDownloadFailed,
    DaemonUnavailable,
    DownloadDone,
    DownloadOrder,
    order_download,
)
from ._node import CONTROL_SOCKET, DaemonConfig, Node
from ._swarm import SwarmDownload, SwarmResult, TaskFailed

__all__ = [
    "CONTROL_SOCKET",
    "DaemonConfig",
    "DaemonDownloadFailed",
    "DaemonUnavailable",
    "DownloadDone",
    "DownloadOrder",
    "Node",
    "SwarmDownload",
    "SwarmResult",
    "TaskFailed",
    "order_download",
]
