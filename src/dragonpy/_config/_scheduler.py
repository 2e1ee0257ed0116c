"""What a scheduler's file holds, and the ``SchedulerConfig`` it makes."""

from __future__ import annotations

import attrs

from .._scheduler import DEFAULT_PORT, SchedulerConfig
from .._scheduler._server import DEFAULT_METRICS_PORT
from ._fields import (
    Duration,
    Invalid,
    between,
    not_negative,
    port,
    positive,
    section,
    setting,
)
from ._observability import LogSettings, TracingSettings


@attrs.frozen
class ServerSettings:
    listen_ip: str = setting(
        "0.0.0.0",
        "Address the scheduler listens on.",
        key="listenIP",
        dragonfly="server.listenIP",
    )
    port: int = setting(
        DEFAULT_PORT,
        "Port peers announce to; 0: any free port.",
        dragonfly="server.port",
        validator=port,
    )


@attrs.frozen
class MetricsServerSettings:
    port: int = setting(
        DEFAULT_METRICS_PORT,
        "Port of GET /metrics (Prometheus); 0: no metrics.",
        dragonfly="metrics.addr",
        validator=port,
    )


@attrs.frozen
class MetricsSettings:
    server: MetricsServerSettings = section(MetricsServerSettings, "Where it listens.")


@attrs.frozen
class SchedulingSettings:
    announce_interval: Duration = setting(
        Duration(5.0),
        "Hosts announce themselves again this often (the scheduler tells them).",
        dragonfly="scheduler.announceInterval of each dfdaemon",
        validator=positive,
    )
    candidate_parent_limit: int = setting(
        8,
        "Parents given to each peer.",
        dragonfly="candidate_parent_limit of the cluster",
        validator=between(1, 64),
    )
    seed_peer_timeout: Duration = setting(
        Duration(5.0),
        "A seed asked to fetch a task that has not registered by then is given up "
        "on, and one of the task's peers fetches instead.",
        validator=positive,
    )
    restart_grace: Duration = setting(
        Duration(10.0),
        "After the scheduler starts, resumed peers wait this long for their old "
        "fetcher to register again before another one is chosen.",
        validator=not_negative,
    )
    offers_per_holder: int = setting(
        2,
        "Pieces only one peer holds that it sends at once, each to one child.",
        validator=between(1, 1024),
    )
    offer_timeout: Duration = setting(
        Duration(30.0),
        "A child that has not taken an offered piece by then loses the offer to "
        "another child.",
        validator=positive,
    )


@attrs.frozen
class GCSettings:
    host_ttl: Duration = setting(
        Duration(15.0),
        "A host silent this long is gone, and its peers with it.",
        key="hostTTL",
        dragonfly="gc.hostTTL",
        validator=positive,
    )
    peer_ttl: Duration = setting(
        Duration(3600.0),
        "A peer that has said nothing for this long is gone.",
        key="peerTTL",
        dragonfly="gc.peerTTL",
        validator=positive,
    )


@attrs.frozen
class SchedulerSettings:
    """Everything a scheduler's file may say; every key has a default."""

    log: LogSettings = section(LogSettings, "Logging.")
    tracing: TracingSettings = section(TracingSettings, "Tracing.")
    server: ServerSettings = section(ServerSettings, "Listening.")
    metrics: MetricsSettings = section(MetricsSettings, "Prometheus metrics.")
    scheduler: SchedulingSettings = section(SchedulingSettings, "Scheduling.")
    gc: GCSettings = section(GCSettings, "Forgetting hosts and peers.")

    def __attrs_post_init__(self) -> None:
        interval = self.scheduler.announce_interval
        if self.gc.host_ttl <= interval:
            raise Invalid(
                ("gc", "host_ttl"),
                f"{self.gc.host_ttl:g}s must be longer than "
                f"scheduler.announceInterval ({interval:g}s), or hosts expire "
                "between announces",
            )

    def scheduler_config(self) -> SchedulerConfig:
        scheduling, gc = self.scheduler, self.gc
        return SchedulerConfig(
            keepalive=scheduling.announce_interval,
            host_ttl=gc.host_ttl,
            parent_limit=scheduling.candidate_parent_limit,
            seed_timeout=scheduling.seed_peer_timeout,
            restart_grace=scheduling.restart_grace,
            peer_ttl=gc.peer_ttl,
            offers_per_holder=scheduling.offers_per_holder,
            offer_timeout=scheduling.offer_timeout,
        )
