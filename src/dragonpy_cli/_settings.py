"""How the service commands take their settings: a file (``--config``), then
``DRAGONPY_*`` variables, then options given on the command line, each overriding
the one before; and again on SIGHUP."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

import click
from click.core import ParameterSource

from dragonpy import _config
from dragonpy._config import changed, keys, take_reloadable
from dragonpy._errors import ConfigError

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

logger = logging.getLogger("dragonpy")


class SettingOption(click.Option):
    """An option that sets the key ``key``, when it is given on the command line;
    ``to_setting`` turns its value into the file's form."""

    def __init__(
        self,
        *args: Any,
        key: str,
        to_setting: Callable[[Any], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.key = key
        self.to_setting = to_setting


def setting_option_of(
    kind: type, *decls: str, key: str, **kwargs: Any
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """An option for the key ``key`` of ``kind``, showing the key's default."""
    default = _default_of(kind, key)
    kwargs.setdefault("default", default)
    kwargs.setdefault("show_default", default is not None)
    return click.option(*decls, cls=SettingOption, key=key, **kwargs)


def _default_of(kind: type, path: str) -> object:
    """The default of a key, when an option can show it as it is."""
    (key,) = (key for key in keys(kind) if key.path == path)
    value = key.value(kind())
    return value if isinstance(value, str | int | float) else None


class BadConfig(click.ClickException):
    """A configuration that a service cannot start with: one line per problem."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        for line in self.format_message().splitlines():
            click.echo(f"dragonpy: error: {line}", err=True)


def config_option(command: Callable[P, T]) -> Callable[P, T]:
    """``--config FILE``."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="YAML configuration file (dragonpy config default prints one).",
    )(command)


def given_options(context: click.Context) -> Iterator[_config.Override]:
    """Overrides from the setting options given on the command line."""
    for parameter in context.command.params:
        if not isinstance(parameter, SettingOption) or parameter.name is None:
            continue
        source = context.get_parameter_source(parameter.name)
        if source is not ParameterSource.COMMANDLINE:
            continue
        value = context.params[parameter.name]
        if parameter.to_setting is not None:
            value = parameter.to_setting(value)
        elif isinstance(value, tuple):
            value = list(value)
        yield _config.Override(parameter.key, value, parameter.opts[0])


class LiveSettings(Generic[S]):
    """A service's settings, loaded at start-up and again on SIGHUP."""

    def __init__(self, kind: type[S], context: click.Context) -> None:
        self.kind = kind
        self.file: Path | None = context.params["config_file"]
        self._options = list(given_options(context))
        try:
            self.current = self._load()
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None

    def _load(self) -> S:
        # Through the package: loading imports YAML, which only services need.
        overrides = [*_config.environment(self.kind, os.environ), *self._options]
        return _config.load(self.kind, self.file, overrides)

    def reload(self) -> bool:
        """Load again, taking what can change while running; whether anything did.

        Options and variables keep overriding the file, as at start-up. Other
        changes are logged as needing a restart, and a file that does not load is
        logged and ignored: the service goes on as it was.
        """
        try:
            new = self._load()
        except ConfigError as exc:
            problems = "; ".join(str(exc).splitlines())
            logger.error(
                "configuration not reloaded, running on as before: %s", problems
            )
            return False
        merged, later = take_reloadable(self.current, new)
        if later:
            logger.warning("needs a restart: %s", ", ".join(later))
        differences = changed(self.current, merged)
        logger.info("configuration reloaded: %s", ", ".join(differences) or "no change")
        self.current = merged
        return bool(differences)
