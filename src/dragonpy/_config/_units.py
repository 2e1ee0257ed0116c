"""Sizes and durations as people write them: ``20GiB``, ``500MB``, ``30s``, ``720h``."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = "_kmgt"
_DURATION: Final = re.compile(
    r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE
)
_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """Bytes in ``10GiB``, ``500MB``, ``1.5g`` or ``1024``."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size like 20GiB, 500MB or 1024")
    number, unit, binary = match.groups()
    power = _SIZE_UNITS.index(unit.lower() or "_")
    # Exactly, however large: a float would round sizes past 2**53.
    return int(Fraction(number) * (1024 if binary else 1000) ** power)


def format_size(size: int) -> str:
    """The shortest exact way to write ``size``: ``20GiB``, ``100MB`` or ``1000``."""
    for base, suffix in ((1024, "iB"), (1000, "B")):
        for power in range(len(_SIZE_UNITS) - 1, 0, -1):
            unit = base**power
            if size and size % unit == 0:
                return f"{size // unit}{_SIZE_UNITS[power].upper()}{suffix}"
    return str(size)


def parse_duration(text: str) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``720h``, ``7d`` or ``2.5``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 24h or 500ms")
    number, unit = match.groups()
    return float(number) * _SECONDS[(unit or "s").lower()]


def format_duration(seconds: float) -> str:
    """The shortest exact way to write ``seconds``: ``7d``, ``15s`` or ``250ms``."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / _SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds!r}s"
