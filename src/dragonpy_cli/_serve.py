"""Running a long-lived service until SIGTERM or SIGINT, shared by the daemon and
the scheduler commands."""

from __future__ import annotations

import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio
import click

P = ParamSpec("P")
T = TypeVar("T")


def log_level_option(command: Callable[P, T]) -> Callable[P, T]:
    """``--log-level`` for a long-lived service (INFO unless told otherwise)."""
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default=lambda: os.environ.get("DRAGONPY_LOG_LEVEL", "info"),
        show_default="info",
    )(command)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,  # ``dragonpy daemon``: the group configured it already
    )
    # httpx logs every request at INFO, httpcore every step at DEBUG: a daemon's
    # announces would drown its log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))


def run_until_signalled(service: Callable[[], Awaitable[None]]) -> None:
    """Run ``service`` until it returns or the process is asked to stop; stopping
    cancels it, so it leaves cleanly (tells the scheduler, removes its socket)."""

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(
                    signal.SIGTERM, signal.SIGINT
                ) as signals:
                    async for signum in signals:
                        logging.getLogger("dragonpy").info(
                            "stopping on %s", signal.Signals(signum).name
                        )
                        group.cancel_scope.cancel()
                        return

            group.start_soon(stop_on_signal)
            await service()
            group.cancel_scope.cancel()

    gc.freeze()
    anyio.run(main)
