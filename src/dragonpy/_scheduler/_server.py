"""The scheduler's HTTP/JSON API around the in-memory ``Scheduler``.

Long polls are how changes reach daemons without them polling: a request for a
peer's view with ``since=V`` waits on its task's change event until the version
passes ``V`` or the timeout ends, and a seed's request for triggers waits on its
host's event. The core stays synchronous; this module owns time (``tick``) and the
events.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Final, TypeVar

import anyio
import anyio.abc
import attrs
from opentelemetry import trace

from .._telemetry import child_span, extract_headers
from .._web import Request, Response, Router, serve_tcp, text
from .._wire import MessageError, decode, encode
from ._core import Scheduler, SchedulerConfig, SchedulerError, UnknownHost, UnknownPeer
from ._messages import (
    MAX_POLL_TIMEOUT,
    HostAnnounce,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceReport,
    SeedTriggers,
    route_of,
)
from ._metrics import DEFAULT_METRICS_PORT, SchedulerMetrics

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "SchedulerServer", "run_scheduler"]

logger = logging.getLogger("dragonpy.scheduler")

DEFAULT_PORT: Final = 8002
_TICK_INTERVAL: Final = 0.25
_DEFAULT_POLL_TIMEOUT: Final = 30.0

T = TypeVar("T")


class _Changes:
    """One event per key, replaced each time it fires, so waiters wake once."""

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}

    def fire(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, key: str, timeout: float) -> None:
        event = self._events.setdefault(key, anyio.Event())
        with anyio.move_on_after(timeout):
            await event.wait()


class SchedulerServer:
    """Serves one ``Scheduler`` over HTTP."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self._task_changes = _Changes()
        self._trigger_changes = _Changes()
        self.scheduler = Scheduler(
            config or SchedulerConfig(),
            on_change=self._task_changes.fire,
            on_trigger=self._trigger_changes.fire,
        )
        self.metrics = SchedulerMetrics(self.scheduler)
        #: The metrics port once listening, if metrics are served.
        self.metrics_port: int | None = None
        self._task_of: dict[str, str] = {}
        # The last view sent to each peer, to hold polls until something changed.
        self._sent: dict[str, PeerView] = {}
        self.instance = uuid.uuid4().hex
        self.router = Router()
        self.router.add("POST", r"/hosts", self._announce)
        self.router.add("DELETE", r"/hosts/([^/]+)", self._leave_host)
        self.router.add("GET", r"/hosts/([^/]+)/triggers", self._triggers)
        self.router.add("POST", r"/peers", self._register)
        self.router.add("GET", r"/peers/([^/]+)/view", self._view)
        self.router.add("POST", r"/peers/([^/]+)/report", self._report)
        self.router.add("POST", r"/peers/([^/]+)/finished", self._finished)
        self.router.add("DELETE", r"/peers/([^/]+)", self._leave_peer)
        self.router.add("GET", r"/healthy", self._healthy)

    async def serve(
        self,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        *,
        metrics_port: int | None = None,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the API on ``host:port``, and ``GET /metrics`` on ``metrics_port``
        unless it is None (0 for any free port, then in ``self.metrics_port``)."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._tick_forever)
            bound = await group.start(serve_tcp, host, port, self._handle)
            if metrics_port is not None:
                self.metrics_port = await group.start(
                    serve_tcp, host, metrics_port, self._serve_metrics
                )
            logger.info(
                "scheduler listening on %s:%d, metrics %s",
                host,
                bound,
                self.metrics_port or "off",
            )
            task_status.started(bound)

    async def _tick_forever(self) -> None:
        while True:
            await anyio.sleep(_TICK_INTERVAL)
            self.scheduler.tick()
            self._forget_departed()

    async def _handle(self, request: Request) -> Response:
        # A span only for requests that belong to a trace: health probes and
        # untraced daemons make none.
        with child_span(
            f"scheduler {request.method} {route_of(request.path)}",
            trace.SpanKind.SERVER,
            None,
            extract_headers(request.headers),
        ):
            return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        failures = self.metrics.failures
        try:
            return await self.router(request)
        except MessageError as exc:
            failures.labels("bad_message").inc()
            return text(400, f"bad message: {exc}")
        except UnknownHost as exc:
            failures.labels("unknown_host").inc()
            return text(404, str(exc))
        except UnknownPeer as exc:
            failures.labels("unknown_peer").inc()
            return text(404, str(exc))
        except SchedulerError as exc:
            failures.labels("refused").inc()
            return text(422, str(exc))
        except Exception:
            failures.labels("internal").inc()
            raise

    async def _serve_metrics(self, request: Request) -> Response:
        if request.path == "/metrics":
            return Response(200, self.metrics.exposition(), self.metrics.content_type)
        return text(404, "metrics are at /metrics")

    # Hosts

    async def _announce(self, request: Request) -> Response:
        reply = self.scheduler.announce_host(decode(request.body, HostAnnounce))
        return Response(200, encode(attrs.evolve(reply, instance=self.instance)))

    async def _leave_host(self, request: Request) -> Response:
        self.scheduler.leave_host(request.params[0])
        return Response(204)

    async def _triggers(self, request: Request) -> Response:
        host_id = request.params[0]
        triggers = self.scheduler.take_triggers(host_id)
        if not triggers:
            await self._trigger_changes.wait(host_id, _poll_timeout(request))
            triggers = self.scheduler.take_triggers(host_id)
        return Response(200, encode(SeedTriggers(triggers)))

    # Peers

    async def _register(self, request: Request) -> Response:
        registration = decode(request.body, PeerRegister)
        started = time.perf_counter()
        view = self.scheduler.register_peer(registration)
        self.metrics.registrations.observe(time.perf_counter() - started)
        self._task_of[registration.peer_id] = registration.task_id
        self._sent.pop(registration.peer_id, None)
        return Response(200, encode(view))

    async def _view(self, request: Request) -> Response:
        """The peer's view once it differs from the one it has (version ``since``).

        Every report bumps its task's version, but most reports change nothing a
        given peer sees (its own pieces, say): those wake the poll and put it back
        to sleep, rather than send the peer a view it already has.
        """
        peer_id = request.params[0]
        since = _query_int(request, "since", -1)
        task_id = self._task_of.get(peer_id, "")
        deadline = anyio.current_time() + _poll_timeout(request)
        try:
            view = self._decide_view(peer_id)
        except UnknownPeer:
            self._forget_peer(peer_id)
            raise
        seen = self._sent.get(peer_id)
        while view.version <= since or (seen is not None and _same(view, seen)):
            left = deadline - anyio.current_time()
            if left <= 0:
                break
            await self._task_changes.wait(task_id, left)
            view = self._decide_view(peer_id)
        self._sent[peer_id] = view
        return Response(200, encode(view))

    def _decide_view(self, peer_id: str) -> PeerView:
        started = time.perf_counter()
        view = self.scheduler.view(peer_id)
        self.metrics.views.observe(time.perf_counter() - started)
        return view

    async def _report(self, request: Request) -> Response:
        report = decode(request.body, PieceReport)
        self.scheduler.report(request.params[0], report)
        for failure in report.failures:
            self.metrics.failures.labels(f"parent_{failure.kind.value}").inc()
        return Response(204)

    async def _finished(self, request: Request) -> Response:
        self.scheduler.finish(request.params[0], decode(request.body, PeerFinished))
        return Response(204)

    async def _leave_peer(self, request: Request) -> Response:
        self.scheduler.leave_peer(request.params[0])
        self._forget_peer(request.params[0])
        return Response(204)

    def _forget_peer(self, peer_id: str) -> None:
        self._task_of.pop(peer_id, None)
        self._sent.pop(peer_id, None)

    def _forget_departed(self) -> None:
        """Drop what this server keeps for peers the scheduler let go (silent
        hosts, idle peers), once there is more of it than there are peers."""
        if len(self._task_of) <= 2 * self.scheduler.statistics()["peers"] + 64:
            return
        for peer_id in list(self._task_of):
            try:
                self.scheduler.version(peer_id)
            except UnknownPeer:
                self._forget_peer(peer_id)

    async def _healthy(self, request: Request) -> Response:
        return text(200, "OK")


def _same(view: PeerView, other: PeerView) -> bool:
    """Whether two views of a peer differ only in their version."""
    return attrs.evolve(view, version=other.version) == other


def _poll_timeout(request: Request) -> float:
    return min(
        _query_float(request, "timeout", _DEFAULT_POLL_TIMEOUT), MAX_POLL_TIMEOUT
    )


def _query_int(request: Request, name: str, default: int) -> int:
    return _query(request, name, default, int)


def _query_float(request: Request, name: str, default: float) -> float:
    value = _query(request, name, default, float)
    if not value >= 0:  # also refuses NaN
        raise MessageError(f"query parameter {name} must not be negative")
    return value


def _query(request: Request, name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise MessageError(f"query parameter {name}={raw!r} is not a number") from None


async def run_scheduler(
    host: str,
    port: int,
    config: SchedulerConfig | None = None,
    *,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
) -> None:
    """Run a scheduler until cancelled (``dragonpy scheduler``)."""
    await SchedulerServer(config).serve(host, port, metrics_port=metrics_port)
