"""``dragonpy containerd-config``: point containerd's registry hosts at the mirror.

containerd reads ``<hosts dir>/<registry>/hosts.toml`` (``config_path`` of its CRI
registry section, or ``ctr --hosts-dir``). Each file written here lists the local
daemon's mirror as the first host to pull and resolve from, with the upstream named in
``X-Dragonfly-Registry``; containerd falls back to the ``server`` itself when the
mirror fails, so a pull never depends on the daemon. ``_default`` covers every other
registry: there the daemon learns the upstream from containerd's ``?ns=`` parameter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from dragonpy._daemon._proxy import registry_base

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_SERVER = "https://registry-1.docker.io"


def hosts_toml(server: str | None, mirror: str) -> str:
    """A hosts.toml that pulls through ``mirror`` and falls back to ``server``."""
    mirror_host = f"[host.{json.dumps(mirror)}]"
    lines = [f"server = {json.dumps(server)}", ""] if server else []
    lines += [mirror_host, '  capabilities = ["pull", "resolve"]']
    if server:
        lines += [
            "",
            f"[host.{json.dumps(mirror)}.header]",
            f"  X-Dragonfly-Registry = [{json.dumps(server)}]",
        ]
    return "\n".join(lines) + "\n"


def _server_of(registry: str) -> tuple[str, str]:
    """(directory name, upstream URL) of a registry given as a host or a URL."""
    if registry in (_DOCKER_HUB, "registry-1.docker.io"):
        return _DOCKER_HUB, _DOCKER_HUB_SERVER
    try:
        server = registry_base(registry)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REGISTRY") from exc
    return server.split("://", 1)[1], server


@click.command("containerd-config")
@click.argument("registries", nargs=-1, metavar="REGISTRY...")
@click.option(
    "--hosts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/containerd/certs.d"),
    show_default=True,
    help="containerd's config_path for registry hosts.",
)
@click.option(
    "--mirror",
    default="http://127.0.0.1:4001",
    show_default=True,
    help="The local daemon's registry mirror.",
)
@click.option("--default", "with_default", is_flag=True, help="Also write _default.")
@click.option("--dry-run", is_flag=True, help="Print the files instead of writing.")
def containerd_config(
    registries: tuple[str, ...],
    hosts_dir: Path,
    mirror: str,
    with_default: bool,
    dry_run: bool,
) -> None:
    """Write hosts.toml files that send containerd's pulls of REGISTRY... through
    the local daemon (e.g. docker.io ghcr.io registry.local:5000)."""
    if not registries and not with_default:
        raise click.UsageError("name at least one REGISTRY, or --default")
    try:
        mirror = registry_base(mirror)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mirror") from exc

    files = {}
    for registry in registries:
        directory, server = _server_of(registry)
        files[hosts_dir / directory / "hosts.toml"] = hosts_toml(server, mirror)
    if with_default:
        files[hosts_dir / "_default" / "hosts.toml"] = hosts_toml(None, mirror)

    for path, content in files.items():
        if dry_run:
            click.echo(f"# {path}\n{content}")
            continue
        _write(path, content)
        click.echo(f"wrote {path}", err=True)


def _write(path: Path, content: str) -> None:
    """Write ``path``, keeping what was there under a ``.bak`` name first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if path.read_text() == content:
            return
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d%H%M%S')}.bak")
        path.replace(backup)
        click.echo(f"kept the previous {path.name} as {backup}", err=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(content)
    partial.replace(path)
