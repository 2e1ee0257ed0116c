"""``dragonpy get``: download one URL, like curl, through the piece store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs
import click

from dragonpy import (
    BackendOptions,
    Credentials,
    Download,
    Downloader,
    DownloadResult,
    check_digest_syntax,
)
from dragonpy._handoff import (
    DaemonUnavailable,
    DownloadOrder,
    control_socket_path,
    order_download,
)

from ._common import open_cli_store, reports_errors, store_options

if TYPE_CHECKING:
    from rich.progress import Progress


def _parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise click.BadParameter(f"{text!r} is not a header like 'Name: value'")
    return name.strip(), value.strip()


def _parse_user(text: str | None) -> Credentials | None:
    if text is None:
        return None
    username, colon, password = text.partition(":")
    if not colon:
        raise click.BadParameter("--user takes NAME:PASSWORD")
    return Credentials(username, password)


@click.command()
@click.argument("url")
@click.option(
    "-O",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the content (replaced only once it is complete and verified).",
)
@click.option("--digest", help="Expected digest, sha256:<hex> or sha512:<hex>.")
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value' to send.")
@click.option("-u", "--user", help="NAME:PASSWORD for the origin or registry.")
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=8, show_default=True
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds.")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True)
@click.option("--read-timeout", type=float, default=30.0, show_default=True)
@click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True)
@click.option("--cacert", type=click.Path(exists=True, dir_okay=False), help="CA file.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--tag", default="", help="Tells apart tasks with the same URL.")
@click.option("--application", default="", help="Tells apart tasks with the same URL.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a tty)."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@store_options
@reports_errors
def get(
    url: str,
    output: Path,
    digest: str | None,
    headers: tuple[str, ...],
    user: str | None,
    concurrency: int,
    timeout: float | None,
    connect_timeout: float,
    read_timeout: float,
    retries: int,
    cacert: str | None,
    insecure: bool,
    tag: str,
    application: str,
    progress: bool | None,
    quiet: bool,
    as_json: bool,
    store_dir: Path,
    store_capacity: str,
) -> None:
    """Download URL (http, https, oci, file) to a file."""
    try:
        digest = None if digest is None else check_digest_syntax(digest)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--digest") from exc

    options = BackendOptions(
        headers=dict(map(_parse_header, headers)),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries=retries,
        verify_tls=not insecure,
        ca_file=cacert,
        credentials=_parse_user(user),
    )
    request = Download(url, tag=tag, application=application, digest=digest)
    show_progress = sys.stderr.isatty() and not quiet if progress is None else progress
    store = open_cli_store(store_dir, store_capacity)

    # Credentials and TLS settings stay in this process: only plain requests are
    # handed to a local daemon.
    if user is None and cacert is None and not insecure:
        _through_daemon(store.directory, request, dict(options.headers), timeout)

    async def run() -> DownloadResult:
        async with Downloader(
            store=store, options=options, concurrency=concurrency
        ) as downloader:
            if not show_progress:
                return await downloader.download(request, output, timeout=timeout)
            with _progress_bar() as bar:
                task = bar.add_task(output.name, total=None)
                return await downloader.download(
                    request,
                    output,
                    timeout=timeout,
                    on_progress=lambda done, total: bar.update(
                        task, completed=done, total=total
                    ),
                )

    result = anyio.run(run)
    _report(result, quiet=quiet, as_json=as_json)


def _through_daemon(
    store_dir: str,
    request: Download,
    headers: dict[str, str],
    timeout: float | None,
) -> None:
    """Have the daemon sharing our store download the task into it, if one runs;
    the content is then copied out of the store without asking the origin."""
    socket_path = control_socket_path(store_dir)
    if not os.path.exists(socket_path):
        return

    order = DownloadOrder(
        request.url,
        headers=headers,
        tag=request.tag,
        application=request.application,
        digest=request.digest,
    )
    try:
        order_download(socket_path, order, timeout=timeout)
    except DaemonUnavailable as exc:
        # The pieces the daemon stored stay: this process resumes from them.
        click.echo(f"dragonpy: warning: {exc}; downloading without it", err=True)


def _progress_bar() -> Progress:
    # Imported here: rich costs start-up time that quiet runs need not pay.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    # On stderr, so that stdout stays clean for --json.
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _report(result: DownloadResult, *, quiet: bool, as_json: bool) -> None:
    if as_json:
        fields = attrs.asdict(result)
        fields["path"] = str(result.path)
        click.echo(json.dumps(fields))
    elif not quiet:
        rate = result.content_length / max(result.duration, 1e-9) / 1e6
        click.echo(
            f"{result.path}: {result.content_length} bytes in {result.duration:.2f} s "
            f"({rate:.0f} MB/s; {result.bytes_from_origin} from origin, "
            f"{result.bytes_from_store} from store)",
            err=True,
        )
