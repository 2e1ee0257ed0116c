"""The output file of a download: written in place, renamed when complete."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

import anyio
import anyio.to_thread

from ._errors import DiskFull, OutputError


class OutputFile:
    """The output file: written under a temporary name, renamed when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self._partial = self.path.with_name(
            f".{self.path.name}.{secrets.token_hex(4)}.dragonpy-partial"
        )
        self._fd: int | None = None

    async def open(self, length: int) -> None:
        await anyio.to_thread.run_sync(self._open, length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
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

    def _commit(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        try:
            os.replace(self._partial, self.path)
        except OSError as exc:
            raise _output_error(exc, self.path) from exc

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._partial.unlink(missing_ok=True)


def _output_error(exc: OSError, path: Path) -> OutputError | DiskFull:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on the device of {path}")
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}")
