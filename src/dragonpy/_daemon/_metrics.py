"""A daemon's Prometheus metrics (served as text on the metrics port, 4002).

Bytes and pieces are counted by where they came from: ``local`` (already in the
store), ``peer``, ``seed`` or ``origin``. Throughput is the rate of the byte counters.
"""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._transport._limits import UploadThrottle

SOURCES = ("local", "peer", "seed", "origin")


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
            "Downloads sent to the origin without the scheduler asking, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for source in SOURCES:
            self.pieces.labels(source)
            self.bytes.labels(source)

    def watch_uploads(self, throttle: UploadThrottle) -> None:
        """Publish the piece server's upload counters at every scrape."""
        self.registry.register(_UploadCollector(throttle))

    def piece(self, source: str, length: int) -> None:
        self.pieces.labels(source).inc()
        self.bytes.labels(source).inc(length)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST


class _UploadCollector(Collector):
    """Reads the upload counters the piece server keeps anyway, when scraped."""

    def __init__(self, throttle: UploadThrottle) -> None:
        self.throttle = throttle

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        statistics = self.throttle.statistics()
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
