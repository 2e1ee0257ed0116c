"""What the multi-host scenarios share: the topologies, the origin, the contenders and
the timing of a fan-out on a lab of network namespaces (``tests/netlab.py``).

A contender is one way of getting the blob to every peer: dragonpy, every peer
pulling from the origin, a central nginx cache, a BitTorrent swarm. Each knows how
to set itself up on the lab, how to start one peer's download, how to tell that the
download is finished and where it wrote the blob; ``run_peers`` starts the
downloads, times them and checks the outputs, the same way for all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Host

from _origin import MIB, BenchmarkError, markdown_table, nginx_conf

#: Mbit/s: (origin up, peer up, peer down). Rates the two-core machine drives
#: with CPU to spare; the ratios are those of 100/400 Mbit/s links.
TOPOLOGIES: Final = {
    "origin-limited": (40.0, 160.0, 160.0),
    "swarm-limited": (160.0, 40.0, 160.0),
}
ROOT: Final = Path(__file__).resolve().parents[1]
WORKDIR: Final = Path("/tmp/dragonpy-bench-cluster")
NGINX_PORT: Final = 8080
SCHEDULER_PORT: Final = 8002
RUN_TIMEOUT: Final = 900.0
#: The Python that has python3-libtorrent: Debian's, not the benchmark's venv.
SYSTEM_PYTHON: Final = "/usr/bin/python3"


# Runs and their figures


class Run:
    """One contender's fan-out: how long each peer took, origin bytes, CPU."""

    def __init__(self, contender: str, topology: str, peers: int) -> None:
        self.contender = contender
        self.topology = topology
        self.peers = peers
        self.finished: dict[str, float] = {}
        self.origin_bytes = 0
        self.cpu_seconds = 0.0
        #: Bytes each host's link sent during the run, by host name.
        self.sent: dict[str, int] = {}

    def summary(self, size: int, bound: float | None = None) -> dict[str, Any]:
        times = sorted(self.finished.values())
        delivered = size * len(times) / 2**30
        summary: dict[str, Any] = {
            "contender": self.contender,
            "topology": self.topology,
            "peers": self.peers,
            **timing(times),
            "origin_bytes_vs_blob": round(self.origin_bytes / size, 2),
            "cpu_s_per_gib": round(self.cpu_seconds / delivered, 1),
            "finished_s": {name: round(t, 2) for name, t in self.finished.items()},
            "sent_vs_blob": {name: round(n / size, 2) for name, n in self.sent.items()},
        }
        if bound is not None:
            summary["bound_s"] = round(bound, 2)
            summary["last_vs_bound"] = round(times[-1] / bound, 2)
        return summary


def timing(seconds: Sequence[float]) -> dict[str, float]:
    """First, median and last of some completion times."""
    times = sorted(seconds)
    return {
        "first_s": round(times[0], 2),
        "p50_s": round(times[len(times) // 2], 2),
        "last_s": round(times[-1], 2),
    }


def children_cpu() -> float:
    """CPU seconds of the processes started and waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_and_write(
    path: Path, columns: Sequence[str], results: list[dict[str, Any]], **record: Any
) -> None:
    """The results as a Markdown table on stdout, and with ``record`` as JSON."""
    print()
    rows = [[str(result.get(column, "")) for column in columns] for result in results]
    print(markdown_table(columns, rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "date": time.strftime("%Y-%m-%d"), "runs": results}
    path.write_text(json.dumps(record, indent=2))
    print(f"\nwritten to {path}")


# Contenders


class Contender:
    """One way to get the blob to the peers. ``source`` is the host whose uplink
    serves the original bytes (the origin, or the BitTorrent seeder); ``relays``
    are the other hosts that send to the peers (a seed daemon, a cache)."""

    name: str
    source: Host
    relays: Sequence[Host] = ()

    def running(self, peers: list[Host]) -> AbstractContextManager[None]:
        """Servers that must run while ``peers`` download (none by default)."""
        return nullcontext()

    def spawn(self, peer: Host) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def done(self, peer: Host, process: subprocess.Popen[bytes]) -> bool:
        """Whether ``peer`` has the blob; by default, when its process ended."""
        code = process.poll()
        if code is not None and code != 0:
            raise BenchmarkError(f"{self.name} on {peer.name}: exited with {code}")
        return code is not None

    def output(self, peer: Host) -> Path:
        return WORKDIR / f"{peer.name}.out"


class Direct(Contender):
    """Every peer pulls the blob from the origin itself (the OCIv1 case)."""

    name = "origin direct"

    def __init__(self, origin: Host, url: str) -> None:
        self.source = origin
        self.url = url

    def spawn(self, peer: Host) -> subprocess.Popen[bytes]:
        return peer.spawn(["curl", "-sf", "-o", str(self.output(peer)), self.url])


class Dragonpy(Contender):
    """A scheduler and a daemon per peer; each peer runs ``dragonpy get``. With a
    ``seed`` host, a seed daemon there fetches from the origin for the swarm."""

    def __init__(
        self, origin: Host, scheduler: Host, url: str, seed: Host | None = None
    ) -> None:
        self.name = "dragonpy" if seed is None else "dragonpy with a seed"
        self.source = origin
        self.scheduler = scheduler
        self.url = url
        self.seeds = [] if seed is None else [seed]
        self.relays = self.seeds

    def running(self, peers: list[Host]) -> AbstractContextManager[None]:
        return dragonpy_swarm(self.scheduler, peers, seeds=self.seeds)

    def spawn(self, peer: Host) -> subprocess.Popen[bytes]:
        argv = [
            *DRAGONPY, "get", self.url, "-O", str(self.output(peer)),
            f"--store={store_of(peer)}", "--json",
        ]  # fmt: skip
        log = WORKDIR / f"{peer.name}.get.log"
        return peer.spawn(argv, log=log, env=dragonpy_env())


DRAGONPY: Final = [sys.executable, "-m", "dragonpy_cli"]


def dragonpy_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def store_of(peer: Host) -> Path:
    return WORKDIR / "stores" / peer.name


@contextmanager
def dragonpy_swarm(
    scheduler: Host,
    peers: list[Host],
    daemon_args: Sequence[str] = (),
    *,
    seeds: Sequence[Host] = (),
) -> Iterator[None]:
    """A scheduler, a daemon on every peer and a seed daemon on every seed host,
    until the block ends."""
    argv = [*DRAGONPY, "scheduler", "--port", str(SCHEDULER_PORT), "--keepalive", "1"]
    processes = [
        scheduler.spawn(argv, log=WORKDIR / "scheduler.log", env=dragonpy_env())
    ]
    daemons = [(host, [*daemon_args, "--seed"]) for host in seeds]
    daemons += [(peer, list(daemon_args)) for peer in peers]
    try:
        for host, extra in daemons:
            argv = [
                *DRAGONPY, "daemon", f"--store={store_of(host)}",
                f"--ip={host.ip}", f"--hostname={host.name}",
                f"--scheduler={scheduler.ip}:{SCHEDULER_PORT}", *extra,
            ]  # fmt: skip
            log = WORKDIR / f"{host.name}.log"
            processes.append(host.spawn(argv, log=log, env=dragonpy_env()))
        for host, _ in daemons:
            _wait_healthy(host)
        yield
    finally:
        # Stopped, and so waited for, before the caller reads the CPU time.
        for process in reversed(processes):
            stop(process)


def _wait_healthy(peer: Host) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = ["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:4003/healthy"]
        if peer.run(probe, timeout=5).returncode == 0:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"the daemon on {peer.name} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Running a contender


def run_peers(
    contender: Contender,
    peers: list[Host],
    topology: str,
    *,
    late: Sequence[Host] = (),
    late_when: Callable[[], bool] | None = None,
) -> Run:
    """Start every peer's download at once, or ``late`` ones once ``late_when()``
    holds; the seconds each took from its own start, origin bytes and CPU."""
    run = Run(contender.name, topology, len(peers) + len(late))
    clean_outputs([*peers, *late])
    cpu = children_cpu()
    senders = [contender.source, *contender.relays, *peers, *late]
    with contender.running([*peers, *late]):
        before = {host.name: host.traffic()[1] for host in senders}
        run.finished = _time_downloads(contender, peers, late, late_when)
        run.sent = {h.name: h.traffic()[1] - before[h.name] for h in senders}
    run.origin_bytes = run.sent[contender.source.name]
    run.cpu_seconds = children_cpu() - cpu
    check_outputs(contender, [*peers, *late])
    return run


def _time_downloads(
    contender: Contender,
    peers: Sequence[Host],
    late: Sequence[Host],
    late_when: Callable[[], bool] | None,
) -> dict[str, float]:
    began = time.monotonic()
    started = {peer.name: began for peer in peers}
    running = {peer.name: (peer, contender.spawn(peer)) for peer in peers}
    waiting = list(late)
    finished: dict[str, float] = {}
    while running or waiting:
        if waiting and (late_when is None or late_when()):
            for peer in waiting:
                started[peer.name] = time.monotonic()
                running[peer.name] = (peer, contender.spawn(peer))
            waiting = []
        for name, (peer, process) in list(running.items()):
            if contender.done(peer, process):
                finished[name] = time.monotonic() - started[name]
                del running[name]
        if time.monotonic() - began > RUN_TIMEOUT:
            raise BenchmarkError(f"still running after {RUN_TIMEOUT:g} s: {running}")
        time.sleep(0.02)
    return {peer.name: finished[peer.name] for peer in [*peers, *late]}


def clean_outputs(hosts: Sequence[Host]) -> None:
    shutil.rmtree(WORKDIR / "stores", ignore_errors=True)
    for host in hosts:
        (WORKDIR / f"{host.name}.out").unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)


def check_outputs(contender: Contender, hosts: Sequence[Host]) -> None:
    blob = blob_path()
    size = blob.stat().st_size
    for host in hosts:
        written = contender.output(host).stat().st_size
        if written != size:
            raise BenchmarkError(f"{contender.name}: {host.name} wrote {written} bytes")
    # Byte-for-byte on one peer; the sizes, and each contender's own digests
    # (dragonpy's pieces, BitTorrent's), cover the rest.
    if contender.output(hosts[-1]).read_bytes() != blob.read_bytes():
        raise BenchmarkError(f"{contender.name}: {hosts[-1].name} wrote other bytes")


# The origin, the blob and the bound


def blob_path() -> Path:
    return WORKDIR / "www" / "blob.bin"


def make_blob(size: int) -> Path:
    """The random blob every scenario distributes; one of the right size stays."""
    blob = blob_path()
    if not blob.exists() or blob.stat().st_size != size:
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(os.urandom(size))
    return blob


def start_nginx(host: Host, name: str, *, server: str, http: str = "") -> str:
    """nginx on ``host``, port 8080, with ``server`` (and ``http``) directives;
    its base URL."""
    prefix = WORKDIR / name
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    conf = prefix / "nginx.conf"
    listen = f"{host.ip}:{NGINX_PORT}"
    conf.write_text(nginx_conf(prefix, listen, server=server, http=http, workers=1))
    host.spawn(["nginx", "-c", str(conf), "-p", str(prefix)])
    base = f"http://{host.ip}:{NGINX_PORT}"
    _wait_answering(host, base)
    return base


def start_origin(origin: Host, blob: Path) -> str:
    """nginx serving the blob's folder on ``origin``; the blob's URL."""
    base = start_nginx(origin, "nginx", server=f"        root {blob.parent};")
    return f"{base}/{blob.name}"


def _wait_answering(host: Host, url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if host.run(["curl", "-s", "-o", "/dev/null", url], timeout=5).returncode == 0:
            return
        time.sleep(0.05)
    raise BenchmarkError(f"nginx on {host.name} did not answer")


def measured_efficiency(sender: Host, receiver: Host) -> float:
    """Goodput over the nominal rate of a tbf-shaped uplink (TCP, 8 MiB). The
    sender's uplink is left shaped at 40 Mbit/s: shape it again afterwards."""
    sender.shape(up_mbit=40, down_mbit=None)
    python = [sys.executable, "-m", "tests._goodput"]
    listening = subprocess.Popen(
        ["ip", "netns", "exec", receiver.namespace, *python, "receive", "5201"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert listening.stdout is not None
    listening.stdout.readline()
    count = 8 * MIB
    sender.run([*python, "send", receiver.ip, "5201", str(count)], timeout=60)
    received, seconds = listening.communicate(timeout=60)[0].split()
    return int(received) * 8 / float(seconds) / 40e6


def lower_bound(size: int, peers: int, rates: Sequence[float]) -> float:
    """Seconds for the last of ``peers`` to hold ``size`` bytes, with (origin up,
    peer up, peer down) in Mbit/s of goodput (the fluid model)."""
    origin_up, peer_up, peer_down = (rate * 1e6 / 8 for rate in rates)
    return max(
        size / origin_up,
        size / peer_down,
        peers * size / (origin_up + peers * peer_up),
    )


def lower_bound_origin_once(size: int, peers: int, rates: Sequence[float]) -> float:
    """Like ``lower_bound``, for a swarm of peers only whose origin sends each byte
    once, to one of them: that peer must then send every byte on through its own
    uplink at least once, and the other N - 1 copies all cross the peers' uplinks
    (the larger of the two terms is the first, S / u_peer)."""
    origin_up, peer_up, peer_down = (rate * 1e6 / 8 for rate in rates)
    return max(size / origin_up, size / peer_down, size / peer_up)


REGISTRY_PORT: Final = 5000
REPOSITORY: Final = "bench/layer"
_REGISTRY_CONFIG: Final = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "{ip}:{port}"
  secret: lab-only
"""


class RegistryOrigin:
    """docker-registry on a lab host, and what its access log says it served."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.url = f"http://{host.ip}:{REGISTRY_PORT}"
        self.log = WORKDIR / "registry.log"
        root = WORKDIR / "registry"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        root.mkdir(parents=True)
        config = root / "config.yml"
        config.write_text(
            _REGISTRY_CONFIG.format(root=root, ip=host.ip, port=REGISTRY_PORT)
        )
        self.log.unlink(missing_ok=True)
        host.spawn(["docker-registry", "serve", str(config)], log=self.log)
        self._wait_ready()

    def blob_url(self, digest: str) -> str:
        return f"{self.url}/v2/{REPOSITORY}/blobs/{digest}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        probe = ["curl", "-sf", "-o", "/dev/null", f"{self.url}/v2/"]
        while self.host.run(probe, timeout=5).returncode != 0:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"docker-registry did not start: {self.log}")
            time.sleep(0.1)

    def push(self, blob: Path) -> str:
        """A monolithic upload (OCI distribution spec): POST opens it, one PUT
        with ``?digest=`` carries the bytes. Over the origin's loopback, so the
        upload crosses no shaped link."""
        digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
        opened = self.host.run(
            ["curl", "-sf", "-X", "POST", "-D", "-", "-o", "/dev/null",
             f"{self.url}/v2/{REPOSITORY}/blobs/uploads/"],
            timeout=30,
        )  # fmt: skip
        location = next(
            line.split(":", 1)[1].strip()
            for line in opened.stdout.splitlines()
            if line.lower().startswith("location:")
        )
        if location.startswith("/"):
            location = self.url + location
        put = self.host.run(
            ["curl", "-sf", "-X", "PUT", "--data-binary", f"@{blob}",
             "-H", "Content-Type: application/octet-stream",
             f"{location}&digest={digest}"],
            timeout=120,
        )  # fmt: skip
        if put.returncode != 0:
            raise BenchmarkError(f"pushing the blob failed: {put.stderr}")
        return digest

    def served(self, digest: str) -> tuple[int, int]:
        """GETs of blob ``digest`` and their body bytes so far (access log)."""
        gets, sent = 0, 0
        for line in self.log.read_text(errors="replace").splitlines():
            request, _, rest = line.partition('" ')
            if '"GET ' in request and f"/blobs/{digest} " in request:
                gets += 1
                sent += int(rest.split()[1])
        return gets, sent


def shape_hosts(topology: str, origin: Host, peers: Sequence[Host]) -> None:
    origin_up, peer_up, peer_down = TOPOLOGIES[topology]
    origin.shape(up_mbit=origin_up, down_mbit=None)
    for peer in peers:
        peer.shape(up_mbit=peer_up, down_mbit=peer_down)
