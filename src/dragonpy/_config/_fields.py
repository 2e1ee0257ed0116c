"""How a setting is declared, and the checks of its value.

Each field of a settings class carries a ``Setting`` in its metadata: the key it has
in a file, the help printed above it by ``dragonpy config default``, the Dragonfly
key for the same concept, and whether it can change while the service runs. That
metadata is the one source for loading, printing, reloading and the key table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any, Final, NewType, TypeVar

import attrs

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

#: Bytes; a file may write them as 20GiB, 500MB, 1.5g or 1024.
Size = NewType("Size", int)
#: Seconds; a file may write them as 30s, 5m, 720h, 500ms or 2.5.
Duration = NewType("Duration", float)

_METADATA: Final = "dragonpy.setting"
#: The ``dragonfly`` of a setting whose Dragonfly key is its own.
SAME: Final = "(same)"


@attrs.frozen
class Setting:
    help: str
    #: The key in a file: camelCase, like Dragonfly's.
    key: str
    #: The environment variable, when it is not derived from the key path.
    env: str | None
    #: The Dragonfly key for the same concept, or "" when it has none.
    dragonfly: str
    #: Whether a running service takes a new value on SIGHUP.
    reload: bool


class Invalid(ValueError):
    """A value a setting does not allow. ``path`` leads from the settings class
    that raised it to the value: attribute names, and indices into lists."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def setting(
    default: T,
    help: str,
    *,
    key: str = "",
    env: str | None = None,
    dragonfly: str = "",
    reload: bool = False,
    validator: Validator | None = None,
) -> T:
    """A field of a settings class (typed as its value, for the type checker)."""
    metadata = {_METADATA: Setting(help, key, env, dragonfly, reload)}
    field = attrs.field(default=default, validator=validator, metadata=metadata)
    return field


def required(
    help: str, *, dragonfly: str = "", validator: Validator | None = None
) -> Any:
    """A field without a default: a file that has its section must give it."""
    metadata = {_METADATA: Setting(help, "", None, dragonfly, reload=False)}
    return attrs.field(validator=validator, metadata=metadata)


def section(kind: Callable[[], T], help: str, *, key: str = "") -> T:
    """A field holding a nested group of settings, all defaults unless given."""
    metadata = {_METADATA: Setting(help, key, None, "", reload=False)}
    return attrs.field(factory=kind, metadata=metadata)


def setting_of(field: attrs.Attribute[Any]) -> Setting:
    """The ``Setting`` of a field, with its file key filled in."""
    declared: Setting = field.metadata[_METADATA]
    if declared.key:
        return declared
    return attrs.evolve(declared, key=_camel_case(field.name))


def _camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# Checks, used as attrs validators: each says what is allowed.


def port(_: object, field: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        _refuse(field, f"{value} is not a port; allowed: 0 to 65535 (0: any free port)")


def between(low: float, high: float) -> Validator:
    def check(_: object, field: attrs.Attribute[Any], value: float) -> None:
        if not low <= value <= high:
            _refuse(field, f"{value:g} is out of range; allowed: {low:g} to {high:g}")

    return check


def positive(_: object, field: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        _refuse(field, f"{value:g} is not allowed; it must be more than 0")


def not_negative(_: object, field: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        _refuse(field, f"{value:g} is not allowed; it must be 0 or more")


def one_of(choices: Collection[str]) -> Validator:
    def check(_: object, field: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            _refuse(field, f"{value!r} is not allowed; allowed: {', '.join(choices)}")

    return check


def each(check: Callable[[Any], object]) -> Validator:
    """Apply ``check`` to every item of a list, naming the item that fails."""

    def check_all(_: object, field: attrs.Attribute[Any], values: tuple[Any]) -> None:
        for index, value in enumerate(values):
            try:
                check(value)
            except ValueError as exc:
                raise Invalid((field.name, index), str(exc)) from None

    return check_all


def regex(_: object, field: attrs.Attribute[Any], value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        _refuse(field, f"{value!r} is not a regular expression ({exc})")


def host_port(_: object, field: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    host, _, number = value.rpartition(":")
    if not host or not number.isdigit() or int(number) > 65535:
        _refuse(field, f"{value!r} is not an address; allowed: HOST:PORT")


def _refuse(field: attrs.Attribute[Any], message: str) -> None:
    raise Invalid((field.name,), message)
