"""``dragonpy scheduler``: run the swarm's scheduler."""

from __future__ import annotations

import functools

import click

from dragonpy._config import SchedulerSettings
from dragonpy._scheduler import run_scheduler

from ._serve import configure_logging, log_options, run_until_signalled
from ._settings import LiveSettings, config_option, setting_option_of
from ._tracing import configure_tracing, otlp_option

setting_option = functools.partial(setting_option_of, SchedulerSettings)


@click.command()
@config_option
@setting_option("--listen", key="server.listenIP")
@setting_option("--port", key="server.port", type=click.IntRange(0, 65535))
@setting_option(
    "--metrics-port",
    key="metrics.server.port",
    type=click.IntRange(0, 65535),
    help="Port of GET /metrics (Prometheus); 0 for none.",
)
@setting_option(
    "--keepalive",
    key="scheduler.announceInterval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between host announces.",
)
@setting_option(
    "--host-ttl",
    key="gc.hostTTL",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds of silence before a host is gone.",
)
@setting_option(
    "--seed-timeout",
    key="scheduler.seedPeerTimeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a triggered seed has to register.",
)
@setting_option(
    "--restart-grace",
    key="scheduler.restartGrace",
    type=click.FloatRange(min=0),
    help="Seconds after start that resumed peers wait for their fetcher.",
)
@setting_option(
    "--parent-limit",
    key="scheduler.candidateParentLimit",
    type=click.IntRange(1, 64),
)
@otlp_option
@log_options
@click.pass_context
def scheduler(context: click.Context, /, **_: object) -> None:
    """Tell every peer whom to fetch from, so the origin serves each task once.

    Settings come from --config FILE, DRAGONPY_* variables and these options, each
    overriding the one before (docs/config.md); SIGHUP reloads the log settings.
    """
    settings = LiveSettings(SchedulerSettings, context)
    current = settings.current
    configure_logging(current.log.level, current.log.format)
    configure_tracing("dragonpy-scheduler", current.tracing.otlp_endpoint)
    server, metrics = current.server, current.metrics.server.port

    def reload() -> None:
        if settings.reload():
            configure_logging(settings.current.log.level, settings.current.log.format)

    run_until_signalled(
        lambda: run_scheduler(
            server.listen_ip,
            server.port,
            current.scheduler_config(),
            metrics_port=metrics or None,
        ),
        reload,
    )
