"""One task downloaded through the swarm.

The scheduler decides, per task, who fetches from the origin: this peer (role
``fetcher``) or someone else, in which case this peer takes pieces from the parents
the scheduler lists. The peer registers, then runs three kinds of jobs at once:

- a *watcher* long-polls the scheduler for a new view (parents, the pieces they
  hold, their digests, this peer's role) and wakes the workers when one arrives;
- *workers* take the next missing piece: from a parent that holds it (the least
  busy one), or from the origin when this peer is the fetcher and no parent holds
  it. Every piece is checked against the digest the fetcher computed before it is
  stored, so it can be served onward at once;
- a *reporter* sends stored pieces and parent failures to the scheduler, as many as
  piled up while the previous report was on its way.

A download wants the whole task, or only the pieces covering some byte ranges (a
range read without prefetch); ranges and the whole task can be added while it runs,
and the pieces of ranges come first. A download of ranges ends once it holds them:
the peer then serves those pieces, and leaves the fetching to others.

A parent that fails is blocked for this download and reported; the scheduler
replaces it. When the scheduler cannot be reached the download goes on with the
view it has, re-registers once the scheduler is back, and after ``fallback_after``
seconds without it fetches what is missing from the origin (loudly: a warning and a
metric).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread
import attrs

from .._backends import BackendOptions, Backends, OriginStat
from .._download import Download, verify_content
from .._errors import (
    DragonpyError,
    OriginError,
    ParentBusy,
    PieceNotFound,
    StoreError,
    TransportError,
    first_error,
)
from .._identity import peer_id
from .._pieces import Piece, piece_digest, piece_length_for, pieces_covering
from .._scheduler import (
    FailureKind,
    ParentFailure,
    ParentInfo,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceInfo,
    PieceReport,
    Priority,
    ReportedPiece,
    Role,
    SchedulerForgot,
    SchedulerRefused,
    SchedulerUnreachable,
)
from .._task import Task
from .._telemetry import tracer

if TYPE_CHECKING:
    from ._node import Daemon

logger = logging.getLogger("dragonpy.daemon")

_POLL_WAIT: Final = 20.0
_REPORT_LINGER: Final = 0.02
_RETRY_DELAYS: Final = (0.1, 0.2, 0.5, 1.0, 2.0)
# Requests outstanding at one parent: about what it delivers in this long, so that
# a fast link stays busy while a slow parent does not queue up pieces that others
# could give sooner; between one and ``_PER_PARENT``.
_PARENT_QUEUE: Final = 0.5
_PER_PARENT: Final = 6
# A parent that answered "busy" is not asked again for this long.
_BUSY_PAUSE: Final = 0.25


class TaskFailed(DragonpyError):
    """The task cannot be downloaded: the origin failed it for the whole swarm."""

    exit_code = 6


@attrs.frozen
class SwarmResult:
    task_id: str
    peer_id: str
    content_length: int
    #: Bytes by source: local, peer, seed, origin.
    bytes: dict[str, int]
    duration: float


@attrs.define
class _Job:
    number: int
    parent: ParentInfo | None  # None: the origin


class SwarmDownload:
    """Downloads ``request`` into the node's store through the swarm: the whole
    task, or only the bytes of ``wanted`` when ``whole`` is false."""

    def __init__(
        self,
        node: Daemon,
        request: Download,
        *,
        headers: dict[str, str] | None = None,
        wanted: tuple[int, int] | None = None,
        whole: bool = True,
        priority: Priority = Priority.DEFAULT,
        replaces: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.node = node
        self.store = node.store
        self.request = request
        self.task_id = request.task_id
        self.headers = headers or {}
        # Headers (credentials, say) belong to this request: they get backends of
        # their own rather than the node's shared ones.
        self.backends = (
            Backends(BackendOptions(headers=self.headers)) if headers else node.backends
        )
        #: Byte ranges (start, end inclusive) wanted, whose pieces are not known yet.
        self.ranges: list[tuple[int, int]] = [] if wanted is None else [wanted]
        #: Pieces to fetch before the others, in order: those of the ranges.
        self.wanted: list[int] = []
        self.whole = whole
        self.priority = priority
        #: This host's earlier peer of the task, done, whose place this one takes.
        self.replaces = replaces
        #: Set once the download holds what it wanted: it takes no more wants.
        self.closing = False
        self._wanted_changed = False
        self.on_progress = on_progress
        self.peer_id = peer_id(node.host.ip, node.host.hostname, seed=node.host.seed)

        self.view: PeerView | None = None
        self.digests: dict[int, str] = {}
        #: The pieces each parent in the view holds.
        self.parent_pieces: dict[str, set[int]] = {}
        self._rarest: list[int] | None = None
        self.record: Task | None = None
        self.done_bytes = 0
        self.held: dict[int, str] = {}
        self.in_flight: set[int] = set()
        self.origin_in_flight = 0
        self.parent_load: dict[str, int] = {}
        #: Bytes per second each parent delivered its recent pieces at, and the
        #: fastest of them.
        self.parent_rate: dict[str, float] = {}
        self._fastest_rate = 0.0
        #: Parents that answered "busy", and when they may be asked again.
        self.busy_until: dict[str, float] = {}
        #: Requests a parent that answered "busy" takes from us at once, and the
        #: pieces it has delivered since the last change of that number.
        self.parent_window: dict[str, int] = {}
        self._window_progress: dict[str, int] = {}
        self.blocked: set[str] = set()
        self.misses: set[tuple[str, int]] = set()
        self.bytes = dict.fromkeys(("local", "peer", "seed", "origin"), 0)
        #: Where the pieces this download brought came from (others: ``local``).
        self.sources: dict[int, str] = {}
        self.origin_allowed = False
        self._stat: OriginStat | None = None
        self._stat_lock = anyio.Lock()
        self._whole_lock = anyio.Lock()
        self._changed = anyio.Event()
        self._reports: list[ReportedPiece] = []
        self._failures: list[ParentFailure] = []
        self._lengths_reported = False
        self._report_ready = anyio.Event()
        self._report_lock = anyio.Lock()
        self._scheduler_lost_at: float | None = None
        #: Why the download ended without the whole task, once it did.
        self.failure: BaseException | None = None

    # The whole download

    async def run(self) -> SwarmResult:
        """Download what is wanted; the span of the task is the parent of its
        scheduler calls and piece transfers."""
        attributes = {
            "dragonpy.task_id": self.task_id,
            "dragonpy.peer_id": self.peer_id,
            "dragonpy.host_id": self.node.host.id,
        }
        with tracer.start_as_current_span("download", attributes=attributes) as span:
            result = await self._run()
            for source, count in result.bytes.items():
                span.set_attribute(f"dragonpy.bytes.{source}", count)
            return result

    async def _run(self) -> SwarmResult:
        started = time.monotonic()
        self.node.metrics.tasks_running.inc()
        try:
            await self._load_held()
            self._map_ranges()
            if not self._done():
                await self._register()
                await self._download()
            self.closing = True
            await self._finish()
        except BaseException as exc:
            self.failure = exc
            self._wake()
            self.node.metrics.tasks.labels("failed").inc()
            reason = str(exc) or type(exc).__name__
            self._log("failed", started, f" reason={reason!r}")
            with anyio.CancelScope(shield=True):
                await self._tell_finished(PeerFinished(False, self._failure(exc)))
            raise
        finally:
            self.node.metrics.tasks_running.dec()
            if self.backends is not self.node.backends:
                await self.backends.aclose()
        self.node.metrics.tasks.labels("succeeded").inc()
        self._log("succeeded", started, "")
        assert self.record is not None
        return SwarmResult(
            self.task_id,
            self.peer_id,
            self.record.content_length,
            dict(self.bytes),
            time.monotonic() - started,
        )

    # Following it

    def want(self, wanted: tuple[int, int] | None, *, whole: bool) -> bool:
        """Add a byte range to fetch first, and the whole task if ``whole``; False
        when the download is ending and a new one must be started instead."""
        if self.closing:
            return False
        self.whole = self.whole or whole
        if wanted is not None:
            self.ranges.append(wanted)
            self._map_ranges()
        self._wake()
        return True

    def source_of(self, number: int) -> str:
        """Where stored piece ``number`` came from, for this download."""
        return self.sources.get(number, "local")

    def source(self, wanted: tuple[int, int] | None) -> str:
        """Where the bytes of ``wanted`` (or all) come from, as far as is known
        now: ``local`` when they are stored, else ``origin`` for the fetcher, else
        ``seed`` when a seed is among the parents, else ``peer``."""
        record = self.record
        if record is not None:
            start, end = (0, record.content_length - 1) if wanted is None else wanted
            last = min(end, record.content_length - 1)
            if start > last:
                return "local"  # nothing to send
            numbers = pieces_covering(
                record.content_length, record.piece_length, start, last
            )
            if all(number in self.held for number in numbers):
                return "local"
        if self._role() is Role.FETCHER:
            return "origin"
        parents = [] if self.view is None else self.view.parents
        return "seed" if any(parent.seed for parent in parents) else "peer"

    async def wait_for_task(self) -> Task:
        """The task's record, once its length is known."""
        while True:
            changed = self._changed
            self._raise_failure()
            if self.record is not None:
                return self.record
            await changed.wait()

    async def wait_for_piece(self, number: int) -> None:
        """Return once piece ``number`` is stored (and so verified)."""
        while True:
            changed = self._changed
            self._raise_failure()
            if number in self.held:
                return
            await changed.wait()

    def _raise_failure(self) -> None:
        if self.failure is None:
            return
        if isinstance(self.failure, DragonpyError):
            raise self.failure
        raise TaskFailed(f"the download stopped: {self.failure!r}")

    async def _load_held(self) -> None:
        self.record = await anyio.to_thread.run_sync(self.store.get_task, self.task_id)
        if self.record is None:
            return
        self.held = await anyio.to_thread.run_sync(
            self.store.stored_pieces, self.task_id
        )
        for number in self.held:
            self.bytes["local"] += self._piece(number).length
        self.done_bytes = self.bytes["local"]
        self.node.metrics.bytes.labels("local").inc(self.done_bytes)
        self._wake()  # those following the download may need no more than that

    async def _register(self) -> None:
        if self.node.scheduler is None:
            self._go_to_origin("no scheduler configured", loudly=False)
            return
        try:
            view = await self._register_announced()
        except SchedulerUnreachable as exc:
            self.node.metrics.failures.labels("scheduler_unreachable").inc()
            self._go_to_origin(f"scheduler unreachable ({exc})", loudly=True)
            return
        await self._accept(view, fresh=True)

    async def _register_announced(self) -> PeerView:
        """Register; a scheduler that does not know this host (it came up after
        the daemon's last announce, or restarted since) hears the announce first."""
        assert self.node.scheduler is not None
        try:
            return await self.node.scheduler.register(self._registration())
        except SchedulerForgot:
            await self.node.announce()
            return await self.node.scheduler.register(self._registration())

    def _registration(self, *, resumed: bool = False) -> PeerRegister:
        record = self.record
        return PeerRegister(
            peer_id=self.peer_id,
            host_id=self.node.host.id,
            task_id=self.task_id,
            url=self.request.url,
            headers=self.headers,
            tag=self.request.tag,
            application=self.request.application,
            digest=self.request.expected_digest,
            content_length=None if record is None else record.content_length,
            piece_length=None if record is None else record.piece_length,
            wanted=self.wanted,
            held=[PieceInfo(n, digest) for n, digest in sorted(self.held.items())],
            resumed=resumed,
            was_fetcher=resumed and self._role() is Role.FETCHER,
            priority=self.priority,
            replaces=None if resumed else self.replaces,
        )

    async def _download(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                if self.node.scheduler is not None and self.view is not None:
                    group.start_soon(self._watch)
                    group.start_soon(self._report_forever)
                # Wants may arrive as the last worker leaves: workers start again
                # until, with nothing awaited in between, the download is done.
                while not self._done():
                    async with anyio.create_task_group() as workers:
                        for _ in range(self.node.config.concurrency):
                            workers.start_soon(self._work)
                self.closing = True
                await self._flush_reports()
                group.cancel_scope.cancel()
        except* DragonpyError as errors:
            raise first_error(errors) from None

    async def _finish(self) -> None:
        assert self.record is not None
        record = await anyio.to_thread.run_sync(self.store.get_task, self.task_id)
        if record is None:
            raise StoreError(f"task {self.task_id} left the store mid-download")
        if self._complete():
            await verify_content(self.store, record, self.request.expected_digest)
            if not record.complete:
                await anyio.to_thread.run_sync(self.store.mark_complete, self.task_id)
        await anyio.to_thread.run_sync(self.store.touch, self.task_id)
        await self._tell_finished(PeerFinished(True, partial=not self._complete()))
        if self.node.scheduler is not None:
            self.node.finished[self.task_id] = self._registration()

    # Workers

    async def _work(self) -> None:
        while not self._done():
            job = await self._next_job()
            if job is None:
                return
            self.in_flight.add(job.number)
            try:
                if job.parent is None:
                    await self._fetch_from_origin(job.number)
                else:
                    await self._fetch_from_parent(job.number, job.parent)
            finally:
                if job.parent is None:
                    self.origin_in_flight -= 1
                self.in_flight.discard(job.number)
                self._wake()

    async def _next_job(self) -> _Job | None:
        """The next piece to fetch, waiting for news when none can be had yet."""
        while True:
            if self._done():
                return None
            changed = self._changed
            if self.record is None and self._role() is Role.FETCHER:
                await self._learn_from_origin()
                continue
            job = self._pick()
            if job is not None:
                return job
            await self._wait_for_news(changed)

    async def _wait_for_news(self, changed: anyio.Event) -> None:
        deadline = self._fallback_deadline()
        if deadline is None:
            await changed.wait()
            return
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await changed.wait()
        # The scheduler may have come back meanwhile: ask again.
        deadline = self._fallback_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            self.node.metrics.failures.labels("scheduler_unreachable").inc()
            self._go_to_origin("scheduler unreachable too long", loudly=True)

    def _pick(self) -> _Job | None:
        record = self.record
        if record is None:
            return None
        parents = self._usable_parents()
        now = time.monotonic()
        for number in self._order(record.piece_count):
            # A piece is taken from parents only once its digest is known.
            holders = [
                parent
                for parent in parents
                if number in self.digests
                and number in self.parent_pieces[parent.peer_id]
                and (parent.peer_id, number) not in self.misses
            ]
            if holders:
                # A piece some parent holds never goes to the origin, even while
                # every holder is busy.
                ready = [p for p in holders if self._ready(p, now)]
                if ready:
                    parent = min(ready, key=self._expected_wait)
                    if self._load_of(parent) < self._queue_limit(parent, record):
                        self.parent_load[parent.peer_id] = self._load_of(parent) + 1
                        return _Job(number, parent)
                continue
            if self._may_fetch_from_origin():
                self.origin_in_flight += 1
                return _Job(number, None)
        return None

    def _order(self, count: int) -> list[int]:
        """Missing pieces not being fetched: wanted, then demanded, then the rest
        when the whole task is wanted, rarest first."""
        first = [*self.wanted]
        if self.view is not None and self.view.role is Role.FETCHER:
            first += self.view.demanded
        rest = self._rarest_first(count) if self.whole else []
        seen: set[int] = set()
        order = []
        for number in [*first, *rest]:
            if (
                0 <= number < count
                and number not in seen
                and number not in self.held
                and number not in self.in_flight
            ):
                seen.add(number)
                order.append(number)
        return order

    def _rarest_first(self, count: int) -> list[int]:
        """Every piece, those fewest parents hold first (ties in order): a piece only
        one parent holds is taken while that parent is there to give it, and then
        this peer can give it to others. Kept until the view changes."""
        if self._rarest is None or len(self._rarest) != count:
            holders = [0] * count
            for peer_id, numbers in self.parent_pieces.items():
                if peer_id not in self.blocked:
                    for number in numbers:
                        if number < count:
                            holders[number] += 1
            self._rarest = sorted(range(count), key=holders.__getitem__)
        return self._rarest

    def _usable_parents(self) -> list[ParentInfo]:
        if self.view is None:
            return []
        parents = [p for p in self.view.parents if p.peer_id not in self.blocked]
        random.shuffle(parents)  # spread equal loads over parents
        return parents

    def _may_fetch_from_origin(self) -> bool:
        if self.origin_in_flight >= self.node.config.origin_concurrency:
            return False
        return self.origin_allowed or self._role() is Role.FETCHER

    def _load_of(self, parent: ParentInfo) -> int:
        return self.parent_load.get(parent.peer_id, 0)

    def _ready(self, parent: ParentInfo, now: float) -> bool:
        """Whether ``parent`` may be asked now (it did not say "busy" just now)."""
        return self.busy_until.get(parent.peer_id, 0.0) <= now

    def _expected_wait(self, parent: ParentInfo) -> float:
        """About how long a piece asked of ``parent`` now would take: its requests
        outstanding and this one, at the rate it delivered lately. A seed on a fast
        link then serves more than a peer on a slow one. A parent not measured yet
        counts as the fastest, so that it is tried."""
        rate = self.parent_rate.get(parent.peer_id) or self._fastest_rate or 1.0
        return (self._load_of(parent) + 1) / rate

    def _queue_limit(self, parent: ParentInfo, record: Task) -> int:
        rate = self.parent_rate.get(parent.peer_id)
        if rate is None:
            limit = 2  # unmeasured: one piece on its way while another is asked for
        else:
            pieces = rate * _PARENT_QUEUE / record.piece_length
            limit = min(_PER_PARENT, 1 + int(pieces))
        return min(limit, self.parent_window.get(parent.peer_id, limit))

    def _refused(self, parent_id: str) -> None:
        """A parent answered "busy": ask it for one piece fewer at once (at least
        one), so that a parent with few upload slots is not asked in vain again
        and again, each refusal costing its piece a pause."""
        outstanding = self.parent_load.get(parent_id, 1)
        self.parent_window[parent_id] = max(1, outstanding - 1)
        self._window_progress[parent_id] = 0

    def _delivered(self, parent_id: str) -> None:
        """A piece came: after a whole window of them, try one request more, as
        the parent's other children may have gone."""
        window = self.parent_window.get(parent_id)
        if window is None or window >= _PER_PARENT:
            return
        progress = self._window_progress[parent_id] + 1
        if progress >= window:
            self.parent_window[parent_id], progress = window + 1, 0
        self._window_progress[parent_id] = progress

    def _measured(self, parent_id: str, length: int, seconds: float) -> None:
        sample = length / max(seconds, 1e-6)
        rate = self.parent_rate.get(parent_id)
        rate = sample if rate is None else (rate + sample) / 2
        self.parent_rate[parent_id] = rate
        self._fastest_rate = max(self.parent_rate.values())

    async def _fetch_from_parent(self, number: int, parent: ParentInfo) -> None:
        expected = self.digests[number]
        client = self.node.piece_client(parent.transport)
        began = time.monotonic()
        try:
            with anyio.fail_after(self.node.config.piece_timeout):
                _, data = await client.fetch(parent.address, self.task_id, number)
        except TimeoutError:
            # A parent this slow holds a worker hostage: others will do better.
            self.blocked.add(parent.peer_id)
            reason = f"no piece within {self.node.config.piece_timeout:g} s"
            self._parent_failed(parent, number, FailureKind.UNREACHABLE, reason)
            return
        except PieceNotFound as exc:
            self.misses.add((parent.peer_id, number))
            self._parent_failed(parent, number, FailureKind.MISSING, str(exc))
            return
        except ParentBusy:
            # Not a failure: the piece goes to a parent with a shorter queue, or
            # here again after the pause (which wakes the picking when it ends).
            self.busy_until[parent.peer_id] = time.monotonic() + _BUSY_PAUSE
            self._refused(parent.peer_id)
            await anyio.sleep(_BUSY_PAUSE)
            return
        except TransportError as exc:
            self.blocked.add(parent.peer_id)
            self._parent_failed(parent, number, FailureKind.UNREACHABLE, str(exc))
            return
        finally:
            self.parent_load[parent.peer_id] -= 1

        self._measured(parent.peer_id, len(data), time.monotonic() - began)
        self._delivered(parent.peer_id)
        wanted = self._piece(number)
        actual = await anyio.to_thread.run_sync(piece_digest, data)
        if len(data) != wanted.length or expected != actual:
            self.blocked.add(parent.peer_id)
            self._parent_failed(
                parent, number, FailureKind.CORRUPT, "bytes do not match the digest"
            )
            return
        await self._keep(Piece(number, wanted.offset, wanted.length, actual), data)
        source = "seed" if parent.seed else "peer"
        self._landed(number, actual, source, parent.peer_id, time.monotonic() - began)

    async def _fetch_from_origin(self, number: int) -> None:
        stat = await self._origin_stat()
        self.node.metrics.origin_requests.inc()
        try:
            if stat.accepts_ranges:
                await self._fetch_range(stat, number)
            else:
                await self._fetch_whole(stat)
        except OriginError as exc:
            self.node.metrics.failures.labels("origin").inc()
            raise TaskFailed(f"origin: {exc}") from exc

    async def _fetch_range(self, stat: OriginStat, number: int) -> None:
        piece = self._piece(number)
        buffer = bytearray(piece.length)
        began = time.monotonic()
        backend = self.backends.for_url(self.request.url)
        await backend.read_into(stat, piece.offset, memoryview(buffer))
        await self._keep_fetched(number, buffer, time.monotonic() - began)

    async def _fetch_whole(self, stat: OriginStat) -> None:
        """One streamed body for origins that ignore ``Range``: every missing piece
        is stored as it passes by."""
        async with self._whole_lock:
            if self._done():
                return
            assert self.record is not None
            backend = self.backends.for_url(self.request.url)
            length = self.record.content_length
            pending = bytearray()
            number = 0
            began = time.monotonic()
            async with backend.open_range(stat, 0, length) as chunks:
                async for chunk in chunks:
                    pending += chunk
                    while number < self.record.piece_count and len(pending) >= (
                        size := self._piece(number).length
                    ):
                        data, pending = pending[:size], pending[size:]
                        if number not in self.held:
                            cost = time.monotonic() - began
                            await self._keep_fetched(number, data, cost)
                        number += 1
                        began = time.monotonic()

    async def _keep_fetched(self, number: int, data: bytearray, cost: float) -> None:
        piece = self._piece(number)
        digest = await anyio.to_thread.run_sync(piece_digest, data)
        await self._keep(Piece(number, piece.offset, piece.length, digest), data)
        self._landed(number, digest, "origin", None, cost)

    async def _keep(self, piece: Piece, data: bytes | bytearray) -> None:
        await anyio.to_thread.run_sync(
            self.store.put_pieces, self.task_id, [(piece, data)]
        )

    def _landed(
        self,
        number: int,
        digest: str,
        source: str,
        parent_id: str | None,
        cost: float,
    ) -> None:
        length = self._piece(number).length
        logger.debug(
            "piece %d of %s landed from %s in %.3fs",
            number,
            self.task_id,
            parent_id or source,
            cost,
        )
        self.held[number] = digest
        self.bytes[source] += length
        self.sources[number] = source
        self.node.metrics.piece(source, length, cost)
        self._reports.append(ReportedPiece(number, digest, parent_id, cost))
        self._report_ready.set()
        self.done_bytes += length
        if self.on_progress is not None and self.record is not None:
            self.on_progress(self.done_bytes, self.record.content_length)

    def _parent_failed(
        self, parent: ParentInfo, number: int, kind: FailureKind, reason: str
    ) -> None:
        logger.info(
            "parent %s failed piece %d of %s: %s (%s)",
            parent.address,
            number,
            self.task_id,
            kind.value,
            reason,
        )
        self.node.metrics.failures.labels(f"parent_{kind.value}").inc()
        self._failures.append(ParentFailure(parent.peer_id, number, kind, reason))
        self._report_ready.set()

    # Learning the task

    async def _learn_from_origin(self) -> None:
        """As the fetcher (or on fallback), learn the content's length and record it."""
        stat = await self._origin_stat()
        await self._record_task(stat.content_length, stat.validator)

    async def _origin_stat(self) -> OriginStat:
        async with self._stat_lock:
            if self._stat is None:
                self.node.metrics.origin_requests.inc()
                backend = self.backends.for_url(self.request.url)
                try:
                    self._stat = await backend.stat(self.request.url)
                except OriginError as exc:
                    self.node.metrics.failures.labels("origin").inc()
                    raise TaskFailed(f"origin: {exc}") from exc
            return self._stat

    async def _record_task(self, content_length: int, validator: str) -> None:
        if self.record is not None:
            return
        record = Task(
            id=self.task_id,
            url=self.request.url,
            content_length=content_length,
            piece_length=piece_length_for(content_length),
            validator=validator,
            digest=self.request.expected_digest,
            created_at=time.time(),
        )
        # Room first: the task, once recorded, could be the one evicted.
        await anyio.to_thread.run_sync(self.store.make_room, content_length)
        await anyio.to_thread.run_sync(self.store.put_task, record)
        await anyio.to_thread.run_sync(self.store.reserve, content_length)
        self.record = record
        self._map_ranges()
        self._report_ready.set()  # the scheduler learns the lengths from the fetcher
        self._wake()

    def _map_ranges(self) -> None:
        """Once the pieces are known, turn wanted byte ranges into wanted pieces; the
        next report tells the scheduler, which puts them ahead in the fetcher's
        queue. A range past the end wants nothing."""
        record = self.record
        if record is None or not self.ranges:
            return
        for start, end in self.ranges:
            last = min(end, record.content_length - 1)
            if 0 <= start <= last:
                numbers = pieces_covering(
                    record.content_length, record.piece_length, start, last
                )
                self.wanted += [n for n in numbers if n not in self.wanted]
        self.ranges.clear()
        self._wanted_changed = True
        self._report_ready.set()

    # The scheduler

    def _set_view(self, view: PeerView, *, fresh: bool = False) -> None:
        # A registration starts a new series of versions (the scheduler may have
        # restarted); a long poll only ever moves forward.
        if not fresh and self.view is not None and view.version < self.view.version:
            return
        was_fetcher = self.view is not None and self.view.role is Role.FETCHER
        if view.role is Role.FETCHER and not was_fetcher and not self.origin_allowed:
            self.node.metrics.back_to_source.labels("scheduler").inc()
        self.view = view
        self.misses.clear()
        if view.role is Role.FAILED:
            self._wake()
            return
        self.digests = {piece.number: piece.digest for piece in view.pieces}
        self.parent_pieces = {
            parent.peer_id: set(parent.pieces) for parent in view.parents
        }
        self._rarest = None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "view %d of %s: %s, parents %s",
                view.version,
                self.task_id,
                view.role.value,
                {parent.host_id: len(parent.pieces) for parent in view.parents},
            )
        self._wake()

    async def _watch(self) -> None:
        while True:
            assert self.view is not None and self.node.scheduler is not None
            try:
                view = await self.node.scheduler.view(
                    self.peer_id, since=self.view.version, wait=_POLL_WAIT
                )
            except SchedulerForgot:
                await self._reconnect()
                continue
            except SchedulerUnreachable as exc:
                self._lost_scheduler(exc)
                await self._reconnect()
                continue
            self._scheduler_lost_at = None
            await self._accept(view)

    async def _accept(self, view: PeerView, *, fresh: bool = False) -> None:
        self._set_view(view, fresh=fresh)
        if view.role is Role.FAILED:
            return
        if self.record is None and view.content_length is not None:
            await self._record_task(view.content_length, "")

    async def _reconnect(self) -> None:
        """Announce the host and register again until the scheduler answers."""
        assert self.node.scheduler is not None
        for delay in _retry_delays():
            try:
                await self.node.announce()
                view = await self.node.scheduler.register(
                    self._registration(resumed=True)
                )
            except SchedulerUnreachable as exc:
                self._lost_scheduler(exc)
                await anyio.sleep(delay)
                continue
            self._scheduler_lost_at = None
            logger.info("re-registered %s with the scheduler", self.task_id)
            await self._accept(view, fresh=True)
            return

    def _lost_scheduler(self, exc: Exception) -> None:
        if self._scheduler_lost_at is None:
            self._scheduler_lost_at = time.monotonic()
            logger.warning(
                "lost the scheduler while downloading %s: %s", self.task_id, exc
            )
            self._wake()

    def _fallback_deadline(self) -> float | None:
        if self._scheduler_lost_at is None or self.origin_allowed:
            return None
        return self._scheduler_lost_at + self.node.config.fallback_after

    def _go_to_origin(self, reason: str, *, loudly: bool) -> None:
        if self.priority is Priority.PEERS_ONLY:
            raise TaskFailed(f"{reason}, and priority 2 takes pieces from peers only")
        self.origin_allowed = True
        reason_label = "scheduler_unreachable" if loudly else "no_scheduler"
        self.node.metrics.back_to_source.labels(reason_label).inc()
        if loudly:
            logger.warning(
                "downloading %s from the origin without the swarm: %s",
                self.task_id,
                reason,
            )
        self._wake()

    async def _report_forever(self) -> None:
        while True:
            await self._report_ready.wait()
            # A moment to let pieces landing together share one report.
            await anyio.sleep(_REPORT_LINGER)
            await self._flush_reports()

    async def _flush_reports(self) -> None:
        """Send what piled up. One report at a time: the last flush waits for one
        on its way, so no piece a child could need is left unannounced."""
        scheduler = self.node.scheduler
        if scheduler is None or self.view is None:
            return
        async with self._report_lock:
            self._report_ready = anyio.Event()
            report = self._take_report()
            if report is None:
                return
            try:
                await scheduler.report(self.peer_id, report)
            except (SchedulerUnreachable, SchedulerForgot):
                # Sent again with the next report (or in a new registration).
                self._reports[:0] = report.pieces
                self._lengths_reported = False
                await anyio.sleep(_RETRY_DELAYS[0])
            except SchedulerRefused as exc:
                logger.warning(
                    "scheduler refused a report for %s: %s", self.task_id, exc
                )

    def _take_report(self) -> PieceReport | None:
        lengths = (
            self.record is not None
            and not self._lengths_reported
            and self._role() is Role.FETCHER
        )
        wanted = self._wanted_changed
        if not (self._reports or self._failures or lengths or wanted):
            return None
        report = PieceReport(
            pieces=self._reports,
            failures=self._failures,
            content_length=self.record.content_length
            if lengths and self.record
            else None,
            piece_length=self.record.piece_length if lengths and self.record else None,
            wanted=list(self.wanted) if wanted else None,
        )
        self._reports, self._failures = [], []
        self._lengths_reported = self._lengths_reported or lengths
        self._wanted_changed = False
        return report

    async def _tell_finished(self, finished: PeerFinished) -> None:
        scheduler = self.node.scheduler
        if scheduler is None or self.view is None:
            return
        with anyio.move_on_after(self.node.config.scheduler_timeout):
            try:
                await scheduler.finished(self.peer_id, finished)
            except (SchedulerUnreachable, SchedulerRefused) as exc:
                logger.info(
                    "could not tell the scheduler %s finished: %s", self.task_id, exc
                )

    # Small helpers

    def _role(self) -> Role | None:
        if self.view is not None and self.view.role is Role.FAILED:
            raise TaskFailed(self.view.failure or "the task failed at the origin")
        if self.origin_allowed:
            return Role.FETCHER
        return None if self.view is None else self.view.role

    def _complete(self) -> bool:
        self._role()  # raises when the task failed for the swarm
        record = self.record
        return record is not None and len(self.held) == record.piece_count

    def _done(self) -> bool:
        """Whether the download holds all it wants."""
        if self.whole or self._complete():
            return self._complete()
        return (
            self.record is not None
            and not self.ranges
            and all(number in self.held for number in self.wanted)
        )

    def _piece(self, number: int) -> Piece:
        assert self.record is not None
        offset = number * self.record.piece_length
        length = min(self.record.piece_length, self.record.content_length - offset)
        return Piece(number, offset, length)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _failure(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        origin = isinstance(exc, TaskFailed) and text.startswith("origin:")
        return text if origin else f"peer: {text}"

    def _log(self, outcome: str, started: float, extra: str) -> None:
        logger.info(
            "download task %s task_id=%s peer_id=%s host_id=%s bytes_local=%d "
            "bytes_peer=%d bytes_seed=%d bytes_origin=%d duration=%.3fs%s",
            outcome,
            self.task_id,
            self.peer_id,
            self.node.host.id,
            self.bytes["local"],
            self.bytes["peer"],
            self.bytes["seed"],
            self.bytes["origin"],
            time.monotonic() - started,
            extra,
        )


def _retry_delays() -> Iterator[float]:
    """Backoff between reconnection attempts, then its last step for ever."""
    return itertools.chain(_RETRY_DELAYS, itertools.repeat(_RETRY_DELAYS[-1]))
