"""A scheduler's Prometheus metrics (served as text on its metrics port, 8000).

The core keeps plain counters and sizes (``Scheduler.statistics()``), read at every
scrape; the server around it times decisions and counts what it refused. Nothing
here runs inside the compiled core.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ._core import Scheduler

__all__ = ["DEFAULT_METRICS_PORT", "SchedulerMetrics"]

DEFAULT_METRICS_PORT: Final = 8000

#: A decision takes tens of microseconds in a small swarm, milliseconds in a huge
#: task.
_DECISION_BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
_GAUGES: Final = {
    "hosts": "Hosts announced.",
    "seeds": "Seed hosts announced.",
    "tasks": "Tasks with at least one peer.",
    "peers": "Peers registered.",
    "fetchers": "Tasks with a peer fetching from the origin now.",
}
_BACK_TO_SOURCE: Final = {
    "fetcher": "fetchers_chosen",
    "seed_trigger": "seed_triggers",
    "promotion": "promotions",
}


class SchedulerMetrics:
    """The metrics of one scheduler, in a registry of their own."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        decisions = Histogram(
            "dragonpy_scheduler_decision_seconds",
            "Time to decide a peer's view (choosing its parents), by kind: register "
            "or view.",
            ["kind"],
            buckets=_DECISION_BUCKETS,
            registry=self.registry,
        )
        self.registrations = decisions.labels("register")
        self.views = decisions.labels("view")
        self.failures = Counter(
            "dragonpy_scheduler_failures",
            "Requests refused (bad_message, unknown_host, unknown_peer, refused) or "
            "failed (internal), and parent failures peers reported "
            "(parent_unreachable, parent_corrupt, parent_missing).",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(_CoreCollector(scheduler))

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST


class _CoreCollector(Collector):
    """Reads the core's statistics when scraped."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        statistics = self.scheduler.statistics()
        for name, meaning in _GAUGES.items():
            yield GaugeMetricFamily(
                f"dragonpy_scheduler_{name}", meaning, value=statistics[name]
            )

        pieces = CounterMetricFamily(
            "dragonpy_scheduler_pieces",
            "Pieces peers reported, by where they came from: origin or peer.",
            labels=["source"],
        )
        pieces.add_metric(["origin"], statistics["pieces_from_origin"])
        pieces.add_metric(["peer"], statistics["pieces_from_peers"])
        yield pieces
        yield CounterMetricFamily(
            "dragonpy_scheduler_origin_repeats",
            "Pieces fetched from the origin again for a task that had them from it "
            "already (a single fetcher per task keeps this at zero).",
            value=statistics["origin_repeats"],
        )

        back_to_source = CounterMetricFamily(
            "dragonpy_scheduler_back_to_source",
            "Decisions sending a peer to the origin, by decision: fetcher (a peer "
            "made its task's fetcher), seed_trigger (a seed asked to fetch), "
            "promotion (a peer taking over from a fetcher or seed that went away).",
            labels=["decision"],
        )
        for decision, key in _BACK_TO_SOURCE.items():
            back_to_source.add_metric([decision], statistics[key])
        yield back_to_source
