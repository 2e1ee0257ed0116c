"""What every command shares: store options, size parsing, error reporting."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from dragonpy import DragonpyError, PieceStore, StorePolicy, _config, open_store
from dragonpy._download import DEFAULT_STORE_DIR

from ._settings import SettingOption

P = ParamSpec("P")
T = TypeVar("T")


def parse_size(text: str) -> int:
    """Bytes in ``10GiB``, ``500MB``, ``1.5g`` or ``1024``."""
    try:
        return _config.parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def store_options(command: Callable[P, T]) -> Callable[P, T]:
    """``--store`` and ``--store-capacity``, shared by every command that opens it."""
    command = click.option(
        "--store-capacity",
        cls=SettingOption,
        key="storage.capacity",
        default="20GiB",
        show_default=True,
        envvar="DRAGONPY_STORE_CAPACITY",
        help="Bytes the piece store may hold before it evicts unused tasks.",
    )(command)
    return click.option(
        "--store",
        "store_dir",
        cls=SettingOption,
        key="storage.dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STORE_DIR,
        show_default=True,
        envvar="DRAGONPY_STORE",
        help="Directory of the piece store (shared with a local daemon).",
    )(command)


def open_cli_store(store_dir: Path, capacity: str) -> PieceStore:
    return open_store(store_dir, StorePolicy(capacity=parse_size(capacity)))


def reports_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Turn a ``DragonpyError`` into one line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except DragonpyError as exc:
            url = getattr(exc, "url", "")
            detail = f" ({url})" if url else ""
            click.echo(f"dragonpy: error: {exc}{detail}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("dragonpy: interrupted", err=True)
            sys.exit(130)

    return wrapper
