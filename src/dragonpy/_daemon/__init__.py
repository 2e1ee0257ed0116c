"""The peer daemon (``dragonpy-daemon``)."""

from ._node import Daemon, DaemonConfig
from ._proxy import ProxyConfig, RegistryMirror
from ._swarm import SwarmDownload, SwarmResult, TaskFailed

__all__ = [
    "Daemon",
    "DaemonConfig",
    "ProxyConfig",
    "RegistryMirror",
    "SwarmDownload",
    "SwarmResult",
    "TaskFailed",
]
