"""Running a long-lived service until SIGTERM or SIGINT, reloading its settings on
SIGHUP, shared by the daemon and the scheduler commands."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.abc
import click

from dragonpy._config import LOG_FORMATS, LOG_LEVELS, DaemonSettings

from ._logs import formatter
from ._settings import setting_option_of

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("dragonpy")


def log_options(command: Callable[P, T]) -> Callable[P, T]:
    """``--log-level`` and ``--log-format`` for a long-lived service."""
    # The daemon's log section is the scheduler's too.
    command = setting_option_of(
        DaemonSettings,
        "--log-format",
        key="log.format",
        type=click.Choice(LOG_FORMATS),
        help="text for people, json (one object per line) for collectors.",
    )(command)
    return setting_option_of(
        DaemonSettings, "--log-level", key="log.level", type=click.Choice(LOG_LEVELS)
    )(command)


def configure_logging(level: str, format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(format))
    # ``force``: ``dragonpy daemon`` has the group's configuration to replace, and
    # a reload its own.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every request at INFO, httpcore every step at DEBUG: a daemon's
    # announces would drown its log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))


def run_until_signalled(
    service: Callable[[], Awaitable[None]], on_reload: Callable[[], None]
) -> None:
    """Run ``service`` until it returns or the process is asked to stop; stopping
    cancels it, so it leaves cleanly (tells the scheduler, removes its socket).
    SIGHUP calls ``on_reload``."""

    async def main() -> None:
        async with anyio.create_task_group() as group:
            # Started before the service, so that no SIGHUP finds the default
            # handler, which would end the process.
            await group.start(_handle_signals, group.cancel_scope, on_reload)
            await service()
            group.cancel_scope.cancel()

    gc.freeze()
    anyio.run(main)


async def _handle_signals(
    scope: anyio.CancelScope,
    on_reload: Callable[[], None],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGHUP
    ) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                on_reload()
                continue
            logger.info("stopping on %s", signal.Signals(signum).name)
            scope.cancel()
            return
