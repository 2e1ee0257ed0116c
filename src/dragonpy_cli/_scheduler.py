"""``dragonpy scheduler``: run the swarm's scheduler."""

from __future__ import annotations

import click

from dragonpy._scheduler import DEFAULT_PORT, SchedulerConfig, run_scheduler
from dragonpy._scheduler._server import DEFAULT_METRICS_PORT

from ._serve import configure_logging, log_level_option, run_until_signalled
from ._tracing import configure_tracing, otlp_option


@click.command()
@click.option("--listen", default="0.0.0.0", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_METRICS_PORT,
    show_default=True,
    help="Port of GET /metrics (Prometheus); 0 for none.",
)
@click.option(
    "--keepalive",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between host announces.",
)
@click.option(
    "--host-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Seconds of silence before a host is gone.",
)
@click.option(
    "--seed-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds a triggered seed has to register.",
)
@click.option(
    "--restart-grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds after start that resumed peers wait for their fetcher.",
)
@click.option(
    "--parent-limit", type=click.IntRange(1, 64), default=8, show_default=True
)
@otlp_option
@log_level_option
def scheduler(
    listen: str,
    port: int,
    metrics_port: int,
    keepalive: float,
    host_ttl: float,
    seed_timeout: float,
    restart_grace: float,
    parent_limit: int,
    otlp_endpoint: str | None,
    log_level: str,
) -> None:
    """Tell every peer whom to fetch from, so the origin serves each task once."""
    configure_logging(log_level)
    try:
        config = SchedulerConfig(
            keepalive=keepalive,
            host_ttl=host_ttl,
            seed_timeout=seed_timeout,
            restart_grace=restart_grace,
            parent_limit=parent_limit,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_tracing("dragonpy-scheduler", otlp_endpoint)
    metrics = metrics_port or None
    run_until_signalled(
        lambda: run_scheduler(listen, port, config, metrics_port=metrics)
    )
