"""What the library reports about itself without depending on any exporter.

Spans go through the OpenTelemetry API: they cost next to nothing until a process
installs a tracer provider (``dragonpy-daemon --otlp-endpoint``, or the embedding
application). The W3C trace context crosses processes in a ``traceparent`` header
(HTTP) or field (the ``tcp`` transport), so that a proxy request, its download, the
scheduler's answers and the piece transfers form one trace.

``LatencyHistogram`` counts durations in plain integers, for the parts that must not
import Prometheus (transports); a collector turns it into a histogram at scrape time.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Mapping, MutableMapping
from typing import Final

from opentelemetry import context, propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

__all__ = [
    "LATENCY_BUCKETS",
    "LatencyHistogram",
    "child_span",
    "context_from_traceparent",
    "extract_headers",
    "inject_headers",
    "traceparent",
    "tracer",
]

tracer: Final = trace.get_tracer("dragonpy")

#: Upper bounds (seconds) of latency buckets: a piece over loopback takes about a
#: millisecond, one from a slow origin tens of seconds.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# The tcp transport's field is W3C trace context whatever propagators the process
# configured for HTTP.
_W3C: Final = TraceContextTextMapPropagator()


class LatencyHistogram:
    """Durations counted by bucket. Not thread-safe: observed from one event loop."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # A bucket counts durations up to and including its bound.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, count at or below it) pairs, ``+Inf`` last, as Prometheus
        histograms expose them."""
        pairs: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return pairs


def child_span(
    name: str,
    kind: trace.SpanKind,
    attributes: Attributes,
    parent: context.Context | None = None,
) -> contextlib.AbstractContextManager[object]:
    """A span of ``name`` in the trace under way (the current one, or ``parent``'s
    when given), else none.

    Background chatter (announces, a seed's wait for triggers) starts no trace of
    its own, and with no tracer provider installed no context is ever valid: the
    calls on every piece then cost a context lookup, not a span (see
    ``benchmarks/tracing_overhead.py``).
    """
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    )


def inject_headers(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to outgoing HTTP headers (nothing when no span
    is recording)."""
    propagate.inject(headers)


def extract_headers(headers: Mapping[str, str]) -> context.Context:
    """The trace context incoming HTTP headers carry, for the spans that answer."""
    return propagate.extract(headers)


def traceparent() -> str:
    """The current span as a W3C ``traceparent`` value, or "" without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(value: str) -> context.Context | None:
    """The trace context of a ``traceparent`` value; None for none."""
    if not value:
        return None
    return _W3C.extract({"traceparent": value})
