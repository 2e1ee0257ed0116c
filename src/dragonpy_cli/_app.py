"""The ``dragonpy`` command group."""

from __future__ import annotations

import gc
import importlib
import logging
import os

import click

from dragonpy import __version__

#: Each command and the module that defines it, imported only when the command runs
#: (or ``--help`` lists it): ``dragonpy get`` need not load the daemon's.
COMMANDS = {
    "get": ("._get", "get"),
    "cache": ("._cache", "cache"),
    "daemon": ("._daemon", "daemon"),
    "scheduler": ("._scheduler", "scheduler"),
    "containerd-config": ("._containerd", "containerd_config"),
    "config": ("._config", "config"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module, __package__), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="dragonpy")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=lambda: os.environ.get("DRAGONPY_LOG_LEVEL", "warning"),
    help="Log verbosity on stderr.",
)
def cli(log_level: str) -> None:
    """Peer-to-peer distribution of container images and large files."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def main() -> None:
    # Everything imported so far lives as long as the process: keep the cyclic garbage
    # collector from walking it again and again while a download allocates.
    gc.freeze()
    cli(prog_name="dragonpy")
