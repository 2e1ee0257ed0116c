"""JSON bodies of dragonpy's own HTTP APIs: the scheduler's and the daemon's
control socket.

Every message is an attrs class structured by ``cattrs`` with unknown keys
forbidden, so a misspelled or mistyped field is an error that names its path. Kept
apart from the scheduler so that ``dragonpy get`` can speak to a daemon without
importing the scheduler.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

import cattrs

converter: Final = cattrs.Converter(forbid_extra_keys=True)

T = TypeVar("T")


class MessageError(ValueError):
    """A message that is not valid JSON or does not fit its type."""


def encode(message: object) -> bytes:
    return json.dumps(converter.unstructure(message), separators=(",", ":")).encode()


def decode(data: bytes, kind: type[T]) -> T:
    """Parse ``data`` as a ``kind``; ``MessageError`` names what was wrong."""
    try:
        raw: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"body is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageError(f"{kind.__name__} must be a JSON object")
    try:
        return converter.structure(raw, kind)
    except cattrs.BaseValidationError as exc:
        details = "; ".join(cattrs.transform_error(exc, path=kind.__name__))
        raise MessageError(details) from exc
    except (TypeError, ValueError) as exc:
        raise MessageError(f"{kind.__name__}: {exc}") from exc
