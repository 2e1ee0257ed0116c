"""``file://`` origins: content on a local or mounted file system."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import unquote, urlsplit

import anyio.to_thread

from .._errors import OriginProtocolError, OriginStatusError, UnsupportedURL
from ._base import Backend, OriginStat

_CHUNK: Final = 1024 * 1024


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise UnsupportedURL(
            f"file URLs name a local path (file:///path/to/file), got {url!r}"
        )
    return unquote(parts.path)


class FileBackend(Backend):
    """Reads ranges with positional reads in worker threads."""

    schemes = ("file",)

    async def stat(self, url: str) -> OriginStat:
        path = _path_of(url)
        try:
            info = await anyio.to_thread.run_sync(os.stat, path)
        except FileNotFoundError as exc:
            raise OriginStatusError(
                f"no such file: {path}", url=url, status=404
            ) from exc
        except PermissionError as exc:
            raise OriginStatusError(
                f"permission denied: {path}", url=url, status=403
            ) from exc

        if not os.path.isfile(path):
            raise OriginStatusError(f"not a regular file: {path}", url=url, status=400)
        return OriginStat(
            url=url,
            content_length=info.st_size,
            accepts_ranges=True,
            location=url,
            etag=f"{info.st_ino:x}-{info.st_mtime_ns:x}",
        )

    @asynccontextmanager
    async def open_range(
        self, stat: OriginStat, offset: int, length: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        fd = await anyio.to_thread.run_sync(os.open, _path_of(stat.url), os.O_RDONLY)
        try:
            yield self._chunks(fd, stat, offset, length)
        finally:
            os.close(fd)

    async def read_into(
        self, stat: OriginStat, offset: int, buffer: memoryview
    ) -> None:
        def read() -> None:
            fd = os.open(_path_of(stat.url), os.O_RDONLY)
            try:
                filled = 0
                while filled < len(buffer):
                    count = os.preadv(fd, [buffer[filled:]], offset + filled)
                    if count == 0:
                        raise OriginProtocolError(
                            f"file ended after {offset + filled} bytes", url=stat.url
                        )
                    filled += count
            finally:
                os.close(fd)

        await anyio.to_thread.run_sync(read)

    async def _chunks(
        self, fd: int, stat: OriginStat, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        end = offset + length
        while offset < end:
            chunk = await anyio.to_thread.run_sync(
                os.pread, fd, min(_CHUNK, end - offset), offset
            )
            if not chunk:
                raise OriginProtocolError(
                    f"file ended after {offset} bytes", url=stat.url
                )
            yield chunk
            offset += len(chunk)
