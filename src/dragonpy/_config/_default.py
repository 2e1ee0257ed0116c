"""Writing settings out for people: the commented default file, and the table of
keys, Dragonfly keys, options and variables."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from ._fields import SAME, setting_of
from ._tree import fields, is_section, keys, to_data

_WIDTH = 88
_RELOADED = " (reloaded on SIGHUP)"


def default_file(kind: type, name: str) -> str:
    """Every key of ``kind`` at its default, each under a comment saying what it
    does: a file that loads back to the defaults."""
    header = [
        f"# dragonpy {name} configuration: every key at its default value.",
        "# Keys marked as reloaded take a new value on SIGHUP; the others need a",
        "# restart. Options and DRAGONPY_* variables override this file.",
    ]
    return "\n".join([*header, *_section(kind(), kind, 0)]) + "\n"


def _section(value: object, kind: type, depth: int) -> Iterator[str]:
    indent = "  " * depth
    for field in fields(kind):
        setting = setting_of(field)
        if depth == 0:
            yield ""
        help = setting.help + (_RELOADED if setting.reload else "")
        for line in textwrap.wrap(help, _WIDTH - len(indent) - 2):
            yield f"{indent}# {line}"
        inner = getattr(value, field.name)
        if is_section(field.type):
            yield f"{indent}{setting.key}:"
            yield from _section(inner, field.type, depth + 1)
        else:
            yield from _leaf(setting.key, to_data(inner, field.type), indent)


def _leaf(key: str, data: Any, indent: str) -> Iterator[str]:
    text = yaml.safe_dump({key: data}, default_flow_style=False, sort_keys=False)
    for line in text.splitlines():
        yield indent + line


def key_table(kind: type, options: Mapping[str, str]) -> str:
    """A Markdown table of every key of ``kind``: its Dragonfly key, the option
    (from ``options``, by key path) and the variable that override it, and
    whether SIGHUP reloads it."""
    rows = [
        "| key | Dragonfly | option | variable | SIGHUP |",
        "|---|---|---|---|---|",
    ]
    for key in keys(kind):
        dragonfly = key.path if key.setting.dragonfly == SAME else key.setting.dragonfly
        option = options.get(key.path, "")
        reload = "reloaded" if key.setting.reload else "restart"
        cells = [_code(key.path), _code(dragonfly), _code(option), _code(key.env)]
        rows.append(f"| {' | '.join(cells)} | {reload} |")
    return "\n".join(rows) + "\n"


def _code(text: str) -> str:
    if not text:
        return "—"
    return f"`{text}`" if re.fullmatch(r"[\w./\[\]-]+", text) else text
