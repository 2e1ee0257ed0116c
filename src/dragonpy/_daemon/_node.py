"""The peer daemon: one node of the swarm.

A node serves its store's pieces to other peers, announces its host to the
scheduler, downloads tasks through the swarm for local clients (``dragonpy get``
through the control socket) and, as a seed, for the scheduler's triggers. It also
answers health checks (4003) and Prometheus scrapes (4002).

Without a scheduler a node is a complete single-node cache: it fetches from the
origin and keeps the pieces.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import attrs

from .._backends import BackendOptions, Backends
from .._download import Download
from .._errors import DragonpyError
from .._handoff import control_socket_path, make_socket_directory
from .._identity import host_id
from .._scheduler import (
    HostAnnounce,
    PeerFinished,
    PeerRegister,
    Priority,
    SchedulerClient,
    SchedulerForgot,
    SchedulerRefused,
    SchedulerUnreachable,
    SeedTrigger,
)
from .._storage import StorePolicy, open_store
from .._transport import (
    PieceClient,
    PieceServer,
    UploadLimits,
    open_client,
    open_server,
)
from .._web import Request, Response, serve_tcp, serve_unix, text
from ._control import control_router
from ._metrics import DaemonMetrics
from ._proxy import ProxyConfig, RegistryMirror
from ._swarm import SwarmDownload, SwarmResult

logger = logging.getLogger("dragonpy.daemon")

_TRIGGER_WAIT: Final = 20.0
_ANNOUNCE_RETRY: Final = 1.0


@attrs.frozen
class DaemonConfig:
    store_dir: Path = attrs.field(converter=Path)
    scheduler: str | None = None  # host:port
    seed: bool = False
    ip: str = "127.0.0.1"
    hostname: str = attrs.field(factory=socket.gethostname)
    listen: str = "0.0.0.0"
    piece_port: int = 4000
    metrics_port: int = 4002
    health_port: int = 4003
    transport: str = "tcp"
    concurrency: int = 8
    #: Pieces a fetcher requests from the origin at once. A fetcher that dies
    #: leaves at most this many pieces half-sent, which its successor fetches again.
    origin_concurrency: int = 4
    #: Pieces served at once (also announced, so the scheduler spreads children)
    #: and bytes per second served.
    upload: UploadLimits = attrs.field(factory=UploadLimits)
    idc: str = ""
    location: str = ""
    #: The registry mirror (port 4001).
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig)
    store_policy: StorePolicy = attrs.field(factory=StorePolicy)
    #: Seconds a parent has to deliver one piece before it is dropped as too slow.
    piece_timeout: float = 30.0
    #: Seconds without the scheduler before a download goes to the origin itself.
    fallback_after: float = 10.0
    scheduler_timeout: float = 5.0


@attrs.define
class _Running:
    """A download in progress, shared by everyone who asks for its task."""

    swarm: SwarmDownload
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: SwarmResult | None = None
    error: Exception | None = None


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store = open_store(config.store_dir, config.store_policy)
        self.backends = Backends(BackendOptions())
        self.metrics = DaemonMetrics()
        self.metrics.watch_store(self.store)
        self.metrics.watch_parents(self._parent_count)
        self.scheduler = (
            SchedulerClient(config.scheduler, timeout=config.scheduler_timeout)
            if config.scheduler
            else None
        )
        self.host = HostAnnounce(
            id=host_id(config.ip, config.hostname, seed=config.seed),
            hostname=config.hostname,
            ip=config.ip,
            piece_port=config.piece_port,
            transport=config.transport,
            seed=config.seed,
            upload_capacity=config.upload.max_concurrent_pieces,
            idc=config.idc,
            location=config.location,
        )
        self.keepalive = 5.0
        self._clients: dict[str, PieceClient] = {}
        #: Registrations of the tasks this node finished, to tell a restarted
        #: scheduler who holds them.
        self.finished: dict[str, PeerRegister] = {}
        self._scheduler_instance: str | None = None
        self._running: dict[str, _Running] = {}
        self.mirror = RegistryMirror(config.proxy, self)
        #: The mirror's port once listening (``config.proxy.port`` may be 0).
        self.proxy_port = config.proxy.port
        #: The metrics port once listening (``config.metrics_port`` may be 0).
        self.metrics_port = config.metrics_port
        self._group: anyio.abc.TaskGroup | None = None
        self._piece_server: PieceServer | None = None

    def piece_client(self, transport: str) -> PieceClient:
        client = self._clients.get(transport)
        if client is None:
            client = self._clients[transport] = open_client(transport)
        return client

    def reconfigure(self, config: DaemonConfig) -> None:
        """Run by ``config`` from now on, as far as a running node can: limits,
        piece timeouts and the mirror's rules and registries change; ports, the
        store and the scheduler stay as they are (they need a restart)."""
        self.config = config
        self.mirror.reconfigure(config.proxy)
        if self._piece_server is not None:
            self._piece_server.throttle.update(config.upload)
        # Announced from the next keepalive on, so the scheduler spreads children.
        self.host = attrs.evolve(
            self.host, upload_capacity=config.upload.max_concurrent_pieces
        )

    # Running

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports started once every port listens."""
        config = self.config
        server = open_server(config.transport, self.store, limits=config.upload)
        self._piece_server = server
        self.metrics.watch_uploads(server)
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                port = await group.start(server.serve, config.listen, config.piece_port)
                self.host = attrs.evolve(self.host, piece_port=port)
                await group.start(
                    serve_tcp, config.listen, config.health_port, self._health
                )
                self.metrics_port = await group.start(
                    serve_tcp, config.listen, config.metrics_port, self._metrics
                )
                self.proxy_port = await group.start(
                    serve_tcp, config.listen, config.proxy.port, self.mirror
                )
                socket_path = control_socket_path(self.store.directory)
                make_socket_directory(socket_path)
                await group.start(serve_unix, socket_path, control_router(self))
                if self.scheduler is not None:
                    await self._announce_first()
                    group.start_soon(self._announce_forever)
                    if config.seed:
                        group.start_soon(self._take_triggers)
                logger.info(
                    "daemon %s up: pieces on %d (%s), mirror %d, health %d, "
                    "metrics %d, scheduler %s",
                    self.host.id,
                    port,
                    config.transport,
                    self.proxy_port,
                    config.health_port,
                    self.metrics_port,
                    config.scheduler or "none (single node)",
                )
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self._leave()
                await self._close_connections()

    async def download(
        self,
        request: Download,
        *,
        headers: dict[str, str] | None = None,
        first: tuple[int, int] | None = None,
    ) -> SwarmResult:
        """Download a task into the store, the bytes of ``first`` before the others;
        joins a download of it already running."""
        running = await self._start(
            request, headers, first, whole=True, priority=Priority.DEFAULT
        )
        await running.done.wait()
        if running.error is not None:
            raise running.error
        assert running.result is not None
        return running.result

    async def open_download(
        self,
        request: Download,
        *,
        headers: dict[str, str] | None = None,
        wanted: tuple[int, int] | None = None,
        whole: bool = True,
        priority: Priority = Priority.DEFAULT,
    ) -> SwarmDownload:
        """The download of a task, started unless it runs already, to follow its
        pieces as they land (``wait_for_task``, ``wait_for_piece``): the whole task,
        or only the bytes of ``wanted`` when ``whole`` is false. It goes on in the
        background when nobody follows it any more: what was asked for once is
        worth keeping."""
        running = await self._start(
            request, headers, wanted, whole=whole, priority=priority
        )
        return running.swarm

    async def _start(
        self,
        request: Download,
        headers: dict[str, str] | None,
        wanted: tuple[int, int] | None,
        *,
        whole: bool,
        priority: Priority,
    ) -> _Running:
        while (running := self._running.get(request.task_id)) is not None:
            if running.swarm.want(wanted, whole=whole):
                return running
            await running.done.wait()  # it is ending: the next one starts afresh
        if self._group is None:
            raise RuntimeError("the daemon is not running: start Daemon.run first")
        earlier = self.finished.get(request.task_id)
        swarm = SwarmDownload(
            self,
            request,
            headers=headers,
            wanted=wanted,
            whole=whole,
            priority=priority,
            replaces=None if earlier is None else earlier.peer_id,
        )
        running = self._running[request.task_id] = _Running(swarm)
        self._group.start_soon(self._finish_download, running)
        return running

    async def _finish_download(self, running: _Running) -> None:
        try:
            running.result = await running.swarm.run()
        except Exception as exc:  # reported to whoever waits; the daemon goes on
            running.error = exc
        finally:
            del self._running[running.swarm.task_id]
            running.done.set()

    # The scheduler

    async def announce(self) -> None:
        assert self.scheduler is not None
        reply = await self.scheduler.announce(self.host)
        self.keepalive = reply.keepalive
        if reply.instance != self._scheduler_instance:
            self._scheduler_instance = reply.instance
            if self.finished and self._group is not None:
                self._group.start_soon(self._register_finished)

    async def _register_finished(self) -> None:
        """Tell a scheduler that just started which tasks this node holds whole."""
        assert self.scheduler is not None
        for task_id, registration in list(self.finished.items()):
            record = await anyio.to_thread.run_sync(self.store.get_task, task_id)
            if record is None or not record.complete:
                del self.finished[task_id]
                continue
            try:
                await self.scheduler.register(attrs.evolve(registration, resumed=True))
                await self.scheduler.finished(registration.peer_id, PeerFinished(True))
            except DragonpyError as exc:
                logger.info("could not register finished task %s: %s", task_id, exc)
                return

    async def _announce_first(self) -> None:
        try:
            await self.announce()
        except (SchedulerUnreachable, SchedulerRefused) as exc:
            self.metrics.failures.labels("scheduler_unreachable").inc()
            logger.warning("cannot announce to the scheduler yet: %s", exc)

    async def _announce_forever(self) -> None:
        while True:
            await anyio.sleep(self.keepalive)
            try:
                await self.announce()
            except (SchedulerUnreachable, SchedulerRefused) as exc:
                self.metrics.failures.labels("scheduler_unreachable").inc()
                logger.warning("announce to the scheduler failed: %s", exc)
                await anyio.sleep(_ANNOUNCE_RETRY)

    async def _take_triggers(self) -> None:
        assert self.scheduler is not None and self._group is not None
        while True:
            try:
                triggers = await self.scheduler.triggers(
                    self.host.id, wait=_TRIGGER_WAIT
                )
            except SchedulerForgot:
                await self._announce_first()
                continue
            except (SchedulerUnreachable, SchedulerRefused):
                await anyio.sleep(_ANNOUNCE_RETRY)
                continue
            for trigger in triggers:
                self._group.start_soon(self._seed, trigger)

    async def _seed(self, trigger: SeedTrigger) -> None:
        request = Download(
            trigger.url,
            tag=trigger.tag,
            application=trigger.application,
            digest=trigger.digest,
        )
        try:
            await self.download(request, headers=trigger.headers)
        except DragonpyError as exc:
            logger.warning("seeding %s failed: %s", trigger.task_id, exc)

    async def _leave(self) -> None:
        if self.scheduler is None:
            return
        with anyio.move_on_after(self.config.scheduler_timeout):
            try:
                await self.scheduler.leave_host(self.host.id)
            except DragonpyError as exc:
                logger.info("could not leave the scheduler: %s", exc)
        await self.scheduler.aclose()

    async def _close_connections(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.backends.aclose()
        await self.mirror.aclose()

    # Health and metrics

    def _parent_count(self) -> int:
        parents: set[str] = set()
        for running in self._running.values():
            view = running.swarm.view
            if view is not None:
                parents.update(parent.peer_id for parent in view.parents)
        return len(parents)

    async def _health(self, request: Request) -> Response:
        if request.path == "/healthy":
            return text(200, "OK")
        return text(404, "health is at /healthy")

    async def _metrics(self, request: Request) -> Response:
        if request.path == "/metrics":
            return Response(200, self.metrics.exposition(), self.metrics.content_type)
        return text(404, "metrics are at /metrics")
