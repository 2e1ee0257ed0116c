"""The settings of each kind of service, by name."""

from __future__ import annotations

from typing import Final

from ._daemon import DaemonSettings
from ._scheduler import SchedulerSettings

KINDS: Final[dict[str, type[DaemonSettings] | type[SchedulerSettings]]] = {
    "daemon": DaemonSettings,
    "scheduler": SchedulerSettings,
}
