"""Downloading a task: pieces from the store when held, from the origin otherwise.

One ``Downloader`` per process owns the backends and the store. A download runs in
steps: identify the task, ask the origin (unless the store holds it complete), plan
the pieces, fetch the missing ones in parallel (consecutive pieces share one range
request; each run of them is digested piece by piece, stored in one transaction and
written to the output in one worker-thread call), check the whole content's digest,
then move the output into place. A failure leaves no file under the final name; the
pieces already stored stay, so running the same download again resumes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import attrs

from ._backends import Backend, BackendOptions, Backends, OriginStat
from ._errors import (
    DigestMismatch,
    DownloadTimeout,
    DragonpyError,
    OriginProtocolError,
    StoreError,
    first_error,
)
from ._identity import DEFAULT_FILTERED_QUERY_PARAMS, blob_digest, task_id
from ._output import OutputFile, aligned_buffer
from ._pieces import Piece, piece_digest, piece_length_for, pieces_covering, plan_pieces
from ._storage import PieceStore, StorePolicy, open_store
from ._task import Task

logger = logging.getLogger("dragonpy.download")

ProgressCallback = Callable[[int, int], None]

DEFAULT_STORE_DIR: Final = Path(
    os.environ.get("DRAGONPY_STORE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dragonpy"
)
_DIGEST_ALGORITHMS: Final = {"sha256": 64, "sha512": 128}
# Consecutive missing pieces are fetched together, up to this many bytes per range
# request (and stored in one transaction): pieces stay small for range reads and
# peers, while bulk downloads pay per-request costs once per 16 MiB. See
# docs/benchmarks.md (piece length).
_FETCH_LENGTH: Final = 16 * 1024 * 1024


@attrs.frozen
class DownloadResult:
    """What a finished download did."""

    task_id: str
    path: Path
    content_length: int
    piece_count: int
    bytes_from_origin: int
    bytes_from_store: int
    duration: float
    digest: str | None


@attrs.frozen
class Download:
    """One download request. ``digest`` is ``algorithm:hex`` (sha256 or sha512)."""

    url: str
    tag: str = ""
    application: str = ""
    digest: str | None = None
    filtered_query_params: tuple[str, ...] = DEFAULT_FILTERED_QUERY_PARAMS

    # Asked for several times per download; normalizing the URL each time is waste.
    @functools.cached_property
    def task_id(self) -> str:
        return task_id(
            self.url,
            tag=self.tag,
            application=self.application,
            filtered_query_params=self.filtered_query_params,
        )

    @property
    def expected_digest(self) -> str | None:
        """The digest the content must have: given, or implied by an OCI blob URL."""
        return self.digest or blob_digest(self.url)


def check_digest_syntax(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``."""
    algorithm, _, encoded = digest.partition(":")
    width = _DIGEST_ALGORITHMS.get(algorithm)
    if width is None or len(encoded) != width or not _is_hex(encoded):
        raise ValueError(
            f"digest {digest!r} is not sha256:<64 hex digits> "
            "or sha512:<128 hex digits>"
        )
    return f"{algorithm}:{encoded.lower()}"


class Downloader:
    """Downloads through one store and one set of backends.

    Use as an async context manager; ``aclose`` closes the backends' connections.
    """

    def __init__(
        self,
        *,
        store: PieceStore | None = None,
        options: BackendOptions | None = None,
        concurrency: int = 8,
    ) -> None:
        self.store = store or open_store(DEFAULT_STORE_DIR, StorePolicy())
        self.backends = Backends(options)
        self.concurrency = concurrency

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.backends.aclose()

    async def download(
        self,
        request: Download,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Download ``request`` to ``path``; see the module docstring for the steps."""
        output = OutputFile(Path(path))
        started = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                # Leased before it is recorded, so eviction never takes it midway.
                async with _leased(self.store, request.task_id):
                    run = await self._prepare(request)
                    await output.open(run.record.content_length)
                    await run.fill(output, on_progress)
                    digest = await run.verify()
                    await output.commit()
                    await run.finish()
        except TimeoutError as exc:
            error = DownloadTimeout(
                f"download did not finish within {timeout} s; raise --timeout"
            )
            _log_failure(request, error)
            raise error from exc
        except DragonpyError as exc:
            _log_failure(request, exc)
            raise
        finally:
            await output.discard()

        result = DownloadResult(
            task_id=run.record.id,
            path=output.path,
            content_length=run.record.content_length,
            piece_count=len(run.pieces),
            bytes_from_origin=run.bytes_from_origin,
            bytes_from_store=run.bytes_from_store,
            duration=time.monotonic() - started,
            digest=digest,
        )
        logger.info(
            "download task succeeded task_id=%s bytes_origin=%d bytes_local=%d "
            "duration=%.3fs",
            result.task_id,
            result.bytes_from_origin,
            result.bytes_from_store,
            result.duration,
        )
        return result

    @asynccontextmanager
    async def open_range(
        self, request: Download, start: int = 0, end: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream bytes ``start`` to ``end`` (inclusive; None for the last byte).

        Only the pieces that cover the range are fetched; they are stored, so later
        reads of the same pieces do not touch the origin.
        """
        async with _leased(self.store, request.task_id):
            run = await self._prepare(request)
            length = run.record.content_length
            last = length - 1 if end is None else end
            numbers = pieces_covering(length, run.record.piece_length, start, last)
            yield run.stream(numbers, start, last)

    async def _prepare(self, request: Download) -> _TaskRun:
        record = await anyio.to_thread.run_sync(self.store.get_task, request.task_id)
        if record is not None and record.complete:
            stored = await anyio.to_thread.run_sync(self.store.stored_pieces, record.id)
            # Complete tasks are served without asking the origin, as long as every
            # piece is still there.
            if len(stored) == record.piece_count:
                return _TaskRun(self, None, None, record, request.expected_digest)

        backend = self.backends.for_url(request.url)
        stat = await backend.stat(request.url)
        record = Task(
            id=request.task_id,
            url=request.url,
            content_length=stat.content_length,
            piece_length=piece_length_for(stat.content_length),
            validator=stat.validator,
            digest=request.expected_digest,
            created_at=time.time(),
        )
        # Room first: the task, once recorded, could be the one evicted.
        await anyio.to_thread.run_sync(self.store.make_room, stat.content_length)
        await anyio.to_thread.run_sync(self.store.put_task, record)
        await anyio.to_thread.run_sync(self.store.reserve, stat.content_length)
        return _TaskRun(self, backend, stat, record, request.expected_digest)


class _TaskRun:
    """The pieces of one task for one download."""

    def __init__(
        self,
        downloader: Downloader,
        backend: Backend | None,
        stat: OriginStat | None,
        record: Task,
        expected_digest: str | None,
    ) -> None:
        self.store = downloader.store
        self.concurrency = downloader.concurrency
        self.backend = backend
        self.stat = stat
        self.record = record
        self.expected_digest = expected_digest
        self.pieces = plan_pieces(record.content_length, record.piece_length)
        self.bytes_from_origin = 0
        self.bytes_from_store = 0

    async def fill(
        self, output: OutputFile, on_progress: ProgressCallback | None
    ) -> None:
        """Put every piece into ``output``: stored ones copied, others fetched."""
        stored = await anyio.to_thread.run_sync(
            self.store.stored_pieces, self.record.id
        )
        done = 0
        total = self.record.content_length

        def advance(piece: Piece) -> None:
            nonlocal done
            done += piece.length
            if on_progress is not None:
                on_progress(done, total)

        # Several copies at once: each is a direct write to the disk, which takes
        # a deeper queue of them faster than one at a time.
        held = [piece for piece in self.pieces if piece.number in stored]
        copy = functools.partial(self._copy_worker, iter(held), output, advance)
        await self._in_parallel(len(held), copy)

        missing = [piece for piece in self.pieces if piece.number not in stored]
        if not missing:
            return
        if self.stat is not None and not self.stat.accepts_ranges:
            await self._fetch_sequentially(missing, output, advance)
            return

        runs = _runs(missing, max(1, _FETCH_LENGTH // self.record.piece_length))
        fetch = functools.partial(self._fetch_worker, runs, output, advance)
        await self._in_parallel(len(missing), fetch)

    async def verify(self) -> str | None:
        """Check the whole content against the expected digest, if there is one."""
        return await verify_content(self.store, self.record, self.expected_digest)

    async def finish(self) -> None:
        """Mark the task complete (its content is whole and verified) and used now."""
        if not self.record.complete:
            await anyio.to_thread.run_sync(self.store.mark_complete, self.record.id)
        await anyio.to_thread.run_sync(self.store.touch, self.record.id)

    async def stream(
        self, numbers: range, start: int, last: int
    ) -> AsyncIterator[bytes]:
        stored = await anyio.to_thread.run_sync(
            self.store.stored_pieces, self.record.id
        )
        for number in numbers:
            piece = self.pieces[number]
            data: bytes | bytearray
            if number in stored:
                data = await anyio.to_thread.run_sync(self._read_stored, piece)
            else:
                data = bytearray(piece.length)
                await self._fetch_into(piece, memoryview(data))
                await anyio.to_thread.run_sync(self._keep, [piece], data, None)
            low = max(start, piece.offset) - piece.offset
            high = min(last + 1, piece.end) - piece.offset
            yield bytes(memoryview(data)[low:high])

    async def _in_parallel(
        self, jobs: int, worker: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``concurrency`` copies of ``worker`` (fewer for fewer ``jobs``); the
        copies share one iterator of jobs, each taking the next until none is left."""
        try:
            async with anyio.create_task_group() as group:
                for _ in range(min(self.concurrency, jobs)):
                    group.start_soon(worker)
        except* DragonpyError as errors:
            # The first failure cancelled the other workers; it is the one to report.
            raise first_error(errors)  # noqa: B904

    async def _copy_worker(
        self,
        queue: Iterator[Piece],
        output: OutputFile,
        advance: Callable[[Piece], None],
    ) -> None:
        for piece in queue:
            await anyio.to_thread.run_sync(self._copy_stored, piece, output)
            self.bytes_from_store += piece.length
            advance(piece)

    async def _fetch_worker(
        self,
        queue: Iterator[list[Piece]],
        output: OutputFile,
        advance: Callable[[Piece], None],
    ) -> None:
        # One buffer per worker, reused: a fresh allocation per run would cost a
        # page fault for every 4 KiB of it. Aligned, so the output takes it uncopied.
        buffer = aligned_buffer(max(_FETCH_LENGTH, self.record.piece_length))
        for run in queue:
            data = buffer[: run[-1].end - run[0].offset]
            await self._fetch_into(run[0], data)
            await anyio.to_thread.run_sync(self._keep, run, data, output)
            for piece in run:
                advance(piece)

    async def _fetch_into(self, first: Piece, buffer: memoryview) -> None:
        """Fill ``buffer`` from the origin, starting at the offset of ``first``."""
        assert self.backend is not None and self.stat is not None
        await self.backend.read_into(self.stat, first.offset, buffer)
        self.bytes_from_origin += len(buffer)

    async def _fetch_sequentially(
        self, missing: list[Piece], output: OutputFile, advance: Callable[[Piece], None]
    ) -> None:
        """One streamed body for origins that ignore ``Range``."""
        assert self.backend is not None and self.stat is not None
        wanted = {piece.number for piece in missing}
        length = self.record.content_length
        async with self.backend.open_range(self.stat, 0, length) as chunks:
            pending = bytearray()
            pieces = iter(self.pieces)
            piece: Piece | None = next(pieces)
            async for chunk in chunks:
                pending += chunk
                while piece is not None and len(pending) >= piece.length:
                    data = pending[: piece.length]
                    del pending[: piece.length]
                    if piece.number in wanted:
                        await anyio.to_thread.run_sync(
                            self._keep, [piece], data, output
                        )
                        self.bytes_from_origin += piece.length
                        advance(piece)
                    piece = next(pieces, None)

        if piece is not None or pending:
            raise OriginProtocolError(
                f"origin sent a body of the wrong length for {length} bytes",
                url=self.record.url,
            )

    def _keep(
        self, run: list[Piece], data: bytearray | memoryview, output: OutputFile | None
    ) -> None:
        """Digest and store consecutive fetched pieces, and write them to the output."""
        view = memoryview(data)
        start = run[0].offset
        digested = []
        for piece in run:
            part = view[piece.offset - start : piece.end - start]
            digest = piece_digest(part)
            digested.append(
                (Piece(piece.number, piece.offset, piece.length, digest), part)
            )
        self.store.put_pieces(self.record.id, digested)
        if output is not None:
            output.write(start, view)

    def _copy_stored(self, piece: Piece, output: OutputFile) -> None:
        with self.store.read_piece(self.record.id, piece.number) as view:
            if view is None:
                raise StoreError(f"piece {piece.number} of {self.record.id} vanished")
            output.write(piece.offset, view)

    def _read_stored(self, piece: Piece) -> bytes:
        with self.store.read_piece(self.record.id, piece.number) as view:
            if view is None:
                raise StoreError(f"piece {piece.number} of {self.record.id} vanished")
            return bytes(view)


async def verify_content(
    store: PieceStore, record: Task, expected: str | None
) -> str | None:
    """Check a fully stored task's content against ``expected`` (``algorithm:hex``).

    A mismatch removes the task from the store, which keeps nothing that failed
    verification, and raises ``DigestMismatch``.
    """
    if expected is None:
        return None
    if record.complete and record.digest == expected:
        return expected

    algorithm, _, encoded = expected.partition(":")
    actual = await anyio.to_thread.run_sync(_hash_stored, store, record, algorithm)
    if actual != encoded:
        await anyio.to_thread.run_sync(store.remove_task, record.id)
        raise DigestMismatch(
            f"content digest is {algorithm}:{actual}, expected {expected}",
            expected=expected,
            actual=f"{algorithm}:{actual}",
        )
    return expected


def _hash_stored(store: PieceStore, record: Task, algorithm: str) -> str:
    content = hashlib.new(algorithm)
    for number in range(record.piece_count):
        with store.read_piece(record.id, number) as view:
            if view is None:
                raise StoreError(f"piece {number} of {record.id} vanished")
            content.update(view)
    return content.hexdigest()


def _log_failure(request: Download, error: DragonpyError) -> None:
    logger.info(
        "download task failed task_id=%s url=%s reason=%s",
        request.task_id,
        _without_credentials(request.url),
        error,
    )


def _without_credentials(url: str) -> str:
    """The URL with any ``user:password@`` removed: credentials are never logged."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@asynccontextmanager
async def _leased(store: PieceStore, task_id: str) -> AsyncIterator[None]:
    """``store.lease`` with its transactions off the event loop."""
    lease = store.lease(task_id)
    await anyio.to_thread.run_sync(lease.__enter__)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lease.__exit__, None, None, None)


def _runs(pieces: list[Piece], longest: int) -> Iterator[list[Piece]]:
    """Split pieces into runs of consecutive numbers, at most ``longest`` long."""
    run: list[Piece] = []
    for piece in pieces:
        if run and (len(run) == longest or piece.number != run[-1].number + 1):
            yield run
            run = []
        run.append(piece)
    if run:
        yield run


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdefABCDEF" for character in text)
