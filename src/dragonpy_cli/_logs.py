"""Log lines for people (text) and for collectors (JSON, one object per line),
with credentials taken out of both."""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any, Final

# Attributes every record has; anything else came in through ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
_SECRETS: Final = (
    # user:password@ in a URL
    (re.compile(r"(?<=://)[^/\s@\"]+@"), "***@"),
    # the value of an Authorization header
    (re.compile(r"\b(Bearer|Basic)\s+[\w.~+/=-]+", re.IGNORECASE), r"\1 ***"),
    # signed URLs and tokens in query strings
    (
        re.compile(
            r"([?&][\w.-]*(?:token|signature|password|secret|credential)[\w.-]*=)"
            r"[^&\s'\"]*",
            re.IGNORECASE,
        ),
        r"\1***",
    ),
)


def redact(text: str) -> str:
    """``text`` without the credentials it may carry."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed with ``extra=`` (task_id, peer_id, ...)."""
    return {
        name: value for name, value in vars(record).items() if name not in _STANDARD
    }


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = "".join(
            f" {name}={value}" for name, value in extra_fields(record).items()
        )
        return super().formatMessage(record) + fields

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the fields
    passed with ``extra=``; ``exception`` holds a traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.UTC
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extra_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # The patterns stop at quotes and spaces, so they never span two values.
        return redact(json.dumps(line, default=str))


def formatter(name: str) -> logging.Formatter:
    """The formatter of a ``log.format``: ``text`` or ``json``."""
    return JsonFormatter() if name == "json" else TextFormatter()
