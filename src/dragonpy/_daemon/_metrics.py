"""A daemon's Prometheus metrics (served as text on the metrics port, 4002).

Bytes and pieces are counted by where they came from: ``local`` (already in the
store), ``peer``, ``seed`` or ``origin``. Throughput is the rate of the byte counters.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge

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
        self.upload_bytes = Counter(
            "dragonpy_upload_bytes",
            "Piece bytes served to other peers.",
            registry=self.registry,
        )
        self.upload_pieces = Counter(
            "dragonpy_upload_pieces",
            "Pieces served to other peers.",
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

    def piece(self, source: str, length: int) -> None:
        self.pieces.labels(source).inc()
        self.bytes.labels(source).inc(length)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    content_type = prometheus_client.CONTENT_TYPE_LATEST
