"""The ``dragonpy`` command group."""

from __future__ import annotations

import gc
import logging
import os

import click

from dragonpy import __version__

from ._cache import cache
from ._config import config
from ._containerd import containerd_config
from ._daemon import daemon
from ._get import get
from ._scheduler import scheduler


@click.group()
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


cli.add_command(get)
cli.add_command(cache)
cli.add_command(daemon)
cli.add_command(scheduler)
cli.add_command(containerd_config)
cli.add_command(config)


def main() -> None:
    # Everything imported so far lives as long as the process: keep the cyclic garbage
    # collector from walking it again and again while a download allocates.
    gc.freeze()
    cli(prog_name="dragonpy")
