"""Exporting a service's spans over OTLP, when asked to and when the ``otlp`` extra
(``pip install 'dragonpy[otlp]'``) is installed. Otherwise the OpenTelemetry API
stays a no-op."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click
from opentelemetry import trace

from ._settings import SettingOption

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("dragonpy")

_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"


def otlp_option(command: Callable[P, T]) -> Callable[P, T]:
    """``--otlp-endpoint``: where spans go (OTLP over HTTP)."""
    return click.option(
        "--otlp-endpoint",
        metavar="URL",
        # The variable is read with the configuration file, which it overrides.
        cls=SettingOption,
        key="tracing.otlpEndpoint",
        help="Export traces to this OTLP/HTTP collector, like http://jaeger:4318 "
        f"(default: ${_ENDPOINT_VARIABLE}; needs the dragonpy[otlp] extra).",
    )(command)


def configure_tracing(service: str, endpoint: str | None) -> None:
    """Install a tracer provider exporting in batches to ``endpoint``; nothing
    without an endpoint."""
    if not endpoint:
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "not exporting traces to %s: install dragonpy[otlp] for the exporter",
            endpoint,
        )
        return

    # Like the exporter reading the variable itself: the base URL of a collector.
    url = endpoint.rstrip("/") + "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    logger.info("exporting traces to %s", url)
