"""Configuration files for the daemon and the scheduler.

A file is YAML with camelCase keys, like Dragonfly's ``dfdaemon.yaml`` and
``scheduler.yaml`` where the concept is the same. It is structured into frozen
settings classes (``DaemonSettings``, ``SchedulerSettings``) whose field metadata
is the one source for loading, for ``dragonpy config default``, for reloading on
SIGHUP and for the table of keys in ``docs/config.md``.
"""

import typing

from .. import _lazy
from ._fields import Duration, Size
from ._observability import LOG_FORMATS, LOG_LEVELS, LogSettings, TracingSettings
from ._tree import changed, keys, take_reloadable, to_data
from ._units import format_duration, format_size, parse_duration, parse_size

if typing.TYPE_CHECKING:
    from ._daemon import DaemonSettings
    from ._default import default_file, key_table
    from ._kinds import KINDS
    from ._load import Override, environment, load
    from ._scheduler import SchedulerSettings
else:
    # Imported when first used: the services' settings import the daemon and the
    # scheduler, and loading imports YAML; ``dragonpy get`` needs neither.
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        {
            "DaemonSettings": "._daemon",
            "SchedulerSettings": "._scheduler",
            "KINDS": "._kinds",
            "default_file": "._default",
            "key_table": "._default",
            **dict.fromkeys(["Override", "environment", "load"], "._load"),
        },
    )

__all__ = [
    "KINDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "DaemonSettings",
    "Duration",
    "LogSettings",
    "Override",
    "SchedulerSettings",
    "Size",
    "TracingSettings",
    "changed",
    "default_file",
    "environment",
    "format_duration",
    "format_size",
    "key_table",
    "keys",
    "load",
    "parse_duration",
    "parse_size",
    "take_reloadable",
    "to_data",
]
