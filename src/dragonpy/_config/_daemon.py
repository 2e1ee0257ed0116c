"""What a daemon's file (peer or seed) holds, and the ``DaemonConfig`` it makes."""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import attrs

from .._daemon import DaemonConfig, ProxyConfig
from .._daemon._proxy import DEFAULT_RULES, registry_base
from .._download import DEFAULT_STORE_DIR
from .._storage import StorePolicy
from .._storage._store import GIB
from .._transport import TRANSPORTS, UploadLimits
from .._transport._limits import DEFAULT_UPLOAD_LIMITS
from ._fields import (
    SAME,
    Duration,
    Invalid,
    Size,
    between,
    each,
    host_port,
    not_negative,
    one_of,
    port,
    positive,
    regex,
    required,
    section,
    setting,
)
from ._observability import LogSettings, TracingSettings


@attrs.frozen
class HostSettings:
    hostname: str | None = setting(
        None,
        "Name of this host; null: the machine's name.",
        dragonfly="host.hostname",
    )
    ip: str = setting(
        "127.0.0.1",
        "Address other peers and the scheduler reach this host at.",
        dragonfly="host.ip",
    )
    idc: str = setting(
        "", "Data center, for affinity between peers.", dragonfly="host.idc"
    )
    location: str = setting(
        "",
        "Where the host is, as country|region|city|zone|rack, for affinity.",
        dragonfly="host.location",
    )


@attrs.frozen
class ServerSettings:
    listen_ip: str = setting(
        "0.0.0.0",
        "Address every port of the daemon listens on.",
        key="listenIP",
        dragonfly="upload.server.ip, proxy.server.ip, ...",
    )


@attrs.frozen
class SeedPeerSettings:
    enable: bool = setting(
        False,
        "A seed goes to the origin first when the scheduler asks it to.",
        dragonfly="seedPeer.enable",
    )


@attrs.frozen
class SchedulerClientSettings:
    addr: str | None = setting(
        None,
        "HOST:PORT of the scheduler whose swarm this daemon joins; null: none, the "
        "daemon is a single-node cache.",
        dragonfly="manager.addr, or the schedulers of dynconfig",
        validator=host_port,
    )
    fallback_after: Duration = setting(
        Duration(10.0),
        "How long a download goes on without the scheduler before it fetches from "
        "the origin itself.",
        reload=True,
        validator=not_negative,
    )


@attrs.frozen
class DownloadSettings:
    concurrent_piece_count: int = setting(
        8,
        "Pieces one download fetches from peers at once.",
        dragonfly="download.concurrentPieceCount",
        reload=True,
        validator=between(1, 256),
    )
    back_to_source_concurrent_piece_count: int = setting(
        4,
        "Pieces one download fetches from the origin at once.",
        reload=True,
        validator=between(1, 64),
    )
    piece_timeout: Duration = setting(
        Duration(30.0),
        "How long a parent has to deliver a piece before it is dropped as too slow.",
        dragonfly="download.pieceTimeout",
        reload=True,
        validator=positive,
    )


@attrs.frozen
class UploadServerSettings:
    port: int = setting(
        4000,
        "Port peers fetch pieces from; 0: any free port.",
        dragonfly=SAME,
        validator=port,
    )
    transport: str = setting(
        TRANSPORTS[0],
        f"How pieces travel to peers: {', '.join(TRANSPORTS)}.",
        dragonfly="download.protocol",
        validator=one_of(TRANSPORTS),
    )


@attrs.frozen
class UploadSettings:
    server: UploadServerSettings = section(
        UploadServerSettings, "The piece server other peers fetch from."
    )
    concurrent_piece_count: int = setting(
        DEFAULT_UPLOAD_LIMITS.max_concurrent_pieces,
        "Pieces served to peers at once; as many more wait their turn, and "
        "requests past those are answered busy, to be asked elsewhere.",
        dragonfly="(the scheduler's concurrent upload limit)",
        reload=True,
        validator=between(1, 4096),
    )
    bandwidth_limit: Size | None = setting(
        None,
        "Bytes per second served to peers, like 100MB; null: no limit.",
        dragonfly="upload.bandwidthLimit",
        reload=True,
        validator=positive,
    )


@attrs.frozen
class Rule:
    regex: str = required(
        "Searched in the request's path.", dragonfly=SAME, validator=regex
    )


@attrs.frozen
class PortSettings:
    port: int = setting(
        0, "Port to listen on; 0: any free port.", dragonfly=SAME, validator=port
    )


def _server(port: int) -> functools.partial[PortSettings]:
    return functools.partial(PortSettings, port)


@attrs.frozen
class ServiceSettings:
    server: PortSettings = section(PortSettings, "Where it listens.")


def _service(port: int) -> functools.partial[ServiceSettings]:
    return functools.partial(ServiceSettings, PortSettings(port))


@attrs.frozen
class ProxySettings:
    server: PortSettings = section(
        _server(4001), "The registry mirror containerd, Nydus and others pull through."
    )
    registries: tuple[str, ...] = setting(
        (),
        "Upstream registries the mirror serves, as https://host[:port]; the first is "
        "the default for requests that name none.",
        dragonfly="proxy.registryMirror.addr (the first)",
        reload=True,
        validator=each(registry_base),
    )
    allow_any_registry: bool = setting(
        False,
        "Serve any upstream a request names: an open relay, for trusted networks only.",
        reload=True,
    )
    rules: tuple[Rule, ...] = setting(
        tuple(Rule(rule) for rule in DEFAULT_RULES),
        "Requests whose path matches one of these go peer to peer; the rest pass "
        "through to the upstream.",
        dragonfly="proxy.rules",
        reload=True,
    )
    auth_check: bool = setting(
        True,
        "Serve a stored blob only once the upstream accepts the request's "
        "credentials for it, so private blobs stay private.",
        reload=True,
    )
    stall_timeout: Duration = setting(
        Duration(30.0),
        "How long a blob answer may wait for its next piece before it is cut off, "
        "so the client falls back to the registry.",
        reload=True,
        validator=positive,
    )
    prefetch: bool = setting(
        False,
        "After a range read, bring the rest of the blob into the store too.",
        dragonfly="proxy.prefetch",
        reload=True,
    )


@attrs.frozen
class StorageSettings:
    dir: Path = setting(
        DEFAULT_STORE_DIR,
        "Directory of the piece store (shared with dragonpy get on this host).",
        env="DRAGONPY_STORE",
        dragonfly="storage.dir",
    )
    capacity: Size = setting(
        Size(20 * GIB),
        "Bytes the store may hold before it evicts unused tasks.",
        env="DRAGONPY_STORE_CAPACITY",
        dragonfly="gc.policy.diskThreshold",
        validator=positive,
    )


@attrs.frozen
class GCPolicySettings:
    task_ttl: Duration = setting(
        Duration(7 * 24 * 3600.0),
        "Tasks unused this long are removed by dragonpy cache gc.",
        key="taskTTL",
        dragonfly="gc.policy.taskTTL",
        validator=positive,
    )
    disk_high_threshold_percent: float = setting(
        90.0,
        "Past this percentage of the capacity, least recently used tasks that "
        "nobody uses are evicted until usage is under diskLowThresholdPercent.",
        dragonfly="gc.policy.diskHighThresholdPercent",
        validator=between(1, 100),
    )
    disk_low_threshold_percent: float = setting(
        70.0,
        "Eviction stops once usage is under this percentage of the capacity.",
        dragonfly="gc.policy.diskLowThresholdPercent",
        validator=between(1, 100),
    )

    def __attrs_post_init__(self) -> None:
        if self.disk_low_threshold_percent >= self.disk_high_threshold_percent:
            raise Invalid(
                ("disk_low_threshold_percent",),
                f"{self.disk_low_threshold_percent:g} must be less than "
                f"diskHighThresholdPercent ({self.disk_high_threshold_percent:g})",
            )


@attrs.frozen
class GCSettings:
    policy: GCPolicySettings = section(GCPolicySettings, "When stored tasks go.")


@attrs.frozen
class DaemonSettings:
    """Everything a daemon's file may say; every key has a default."""

    log: LogSettings = section(LogSettings, "Logging.")
    tracing: TracingSettings = section(TracingSettings, "Tracing.")
    host: HostSettings = section(HostSettings, "This host, as peers see it.")
    server: ServerSettings = section(ServerSettings, "Listening.")
    seed_peer: SeedPeerSettings = section(SeedPeerSettings, "Seeding.")
    scheduler: SchedulerClientSettings = section(
        SchedulerClientSettings, "The scheduler."
    )
    download: DownloadSettings = section(DownloadSettings, "Downloads.")
    upload: UploadSettings = section(UploadSettings, "Serving pieces to peers.")
    proxy: ProxySettings = section(ProxySettings, "The registry mirror.")
    metrics: ServiceSettings = section(
        _service(4002), "Prometheus metrics at /metrics."
    )
    health: ServiceSettings = section(_service(4003), "Health checks at /healthy.")
    storage: StorageSettings = section(StorageSettings, "The piece store.")
    gc: GCSettings = section(GCSettings, "Garbage collection of the store.")

    def daemon_config(self) -> DaemonConfig:
        upload, proxy, policy = self.upload, self.proxy, self.gc.policy
        return DaemonConfig(
            store_dir=self.storage.dir,
            scheduler=self.scheduler.addr,
            seed=self.seed_peer.enable,
            ip=self.host.ip,
            hostname=self.host.hostname or socket.gethostname(),
            listen=self.server.listen_ip,
            piece_port=upload.server.port,
            metrics_port=self.metrics.server.port,
            health_port=self.health.server.port,
            transport=upload.server.transport,
            concurrency=self.download.concurrent_piece_count,
            origin_concurrency=self.download.back_to_source_concurrent_piece_count,
            upload=UploadLimits(upload.concurrent_piece_count, upload.bandwidth_limit),
            idc=self.host.idc,
            location=self.host.location,
            proxy=ProxyConfig(
                port=proxy.server.port,
                registries=proxy.registries,
                allow_any_registry=proxy.allow_any_registry,
                rules=tuple(rule.regex for rule in proxy.rules),
                auth_check=proxy.auth_check,
                stall_timeout=proxy.stall_timeout,
                prefetch=proxy.prefetch,
            ),
            store_policy=StorePolicy(
                capacity=self.storage.capacity,
                high=policy.disk_high_threshold_percent / 100,
                low=policy.disk_low_threshold_percent / 100,
                task_ttl=policy.task_ttl,
            ),
            piece_timeout=self.download.piece_timeout,
            fallback_after=self.scheduler.fallback_after,
        )
