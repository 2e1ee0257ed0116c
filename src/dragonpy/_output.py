"""The output file of a download: written in place, renamed when complete.

Whole blocks go to the disk with ``O_DIRECT``, past the page cache. A download keeps
its bytes in the piece store, which the page cache already holds; caching them a
second time for the output would double the memory a large download takes, and on a
machine where fresh pages are expensive (a virtual machine returning free memory to
its host) it doubles the time too. The pieces' partial blocks at the end, and file
systems without ``O_DIRECT`` (tmpfs), are written through the page cache as usual.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import secrets
import threading
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from ._errors import DiskFull, OutputError

#: Direct I/O needs the buffer, the offset and the length aligned to the device's
#: logical block; a page is a multiple of it on every device Linux supports.
BLOCK: Final = mmap.PAGESIZE

#: Bytes copied into an aligned buffer and written per direct write.
_BOUNCE_LENGTH: Final = 4 * 1024 * 1024


def aligned_buffer(length: int) -> memoryview:
    """A writable buffer that starts on a page boundary, as direct I/O requires.

    Bytes received into one go to the disk without a copy (see ``OutputFile.write``).
    """
    # An anonymous map always starts on a page boundary.
    return memoryview(mmap.mmap(-1, length))


class OutputFile:
    """The output file: written under a temporary name, renamed when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self._partial = self.path.with_name(
            f".{self.path.name}.{secrets.token_hex(4)}.dragonpy-partial"
        )
        self._fd: int | None = None
        self._direct: _DirectWriter | None = None

    async def open(self, length: int) -> None:
        await anyio.to_thread.run_sync(self._open, length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``; called from worker threads, in any order."""
        assert self._fd is not None
        view = memoryview(data)
        try:
            if self._direct is not None and offset % BLOCK == 0:
                whole = len(view) - len(view) % BLOCK
                self._direct.write(offset, view[:whole])
                view, offset = view[whole:], offset + whole
            _write_all(self._fd, offset, view)
        except OSError as exc:
            raise _output_error(exc, self.path) from exc

    async def commit(self) -> None:
        await anyio.to_thread.run_sync(self._commit)

    async def discard(self) -> None:
        """Close and delete the partial file, if the download did not commit it."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._discard)

    def _open(self, length: int) -> None:
        if self.path.is_dir():
            raise OutputError(f"output path {self.path} is a directory")
        try:
            self._fd = os.open(
                self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
            )
            if length:
                # Reserve the space now: a full disk fails fast, not after the transfer.
                os.posix_fallocate(self._fd, 0, length)
        except OSError as exc:
            raise _output_error(exc, self.path) from exc

        self._direct = _DirectWriter.open(self._partial)

    def _commit(self) -> None:
        assert self._fd is not None
        self._close()
        try:
            os.replace(self._partial, self.path)
        except OSError as exc:
            raise _output_error(exc, self.path) from exc

    def _discard(self) -> None:
        if self._fd is not None:
            self._close()
            self._partial.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _DirectWriter:
    """Writes whole blocks of one file with ``O_DIRECT``.

    Bytes in a buffer that starts on a block (one from ``aligned_buffer``) are
    written as they are. Others (a view into the store's map, which starts past a
    page header) are copied into an aligned buffer of the writing thread first: a
    copy in memory costs a tenth of what a fresh page in the cache does here.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffers = threading.local()

    @classmethod
    def open(cls, path: Path) -> _DirectWriter | None:
        """A writer for ``path``, or None where its file system refuses direct I/O."""
        try:
            return cls(os.open(path, os.O_WRONLY | os.O_DIRECT))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise _output_error(exc, path) from exc
            return None

    def write(self, offset: int, view: memoryview) -> None:
        if _starts_on_block(view):
            _write_all(self._fd, offset, view)
            return
        buffer = self._buffer()
        for start in range(0, len(view), _BOUNCE_LENGTH):
            part = view[start : start + _BOUNCE_LENGTH]
            buffer[: len(part)] = part
            _write_all(self._fd, offset + start, buffer[: len(part)])

    def close(self) -> None:
        os.close(self._fd)

    def _buffer(self) -> memoryview:
        buffer: memoryview | None = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = aligned_buffer(_BOUNCE_LENGTH)
            self._buffers.buffer = buffer
        return buffer


def _starts_on_block(view: memoryview) -> bool:
    # ctypes finds a buffer's address only through a writable export; read-only
    # views (the store's map) take the copy.
    if view.readonly or not view:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % BLOCK == 0


def _write_all(fd: int, offset: int, view: memoryview) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _output_error(exc: OSError, path: Path) -> OutputError | DiskFull:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on the device of {path}")
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}")
