"""``dragonpy config``: check a configuration file, print the default one, list
every key with its option and variable."""

from __future__ import annotations

from pathlib import Path

import click

from dragonpy._config import KINDS, changed, default_file, key_table, load
from dragonpy._errors import ConfigError

from ._daemon import daemon
from ._scheduler import scheduler
from ._settings import BadConfig, SettingOption

_COMMANDS = {"daemon": daemon, "scheduler": scheduler}

kind_option = click.option(
    "--kind",
    type=click.Choice(list(KINDS)),
    default="daemon",
    show_default=True,
    help="Whose configuration: a daemon's (peer or seed) or a scheduler's.",
)


@click.group()
def config() -> None:
    """Configuration files of the daemon and the scheduler (docs/config.md)."""


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@kind_option
def check(file: Path, kind: str) -> None:
    """Check FILE without starting anything (variables and options are not read)."""
    try:
        settings: object = load(KINDS[kind], file)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    different = changed(KINDS[kind](), settings)
    summary = f"{len(different)} keys differ from the defaults"
    if different:
        summary += f": {', '.join(different)}"
    click.echo(f"{file}: ok, a {kind} configuration; {summary}")


@config.command()
@kind_option
def default(kind: str) -> None:
    """Print every key at its default, with comments: a file to start from."""
    click.echo(default_file(KINDS[kind], kind), nl=False)


@config.command()
@kind_option
def keys(kind: str) -> None:
    """Print a Markdown table of every key: Dragonfly's name for it, the option
    and the variable that override it, and whether SIGHUP reloads it."""
    options = {
        parameter.key: "/".join([*parameter.opts, *parameter.secondary_opts])
        for parameter in _COMMANDS[kind].params
        if isinstance(parameter, SettingOption)
    }
    click.echo(key_table(KINDS[kind], options), nl=False)
