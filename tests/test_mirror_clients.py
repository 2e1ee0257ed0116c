"""Real clients pull an image through the mirror: containerd's ``ctr`` and skopeo.

containerd reads a hosts.toml that lists the daemon's mirror first and the registry
itself as ``server``, its fallback; skopeo reads a registries.conf that gives the
registry the mirror as a ``[[registry.mirror]]``. Each containerd here belongs to
one test (its own root, state and socket) and unpacks with the ``native``
snapshotter, so neither overlayfs nor the system's containerd is needed; the tests
read the unpacked files through ``ctr images mount`` (a bind mount: root only).

The registry's access log tells what left it: when the mirror does its work, each
blob once plus the daemon's 1-byte size probe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from .cluster import Cluster, Daemon
from .images import Image, push_image
from .origin import free_port
from .registry import Registry

pytestmark = pytest.mark.registry

SNAPSHOTTER = "native"
_COMMAND_SECONDS = 60.0
_START_SECONDS = 20.0


def _needs(*tools: str) -> pytest.MarkDecorator:
    absent = [tool for tool in tools if shutil.which(tool) is None]
    reason = f"needs {', '.join(absent)}: install with `bash .ci/install-services`"
    return pytest.mark.skipif(bool(absent), reason=reason)


needs_containerd = _needs("containerd", "ctr")
needs_skopeo = _needs("skopeo")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="containerd runs as root")


def run(argv: list[str]) -> str:
    """Run a client to the end; its output, or an AssertionError that shows it."""
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_COMMAND_SECONDS,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done.stdout


class Containerd:
    """A private containerd, driven through ``ctr``."""

    def __init__(self, address: str) -> None:
        self.address = address

    def ctr(self, *args: str) -> str:
        return run(["ctr", "--address", self.address, *args])

    def pull(self, image: Image, hosts: Path) -> None:
        """Fetch and unpack ``image`` with the registry hosts in ``hosts``."""
        self.ctr(
            "images",
            "pull",
            f"--hosts-dir={hosts}",
            f"--snapshotter={SNAPSHOTTER}",
            image.reference,
        )

    def remove(self, image: Image) -> None:
        """Forget ``image``, and (at once, not at the next collection) its content
        and snapshots."""
        self.ctr("images", "rm", "--sync", image.reference)

    def images(self) -> dict[str, str]:
        """The digest of each image containerd holds, by reference."""
        rows = [line.split() for line in self.ctr("images", "ls").splitlines()[1:]]
        return {row[0]: row[2] for row in rows if row}

    def content(self) -> set[str]:
        return set(self.ctr("content", "ls", "--quiet").split())

    def unpacked(self, image: Image, target: Path) -> dict[str, bytes]:
        """The files of ``image`` as unpacked, by path: its snapshot, mounted on
        ``target`` for the time it takes to read them."""
        snapshotter = f"--snapshotter={SNAPSHOTTER}"
        target.mkdir(exist_ok=True)
        self.ctr("images", "mount", snapshotter, image.reference, str(target))
        try:
            return {
                str(path.relative_to(target)): path.read_bytes()
                for path in target.rglob("*")
                if path.is_file()
            }
        finally:
            self.ctr("images", "unmount", snapshotter, "--rm", str(target))


def _config(directory: Path, address: str) -> str:
    """A containerd config of our own paths; JSON strings are TOML basic strings."""
    return (
        "version = 2\n"
        f"root = {json.dumps(str(directory / 'root'))}\n"
        f"state = {json.dumps(str(directory / 'state'))}\n"
        # Kubernetes' plugin wants CNI and more; ctr needs none of it.
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f"[grpc]\n  address = {json.dumps(address)}\n"
        f"[ttrpc]\n  address = {json.dumps(address + '.ttrpc')}\n"
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f"  path = {json.dumps(str(directory / 'opt'))}\n"
    )


def _wait_ready(process: subprocess.Popen[bytes], socket: Path, log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if socket.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"containerd did not start:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def run_containerd(directory: Path) -> Iterator[Containerd]:
    """Run a containerd of its own under ``directory`` until the block ends."""
    with ExitStack() as stack:
        # A unix socket's path has at most 107 bytes; the test's folder, and the
        # temporary directory, may be deeper.
        temporary = tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp")
        sockets = Path(stack.enter_context(temporary))
        socket = sockets / "containerd.sock"
        config = directory / "config.toml"
        config.write_text(_config(directory, str(socket)))
        log_path = directory / "containerd.log"
        log = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            ["containerd", f"--config={config}", "--log-level=debug"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, process)
        _wait_ready(process, socket, log_path)
        yield Containerd(str(socket))


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    directory = tmp_path / "containerd"
    directory.mkdir()
    with run_containerd(directory) as running:
        yield running


def write_hosts(
    directory: Path, registry: Registry, daemon: Daemon, *, header: bool = True
) -> Path:
    """A containerd hosts directory for ``registry``: pull and resolve through the
    mirror of ``daemon``, fall back to the registry. Without ``header`` the mirror
    learns the upstream from containerd's ``?ns=`` alone."""
    mirror = f"http://127.0.0.1:{daemon.proxy_port}"
    lines = [
        f"server = {json.dumps(registry.url)}",
        "",
        f"[host.{json.dumps(mirror)}]",
        '  capabilities = ["pull", "resolve"]',
    ]
    if header:
        lines += [
            f"  [host.{json.dumps(mirror)}.header]",
            f"    X-Dragonfly-Registry = [{json.dumps(registry.url)}]",
        ]
    (directory / registry.host).mkdir(parents=True)
    (directory / registry.host / "hosts.toml").write_text("\n".join(lines) + "\n")
    return directory


def blobs_sent(registry: Registry, image: Image) -> dict[str, int]:
    """Body bytes the registry sent for each blob of ``image``."""
    digests = [image.config_digest, *(layer.digest for layer in image.layers)]
    return {digest: registry.blob_bytes(digest) for digest in digests}


def blobs_once(image: Image, direct: int = 0) -> dict[str, int]:
    """``blobs_sent`` when the mirror fetched each blob once (with its 1-byte probe),
    and clients fetched it ``direct`` more times from the registry itself."""
    sizes = {image.config_digest: len(image.config)}
    sizes |= {layer.digest: len(layer.data) for layer in image.layers}
    return {digest: size * (1 + direct) + 1 for digest, size in sizes.items()}


# containerd


@needs_containerd
@needs_root
def test_containerd_pulls_through_the_mirror_cold_then_warm(
    tmp_path: Path, cluster: Cluster, registry: Registry, containerd: Containerd
) -> None:
    image = push_image(registry)
    daemon = cluster.start_daemon("node0", f"--registry={registry.url}")
    hosts = write_hosts(tmp_path / "hosts", registry, daemon)

    containerd.pull(image, hosts)
    cold = containerd.unpacked(image, tmp_path / "rootfs")
    containerd.remove(image)
    left = containerd.content()
    local = daemon.metric("dragonpy_proxy_bytes_total", source="local")

    containerd.pull(image, hosts)
    warm = containerd.unpacked(image, tmp_path / "rootfs")

    assert containerd.images() == {image.reference: image.digest}
    assert cold == warm == image.files()
    assert not left, "the warm pull found blobs of the cold one in containerd"
    assert blobs_sent(registry, image) == blobs_once(image), cluster.logs()
    # The cold pull fetched every blob from the registry; the warm one was served
    # from the store.
    assert daemon.metric("dragonpy_download_bytes_total", source="origin") == image.size
    sent_from_store = daemon.metric("dragonpy_proxy_bytes_total", source="local")
    assert sent_from_store - local == image.size


@needs_containerd
@needs_root
def test_containerd_names_the_registry_with_ns(
    tmp_path: Path, cluster: Cluster, registry: Registry, containerd: Containerd
) -> None:
    """Without X-Dragonfly-Registry the mirror goes by ``?ns=``, not by its default
    registry (here one where nothing listens)."""
    image = push_image(registry)
    nowhere = f"http://127.0.0.1:{free_port()}"
    daemon = cluster.start_daemon(
        "node0", f"--registry={nowhere}", f"--registry={registry.url}"
    )
    hosts = write_hosts(tmp_path / "hosts", registry, daemon, header=False)

    containerd.pull(image, hosts)

    assert containerd.images() == {image.reference: image.digest}
    assert containerd.unpacked(image, tmp_path / "rootfs") == image.files()
    assert blobs_sent(registry, image) == blobs_once(image), cluster.logs()


@needs_containerd
@needs_root
def test_three_mirrors_in_turn_take_an_image_from_the_registry_once(
    tmp_path: Path, cluster: Cluster, registry: Registry, containerd: Containerd
) -> None:
    image = push_image(registry)
    cluster.start_scheduler()
    daemons = [
        cluster.start_daemon(f"node{n}", f"--registry={registry.url}") for n in range(3)
    ]

    pulled = []
    for daemon in daemons:
        containerd.pull(image, write_hosts(tmp_path / daemon.name, registry, daemon))
        pulled.append(containerd.images().get(image.reference))
        containerd.remove(image)

    assert pulled == [image.digest] * 3
    assert blobs_sent(registry, image) == blobs_once(image), cluster.logs()
    from_peers = sum(
        daemon.metric("dragonpy_download_bytes_total", source="peer")
        for daemon in daemons
    )
    assert from_peers == 2 * image.size


@needs_containerd
@needs_root
def test_containerd_falls_back_to_the_registry_when_the_daemon_is_gone(
    tmp_path: Path, cluster: Cluster, registry: Registry, containerd: Containerd
) -> None:
    image = push_image(registry)
    daemon = cluster.start_daemon("node0", f"--registry={registry.url}")
    hosts = write_hosts(tmp_path / "hosts", registry, daemon)
    containerd.pull(image, hosts)
    containerd.remove(image)

    daemon.stop()
    containerd.pull(image, hosts)

    assert containerd.images() == {image.reference: image.digest}
    assert containerd.unpacked(image, tmp_path / "rootfs") == image.files()
    assert blobs_sent(registry, image) == blobs_once(image, direct=1)


# skopeo


def _registries_conf(path: Path, registry: Registry, daemon: Daemon) -> Path:
    """The registry, with the daemon's mirror tried first (containers-registries.conf
    version 2 format)."""
    path.write_text(
        "[[registry]]\n"
        f"prefix = {json.dumps(registry.host)}\n"
        f"location = {json.dumps(registry.host)}\n"
        "insecure = true\n"
        "\n"
        "[[registry.mirror]]\n"
        f'location = "127.0.0.1:{daemon.proxy_port}"\n'
        "insecure = true\n"
    )
    return path


@needs_skopeo
def test_skopeo_copies_through_the_mirror(
    tmp_path: Path, cluster: Cluster, registry: Registry
) -> None:
    """skopeo names no upstream: the daemon serves its first --registry."""
    image = push_image(registry)
    daemon = cluster.start_daemon("node0", f"--registry={registry.url}")
    conf = _registries_conf(tmp_path / "registries.conf", registry, daemon)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    copied = tmp_path / "copied"

    # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; the flag is hidden but works.
    run(
        [
            "skopeo",
            f"--registries-conf={conf}",
            f"--policy={policy}",
            f"--tmpdir={tmp_path}",
            "copy",
            "--src-tls-verify=false",
            f"docker://{image.reference}",
            f"dir:{copied}",
        ]
    )

    assert (copied / "manifest.json").read_bytes() == image.manifest
    for layer in image.layers:
        name = layer.digest.removeprefix("sha256:")
        assert (copied / name).read_bytes() == layer.data
    assert blobs_sent(registry, image) == blobs_once(image), cluster.logs()
