"""The origin backend interface.

A backend knows how to reach one family of origins (HTTP servers and registries,
local files). It answers two questions: how big is the content and how is it
validated (``stat``), and what are the bytes of a range (``open_range``). Everything
else (pieces, retries across pieces, storage) lives above it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager

import attrs

from .._errors import OriginProtocolError


@attrs.frozen
class Credentials:
    """A user name and password (or token) for origins that want them."""

    username: str
    password: str = attrs.field(repr=False)


@attrs.frozen
class BackendOptions:
    """Settings shared by every request a backend makes.

    ``extensions`` carries options that only some backends understand.
    """

    headers: Mapping[str, str] = attrs.field(factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3
    verify_tls: bool = True
    ca_file: str | None = None
    credentials: Credentials | None = None
    extensions: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen
class OriginStat:
    """What the origin says about some content before we fetch it.

    ``location`` is where the bytes are actually read from once redirects are
    followed; the task ID never depends on it. ``request_headers`` are the headers a
    range read must send there (custom headers and any authorization obtained while
    answering the stat).
    """

    url: str
    content_length: int
    accepts_ranges: bool
    location: str = ""
    etag: str | None = None
    last_modified: str | None = None
    digest: str | None = None
    request_headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def validator(self) -> str:
        """A string that changes whenever the origin's content changes."""
        return f"{self.content_length}|{self.etag or ''}|{self.last_modified or ''}"


class Backend(abc.ABC):
    """An origin: one or two async methods plus ``aclose``."""

    #: URL schemes this backend serves, such as ``("http", "https")``.
    schemes: tuple[str, ...] = ()

    @abc.abstractmethod
    async def stat(self, url: str) -> OriginStat:
        """Look the content up without transferring it."""

    @abc.abstractmethod
    def open_range(
        self, stat: OriginStat, offset: int, length: int
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream ``length`` bytes starting at ``offset``: exactly those, or raise."""

    async def read_into(
        self, stat: OriginStat, offset: int, buffer: memoryview
    ) -> None:
        """Fill ``buffer`` with the bytes at ``offset``.

        Backends with a faster path (no intermediate chunks) override this.
        """
        filled = 0
        async with self.open_range(stat, offset, len(buffer)) as chunks:
            async for chunk in chunks:
                end = filled + len(chunk)
                if end > len(buffer):
                    raise OriginProtocolError(
                        f"origin sent more than the {len(buffer)} bytes asked for",
                        url=stat.url,
                    )
                buffer[filled:end] = chunk
                filled = end

        if filled != len(buffer):
            raise OriginProtocolError(
                f"origin body ended after {filled} of {len(buffer)} bytes",
                url=stat.url,
            )

    async def aclose(self) -> None:  # noqa: B027 (most backends hold nothing)
        """Release connections and other resources."""
