"""The exceptions dragonpy raises.

Every error a caller can act on is a ``DragonpyError``. Each class carries the exit code
that ``dragonpy`` uses for it, so scripts can tell conditions apart::

    DragonpyError                      1   anything else
    ├── ConfigError                    2   a configuration file, variable or option
    │                                      is wrong (also a ``ValueError``)
    ├── UnsupportedURL                 3   no backend for the scheme, bad URL
    ├── OriginError                        the origin could not give us the bytes
    │   ├── OriginUnreachable          4   DNS, connect, TLS or transport failure
    │   ├── OriginTimeout              5   the origin went silent for too long
    │   ├── OriginStatusError          6   an unexpected HTTP status (404, 500, ...)
    │   │   └── OriginAuthError        7   401 or 403: credentials missing or refused
    │   ├── RangeNotSupported          8   the origin ignored a ``Range`` request
    │   └── OriginProtocolError        9   truncated body, wrong length, bad headers
    ├── DigestMismatch                10   bytes do not match the expected digest
    ├── OutputError                   11   the output path cannot be written
    ├── DiskFull                      12   no space left for the output or the store
    ├── StoreError                    13   the piece store is unusable
    ├── DownloadTimeout               14   the whole download exceeded its deadline
    ├── TransportError                15   a parent peer unreachable or misbehaving
    └── PieceNotFound                 16   a parent peer does not hold the piece

Foreign exceptions (httpx, OSError, lmdb) are translated where they are caught, with
the original chained as ``__cause__``.
"""

from __future__ import annotations


class DragonpyError(Exception):
    """Base class of every error dragonpy raises on purpose."""

    exit_code = 1


class ConfigError(DragonpyError, ValueError):
    """A configuration that cannot be used; each line of the message names where
    the value came from (a file, a variable, an option), its key and what is
    allowed."""

    exit_code = 2


class UnsupportedURL(DragonpyError):
    exit_code = 3


class OriginError(DragonpyError):
    """The origin (HTTP server, registry, file system) failed to deliver."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class OriginUnreachable(OriginError):
    exit_code = 4


class OriginTimeout(OriginError):
    exit_code = 5


class OriginStatusError(OriginError):
    exit_code = 6

    def __init__(self, message: str, *, url: str = "", status: int = 0) -> None:
        super().__init__(message, url=url)
        self.status = status


class OriginAuthError(OriginStatusError):
    exit_code = 7


class RangeNotSupported(OriginError):
    exit_code = 8


class OriginProtocolError(OriginError):
    exit_code = 9


class DigestMismatch(DragonpyError):
    exit_code = 10

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class OutputError(DragonpyError):
    exit_code = 11


class DiskFull(DragonpyError):
    exit_code = 12


class StoreError(DragonpyError):
    exit_code = 13


class DownloadTimeout(DragonpyError):
    exit_code = 14


class TransportError(DragonpyError):
    """A parent peer could not be reached, or broke the piece protocol."""

    exit_code = 15

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class ParentBusy(DragonpyError):
    """A parent peer is sending all the pieces it may at once, and as many more wait
    their turn there: the piece is better asked of another parent."""

    exit_code = 17

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class PieceNotFound(DragonpyError):
    """A parent peer does not hold that piece (or does not know the task)."""

    exit_code = 16

    def __init__(self, message: str, *, task_id: str = "", number: int = -1) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.number = number


def first_error(group: BaseExceptionGroup[DragonpyError]) -> DragonpyError:
    """The first error of a task group's failures: the one that cancelled the rest."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first
