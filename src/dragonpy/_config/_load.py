"""Loading settings: a YAML file, then environment variables, then command-line
options, each overriding the one before, into a checked tree of settings.

Every problem becomes one line of a ``ConfigError`` that names where the value came
from (the file, the variable or the option), its key path and what is allowed::

    daemon.yaml: proxy.rules[1].regex: '(' is not a regular expression (...)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
import yaml
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from .._errors import ConfigError
from ._fields import Duration, Invalid, Size, setting_of
from ._tree import Key, dotted, fields, key_path, keys
from ._units import parse_duration, parse_size

T = TypeVar("T")
# Values of these types are taken from environment variables as they are; any
# other type is read as YAML, so that 8, true, null and [a, b] mean what they say.
_VERBATIM: Final = (str, Path, str | None)


@attrs.frozen
class Override:
    """A value for one key from outside the file: ``origin`` is the variable or
    the option it came from."""

    path: str
    value: object
    origin: str


def load(
    kind: type[T], file: Path | None = None, overrides: Iterable[Override] = ()
) -> T:
    """The settings of ``file`` (defaults without one), with ``overrides`` applied
    in order, later ones winning."""
    data = read_file(file) if file is not None else {}
    origins: dict[str, str] = {}
    for item in overrides:
        _put(data, item.path.split("."), item.value)
        origins[item.path] = item.origin
    try:
        return _converter.structure(data, kind)
    except Exception as exc:  # cattrs' groups, and whatever a hook or check raised
        where = str(file) if file is not None else "defaults"
        lines = [
            f"{_origin(path, origins, where)}: {_located(path, problem)}"
            for path, problem in _problems(exc, kind, ())
        ]
        raise ConfigError("\n".join(lines)) from None


def read_file(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read it: {exc.strerror}") from None
    try:
        data = yaml.load(text, _StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of keys, got {data!r}")
    return data


def environment(kind: type, environ: Mapping[str, str]) -> list[Override]:
    """Overrides from the variables in ``environ`` that name keys of ``kind``."""
    found = []
    for key in keys(kind):
        text = environ.get(key.env)
        if text is not None:
            found.append(Override(key.path, _from_environment(key, text), key.env))
    return found


def _from_environment(key: Key, text: str) -> object:
    if key.field.type in _VERBATIM:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key.env}: {key.path}: {_yaml_problem(exc)}") from None


def _put(data: dict[str, Any], path: list[str], value: object) -> None:
    first, *rest = path
    if not rest:
        data[first] = value
        return
    inner = data.get(first)
    if not isinstance(inner, dict):
        inner = data[first] = {}
    _put(inner, rest, value)


# Structuring: strict about types, since a file that says ``port: "4000"`` or
# ``prefetch: yes please`` is a mistake to point out, not to guess at.


def _converter_for_settings() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for kind, hook in _SCALARS.items():
        converter.register_structure_hook(kind, hook)
    converter.register_structure_hook_func(
        _is_tuple,
        lambda value, kind: _list(converter, value, kind),
    )
    converter.register_structure_hook_factory(
        attrs.has, lambda kind: _section(converter, kind)
    )
    return converter


def _is_tuple(kind: Any) -> bool:
    origin: object = get_origin(kind)
    return origin is tuple


def _section(converter: cattrs.Converter, kind: type[T]) -> Any:
    renames: dict[str, Any] = {
        field.name: override(rename=setting_of(field).key) for field in fields(kind)
    }
    structure = make_dict_structure_fn(kind, converter, **renames)

    def structure_section(value: object, _: type[T]) -> T:
        if not isinstance(value, dict):
            raise Invalid((), f"expected a mapping of {_allowed(kind)}, got {value!r}")
        return structure(value, kind)

    return structure_section


def _list(converter: cattrs.Converter, value: object, kind: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise Invalid((), f"expected a list, got {value!r}")
    (item_kind, _) = get_args(kind)
    items, errors = [], []
    for index, item in enumerate(value):
        try:
            items.append(converter.structure(item, item_kind))
        except Exception as exc:  # collected, as cattrs does for its own lists
            exc.add_note(IterableValidationNote(f"@ index {index}", index, item_kind))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {kind}", errors, kind)
    return tuple(items)


def _whole_number(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid((), f"expected a whole number, got {value!r}")
    return value


def _number(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid((), f"expected a number, got {value!r}")
    return float(value)


def _boolean(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise Invalid((), f"expected true or false, got {value!r}")
    return value


def _string(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise Invalid((), f"expected a string, got {value!r} (quote it)")
    return value


def _path(value: object, _: type) -> Path:
    return value if isinstance(value, Path) else Path(_string(value, str))


def _size(value: object, _: type) -> int:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            raise Invalid((), str(exc)) from None
    return _whole_number(value, int)


def _duration(value: object, _: type) -> float:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise Invalid((), str(exc)) from None
    return _number(value, float)


_SCALARS: Final = {
    int: _whole_number,
    float: _number,
    bool: _boolean,
    str: _string,
    Path: _path,
    Size: _size,
    Duration: _duration,
}
_converter: Final = _converter_for_settings()


# Errors: cattrs reports a tree of exceptions, with notes naming the attribute or
# the index each one happened at; each leaf becomes one line.


def _problems(
    exc: BaseException, kind: type | None, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        for name in sorted(map(str, exc.extra_fields)):
            yield (*path, name), f"unknown key; allowed here: {_allowed(exc.cl)}"
    elif isinstance(exc, ClassValidationError | IterableValidationError):
        inner = exc.cl if isinstance(exc, ClassValidationError) else _item(exc.cl)
        for sub in exc.exceptions:
            yield from _problems(sub, inner, path + _noted(sub, inner))
    elif isinstance(exc, Invalid):
        yield path + key_path(kind, exc.path), str(exc)
    elif isinstance(exc, KeyError):
        yield path, "missing; this key is required"
    else:
        yield path, str(exc)


def _noted(exc: BaseException, kind: type | None) -> tuple[str | int, ...]:
    """The step down the tree that ``exc`` happened at, from cattrs' notes."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, IterableValidationNote) and isinstance(note.index, int):
            return (note.index,)
        name = getattr(note, "name", None)
        if isinstance(name, str):
            return key_path(kind, (name,))
    return ()


def _item(kind: Any) -> type | None:
    (item_kind, *_) = get_args(kind) or (None,)
    return item_kind if attrs.has(item_kind) else None


def _allowed(kind: type) -> str:
    return ", ".join(setting_of(field).key for field in fields(kind))


def _located(path: tuple[str | int, ...], problem: str) -> str:
    return f"{dotted(path)}: {problem}" if path else problem


def _origin(path: tuple[str | int, ...], origins: Mapping[str, str], file: str) -> str:
    """Where the value at ``path`` came from: the override of the longest key path
    that holds it, else the file."""
    text = dotted(path)
    holders = [
        key for key in origins if text == key or text.startswith((f"{key}.", f"{key}["))
    ]
    return origins[max(holders, key=len)] if holders else file


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the plain
    loader keeps the last and says nothing)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it, saying where
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"{key!r} is given twice", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
