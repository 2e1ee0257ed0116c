"""A daemon's Prometheus metrics (served as text on the metrics port, 4002).

Bytes and pieces are counted by where they came from: ``local`` (already in the
store), ``peer``, ``seed`` or ``origin``. Throughput is the rate of the byte counters.
What the store and the piece server count anyway (they know nothing of Prometheus)
is read at every scrape. ``docs/metrics.md`` lists every name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from .._storage import PieceStore
from .._telemetry import LATENCY_BUCKETS
from .._transport import PieceServer

SOURCES = ("local", "peer", "seed", "origin")
#: Where a mirror's answer came from: a source, or ``upstream`` for requests passed
#: through as they are (and blobs the swarm could not deliver in time).
PROXY_SOURCES = (*SOURCES, "upstream")

_Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


class DaemonMetrics:
    """The metrics of one daemon, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "dragonpy_download_tasks",
            "Downloads finished, by result.",
            ["result"],
            registry=self.registry,
        )
        self.tasks_running = Gauge(
            "dragonpy_download_tasks_running",
            "Downloads in progress.",
            registry=self.registry,
        )
        self.pieces = Counter(
            "dragonpy_download_pieces",
            "Pieces downloaded, by source.",
            ["source"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "dragonpy_download_bytes",
            "Bytes downloaded, by source.",
            ["source"],
            registry=self.registry,
        )
        self.origin_requests = Counter(
            "dragonpy_origin_requests",
            "Requests sent to origins.",
            registry=self.registry,
        )
        self.failures = Counter(
            "dragonpy_failures",
            "Failures, by kind (parent_unreachable, parent_corrupt, parent_missing, "
            "origin, scheduler_unreachable, download).",
            ["kind"],
            registry=self.registry,
        )
        self.back_to_source = Counter(
            "dragonpy_back_to_source",
            "Downloads that went to the origin, by reason: scheduler (it made this "
            "peer the fetcher), scheduler_unreachable, no_scheduler.",
            ["reason"],
            registry=self.registry,
        )
        piece_seconds = Histogram(
            "dragonpy_piece_download_seconds",
            "Time to fetch one piece, by source (peer, seed, origin).",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.proxy_requests = Counter(
            "dragonpy_proxy_requests",
            "Mirror requests answered, by where the answer came from (local, peer, "
            "seed, origin, or upstream for requests passed through).",
            ["source"],
            registry=self.registry,
        )
        self.proxy_bytes = Counter(
            "dragonpy_proxy_bytes",
            "Body bytes the mirror sent to its clients, by where each piece came "
            "from (upstream: passed through).",
            ["source"],
            registry=self.registry,
        )
        # Children resolved once: a label lookup per piece costs more than the count.
        self._piece_counts = {source: self.pieces.labels(source) for source in SOURCES}
        self._piece_bytes = {source: self.bytes.labels(source) for source in SOURCES}
        self._piece_seconds = {
            source: piece_seconds.labels(source) for source in SOURCES
        }
        for source in PROXY_SOURCES:
            self.proxy_requests.labels(source)
            self.proxy_bytes.labels(source)

    def watch_uploads(self, server: PieceServer) -> None:
        """Publish the piece server's upload counters at every scrape."""
        self.registry.register(_UploadCollector(server))

    def watch_store(self, store: PieceStore) -> None:
        """Publish the store's usage and evictions at every scrape."""
        self.registry.register(_StoreCollector(store))

    def watch_parents(self, count: Callable[[], int]) -> None:
        """Publish ``count()``, the parents downloads take pieces from now."""
        self.registry.register(_ParentsCollector(count))

    def piece(self, source: str, length: int, seconds: float) -> None:
        """A piece landed from ``source`` after ``seconds``."""
        self._piece_counts[source].inc()
        self._piece_bytes[source].inc(length)
        self._piece_seconds[source].observe(seconds)

    def served(self, source: str, length: int) -> None:
        """The mirror sent ``length`` body bytes from ``source``."""
        self.proxy_bytes.labels(source).inc(length)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST


class _UploadCollector(Collector):
    """Reads the upload counters the piece server keeps anyway, when scraped."""

    def __init__(self, server: PieceServer) -> None:
        self.server = server

    def collect(self) -> Iterator[_Family]:
        latency = self.server.upload_latency
        yield HistogramMetricFamily(
            "dragonpy_piece_upload_seconds",
            "Time to answer one piece request of another peer, waits for a slot or "
            "for bandwidth included.",
            buckets=latency.cumulative(),
            sum_value=latency.sum,
        )
        statistics = self.server.throttle.statistics()
        yield CounterMetricFamily(
            "dragonpy_upload_bytes",
            "Bytes sent to other peers (piece replies with their headers).",
            value=statistics.bytes_sent,
        )
        yield CounterMetricFamily(
            "dragonpy_upload_pieces",
            "Pieces sent to other peers.",
            value=statistics.pieces_sent,
        )
        yield GaugeMetricFamily(
            "dragonpy_upload_pieces_in_flight",
            "Pieces being sent now.",
            value=statistics.pieces_in_flight,
        )
        waits = CounterMetricFamily(
            "dragonpy_upload_waits",
            "Piece replies that waited for a slot or for bandwidth, by limit.",
            labels=["limit"],
        )
        waits.add_metric(["concurrency"], statistics.slot_waits)
        waits.add_metric(["bandwidth"], statistics.bandwidth_waits)
        yield waits
        yield CounterMetricFamily(
            "dragonpy_upload_busy",
            "Piece requests answered busy: every slot taken and as many waiting.",
            value=statistics.busy_refusals,
        )
        yield CounterMetricFamily(
            "dragonpy_upload_withdrawn",
            "Piece requests the requester called off before their piece was sent "
            "(it got the piece elsewhere, or gave up waiting).",
            value=statistics.withdrawals,
        )


class _StoreCollector(Collector):
    """Reads the store's usage and its eviction counters, when scraped."""

    def __init__(self, store: PieceStore) -> None:
        self.store = store

    def collect(self) -> Iterator[_Family]:
        statistics = self.store.statistics()
        for name, meaning, value in (
            ("used", "Bytes of piece data stored.", statistics.used_bytes),
            ("capacity", "Bytes the store may hold.", statistics.capacity),
            (
                "high_watermark",
                "Usage past which unused tasks are evicted.",
                statistics.high_watermark,
            ),
            (
                "low_watermark",
                "Usage eviction brings the store back under.",
                statistics.low_watermark,
            ),
        ):
            yield GaugeMetricFamily(f"dragonpy_store_{name}_bytes", meaning, value)
        yield GaugeMetricFamily(
            "dragonpy_store_tasks", "Tasks in the store.", value=statistics.tasks
        )

        tasks = CounterMetricFamily(
            "dragonpy_store_evicted_tasks",
            "Tasks removed from the store, by reason: capacity (past the high "
            "watermark, least recently used first) or ttl (unused too long).",
            labels=["reason"],
        )
        tasks.add_metric(["capacity"], statistics.evicted_tasks)
        tasks.add_metric(["ttl"], statistics.expired_tasks)
        yield tasks
        freed = CounterMetricFamily(
            "dragonpy_store_evicted_bytes",
            "Bytes of piece data removed with those tasks, by reason.",
            labels=["reason"],
        )
        freed.add_metric(["capacity"], statistics.evicted_bytes)
        freed.add_metric(["ttl"], statistics.expired_bytes)
        yield freed


class _ParentsCollector(Collector):
    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count

    def collect(self) -> Iterator[_Family]:
        yield GaugeMetricFamily(
            "dragonpy_download_parents",
            "Distinct parents that running downloads take pieces from.",
            value=self.count(),
        )
