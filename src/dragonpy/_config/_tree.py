"""Settings as a tree of sections and keys: walking it, writing it back as plain
data, and what a reload may take from a new tree."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeGuard, TypeVar, get_args, get_origin

import attrs

from ._fields import Duration, Setting, Size, setting_of
from ._units import format_duration, format_size

T = TypeVar("T")


@attrs.frozen
class Key:
    """One setting in a tree: its dotted path in a file and how to reach it."""

    path: str
    names: tuple[str, ...]
    field: attrs.Attribute[Any]
    setting: Setting

    @property
    def env(self) -> str:
        """Its environment variable: ``upload.server.port`` is read from
        ``DRAGONPY_UPLOAD_SERVER_PORT`` unless the setting names another."""
        if self.setting.env is not None:
            return self.setting.env
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", self.path.replace(".", "_"))
        return f"DRAGONPY_{words.upper()}"

    def value(self, settings: object) -> Any:
        return functools.reduce(getattr, self.names, settings)


def fields(kind: type) -> tuple[attrs.Attribute[Any], ...]:
    """The fields of a settings class, with their types resolved."""
    resolved: tuple[attrs.Attribute[Any], ...] = attrs.fields(attrs.resolve_types(kind))
    return resolved


def is_section(kind: object) -> TypeGuard[type]:
    """Whether a field of this type holds a group of settings."""
    return isinstance(kind, type) and attrs.has(kind)


def keys(kind: type, prefix: str = "", names: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every setting under ``kind``, in file order; lists count as one setting."""
    for field in fields(kind):
        setting = setting_of(field)
        path = f"{prefix}{setting.key}"
        if is_section(field.type):
            yield from keys(field.type, f"{path}.", (*names, field.name))
        else:
            yield Key(path, (*names, field.name), field, setting)


def key_path(kind: type | None, names: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """File keys for a path of attribute names (and list indices) from ``kind``."""
    path: list[str | int] = []
    for name in names:
        if isinstance(name, int) or kind is None or not attrs.has(kind):
            path.append(name)
            continue
        field = attrs.fields_dict(attrs.resolve_types(kind))[name]
        path.append(setting_of(field).key)
        kind = _item_type(field.type)
    return tuple(path)


def dotted(path: tuple[str | int, ...]) -> str:
    """``proxy.rules[1].regex``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.removeprefix(".")


def to_data(value: Any, kind: Any) -> Any:
    """``value`` (of type ``kind``) as a file writes it: mappings, lists, sizes
    like 20GiB and durations like 30s."""
    if value is None:
        return None
    kind = _without_none(kind)
    if attrs.has(kind):
        return {
            setting_of(field).key: to_data(getattr(value, field.name), field.type)
            for field in fields(kind)
        }
    if get_origin(kind) is tuple:
        return [to_data(item, get_args(kind)[0]) for item in value]
    if kind is Size:
        return format_size(value)
    if kind is Duration:
        return format_duration(value)
    if kind is Path:
        return str(value)
    return value


def changed(old: object, new: object) -> list[str]:
    """Paths of the keys whose values differ between two trees of one kind."""
    return [key.path for key in keys(type(old)) if key.value(old) != key.value(new)]


def take_reloadable(current: T, new: T) -> tuple[T, list[str]]:
    """``current`` with the values of ``new`` for the keys that can change while
    running, and the paths of the other keys that differ (they need a restart)."""
    updates: dict[str, Any] = {}
    needs_restart: list[str] = []
    for field in fields(type(current)):
        old_value, new_value = getattr(current, field.name), getattr(new, field.name)
        if is_section(field.type):
            merged, later = take_reloadable(old_value, new_value)
            updates[field.name] = merged
            key = setting_of(field).key
            needs_restart += [f"{key}.{path}" for path in later]
        elif setting_of(field).reload:
            updates[field.name] = new_value
        elif old_value != new_value:
            needs_restart.append(setting_of(field).key)
    # The attrs plugin of mypy cannot tell that a type variable is an attrs class.
    return attrs.evolve(current, **updates), needs_restart  # type: ignore[misc]


def _without_none(kind: Any) -> Any:
    if isinstance(kind, UnionType):
        (kind,) = (arg for arg in get_args(kind) if arg is not NoneType)
    return kind


def _item_type(kind: Any) -> type | None:
    kind = _without_none(kind)
    if get_origin(kind) is tuple:
        kind = get_args(kind)[0]
    return kind if attrs.has(kind) else None
