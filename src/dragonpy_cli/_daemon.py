"""``dragonpy-daemon`` (also ``dragonpy daemon``): run a peer of the swarm."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from dragonpy import StorePolicy, UploadLimits
from dragonpy._daemon import Daemon, DaemonConfig, ProxyConfig
from dragonpy._daemon._proxy import DEFAULT_RULES
from dragonpy._transport import TRANSPORTS

from ._common import parse_size, store_options
from ._serve import configure_logging, log_level_option, run_until_signalled
from ._tracing import configure_tracing, otlp_option


@click.command()
@store_options
@click.option("--scheduler", metavar="HOST:PORT", help="Join this scheduler's swarm.")
@click.option("--seed", is_flag=True, help="Fetch from the origin when asked to.")
@click.option("--ip", default="127.0.0.1", show_default=True, help="Address peers use.")
@click.option("--hostname", default=socket.gethostname, help="Name of this host.")
@click.option("--listen", default="0.0.0.0", show_default=True)
@click.option(
    "--piece-port", type=click.IntRange(0, 65535), default=4000, show_default=True
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=4002, show_default=True
)
@click.option(
    "--health-port", type=click.IntRange(0, 65535), default=4003, show_default=True
)
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default=TRANSPORTS[0],
    show_default=True,
)
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=8, show_default=True
)
@click.option(
    "--upload-capacity",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Pieces served to peers at once; more requests wait their turn.",
)
@click.option(
    "--origin-concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Pieces fetched from the origin at once.",
)
@click.option(
    "--upload-rate",
    help="Bytes per second served to peers, like 100MB (default: no limit).",
)
@click.option(
    "--proxy-port",
    type=click.IntRange(0, 65535),
    default=4001,
    show_default=True,
    help="Port of the registry mirror.",
)
@click.option(
    "--registry",
    "registries",
    multiple=True,
    metavar="URL",
    help="An upstream registry the mirror serves; the first is the default.",
)
@click.option(
    "--allow-any-registry",
    is_flag=True,
    help="Serve any upstream a request names (an open relay: trusted networks only).",
)
@click.option(
    "--p2p-rule",
    "rules",
    multiple=True,
    metavar="REGEX",
    help=f"Paths that go peer to peer (default: {DEFAULT_RULES[0]}).",
)
@click.option(
    "--proxy-stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a blob answer may wait for its next piece before it is cut off.",
)
@click.option(
    "--prefetch",
    is_flag=True,
    help="After a range read, bring the rest of the blob into the store too.",
)
@click.option("--idc", default="", help="Data center, for affinity.")
@click.option("--location", default="", help="country|region|city|zone|rack.")
@click.option(
    "--piece-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a parent has to deliver a piece before it is dropped as too slow.",
)
@click.option(
    "--fallback-after",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds without the scheduler before going to the origin directly.",
)
@otlp_option
@log_level_option
def daemon(
    store_dir: Path,
    store_capacity: str,
    scheduler: str | None,
    seed: bool,
    ip: str,
    hostname: str,
    listen: str,
    piece_port: int,
    metrics_port: int,
    health_port: int,
    transport: str,
    concurrency: int,
    origin_concurrency: int,
    upload_capacity: int,
    upload_rate: str | None,
    proxy_port: int,
    registries: tuple[str, ...],
    allow_any_registry: bool,
    rules: tuple[str, ...],
    proxy_stall_timeout: float,
    prefetch: bool,
    idc: str,
    location: str,
    piece_timeout: float,
    fallback_after: float,
    otlp_endpoint: str | None,
    log_level: str,
) -> None:
    """Serve pieces to peers and download through the swarm."""
    configure_logging(log_level)
    configure_tracing("dragonpy-daemon", otlp_endpoint)
    try:
        config = DaemonConfig(
            store_dir=store_dir,
            scheduler=scheduler,
            seed=seed,
            ip=ip,
            hostname=hostname,
            listen=listen,
            piece_port=piece_port,
            metrics_port=metrics_port,
            health_port=health_port,
            transport=transport,
            concurrency=concurrency,
            origin_concurrency=origin_concurrency,
            upload=UploadLimits(
                upload_capacity,
                None if upload_rate is None else parse_size(upload_rate),
            ),
            idc=idc,
            location=location,
            proxy=ProxyConfig(
                port=proxy_port,
                registries=registries,
                allow_any_registry=allow_any_registry,
                rules=rules or DEFAULT_RULES,
                stall_timeout=proxy_stall_timeout,
                prefetch=prefetch,
            ),
            store_policy=StorePolicy(capacity=parse_size(store_capacity)),
            piece_timeout=piece_timeout,
            fallback_after=fallback_after,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    run_until_signalled(Daemon(config).run)


def main() -> None:
    daemon(prog_name="dragonpy-daemon")
