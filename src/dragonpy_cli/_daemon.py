"""``dragonpy-daemon`` (also ``dragonpy daemon``): run a peer of the swarm."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import click

from dragonpy._config import DaemonSettings
from dragonpy._daemon import Daemon
from dragonpy._transport import TRANSPORTS

from ._common import store_options
from ._serve import configure_logging, log_options, run_until_signalled
from ._settings import LiveSettings, config_option, setting_option_of
from ._tracing import configure_tracing, otlp_option

setting_option = functools.partial(setting_option_of, DaemonSettings)


def _as_rules(regexes: Iterable[str]) -> list[dict[str, str]]:
    return [{"regex": regex} for regex in regexes]


@click.command()
@config_option
@store_options
@setting_option(
    "--scheduler",
    key="scheduler.addr",
    metavar="HOST:PORT",
    help="Join this scheduler's swarm.",
)
@setting_option(
    "--seed/--no-seed",
    key="seedPeer.enable",
    default=None,
    help="Fetch from the origin when asked to.",
)
@setting_option("--ip", key="host.ip", help="Address peers use.")
@setting_option("--hostname", key="host.hostname", help="Name of this host.")
@setting_option("--listen", key="server.listenIP")
@setting_option("--piece-port", key="upload.server.port", type=click.IntRange(0, 65535))
@setting_option(
    "--metrics-port", key="metrics.server.port", type=click.IntRange(0, 65535)
)
@setting_option(
    "--health-port", key="health.server.port", type=click.IntRange(0, 65535)
)
@setting_option(
    "--transport", key="upload.server.transport", type=click.Choice(TRANSPORTS)
)
@setting_option(
    "--concurrency", key="download.concurrentPieceCount", type=click.IntRange(1, 256)
)
@setting_option(
    "--upload-capacity",
    key="upload.concurrentPieceCount",
    type=click.IntRange(1, 4096),
    help="Pieces served to peers at once; as many more wait, the rest are busy.",
)
@setting_option(
    "--origin-concurrency",
    key="download.backToSourceConcurrentPieceCount",
    type=click.IntRange(1, 64),
    help="Pieces fetched from the origin at once.",
)
@setting_option(
    "--upload-rate",
    key="upload.bandwidthLimit",
    help="Bytes per second served to peers, like 100MB (default: no limit).",
)
@setting_option(
    "--proxy-port",
    key="proxy.server.port",
    type=click.IntRange(0, 65535),
    help="Port of the registry mirror.",
)
@setting_option(
    "--registry",
    "registries",
    key="proxy.registries",
    multiple=True,
    metavar="URL",
    help="An upstream registry the mirror serves; the first is the default.",
)
@setting_option(
    "--allow-any-registry/--no-allow-any-registry",
    key="proxy.allowAnyRegistry",
    default=None,
    help="Serve any upstream a request names (an open relay: trusted networks only).",
)
@setting_option(
    "--p2p-rule",
    "rules",
    key="proxy.rules",
    to_setting=_as_rules,
    multiple=True,
    metavar="REGEX",
    help="Paths that go peer to peer (default: blobs/sha256.*).",
)
@setting_option(
    "--proxy-stall-timeout",
    key="proxy.stallTimeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a blob answer may wait for its next piece before it is cut off.",
)
@setting_option(
    "--prefetch/--no-prefetch",
    key="proxy.prefetch",
    default=None,
    help="After a range read, bring the rest of the blob into the store too.",
)
@setting_option("--idc", key="host.idc", help="Data center, for affinity.")
@setting_option(
    "--location", key="host.location", help="country|region|city|zone|rack."
)
@setting_option(
    "--piece-timeout",
    key="download.pieceTimeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a parent has to deliver a piece before it is dropped as too slow.",
)
@setting_option(
    "--fallback-after",
    key="scheduler.fallbackAfter",
    type=click.FloatRange(min=0),
    help="Seconds without the scheduler before going to the origin directly.",
)
@otlp_option
@log_options
@click.pass_context
def daemon(context: click.Context, /, **_: object) -> None:
    """Serve pieces to peers and download through the swarm.

    Settings come from --config FILE, DRAGONPY_* variables and these options, each
    overriding the one before (docs/config.md); SIGHUP reloads the file.
    """
    settings = LiveSettings(DaemonSettings, context)
    configure_logging(settings.current.log.level, settings.current.log.format)
    configure_tracing("dragonpy-daemon", settings.current.tracing.otlp_endpoint)
    node = Daemon(settings.current.daemon_config())

    def reload() -> None:
        if settings.reload():
            configure_logging(settings.current.log.level, settings.current.log.format)
            node.reconfigure(settings.current.daemon_config())

    run_until_signalled(node.run, reload)


def main() -> None:
    daemon(prog_name="dragonpy-daemon")
