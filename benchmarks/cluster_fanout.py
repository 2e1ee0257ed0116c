"""Cold fan-out of one blob to N peers on a shaped multi-host network, against
every peer pulling from the origin, and against the theoretical lower bound.

Each host is a network namespace (``tests/netlab.py``): an origin (nginx), a
scheduler, and N peers, each running a real ``dragonpy-daemon`` and ``dragonpy get``
through it. Links are shaped with tbf. Two topologies:

- ``origin-limited``: the origin's uplink is much slower than the peers' links;
- ``swarm-limited``: the origin is fast, the peers' uplinks are slow.

The lower bound for the last peer (the fluid model of file distribution, with
the goodput measured through tbf rather than the nominal rates) is

    T = max(S / u_origin, S / d_peer, N * S / (u_origin + N * u_peer))

    nox -s bench_cluster -- [--size 64MiB] [--peers 4 8] [--topology origin-limited]

Needs root. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Host, Lab, can_build_labs

from _origin import MIB, BenchmarkError, markdown_table, parse_size

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

_NGINX_CONF: Final = """\
daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {ip}:{port};
        root {root};
    }}
}}
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=64 * MIB)
    parser.add_argument("--peers", type=int, nargs="+", default=[4, 8])
    parser.add_argument(
        "--topology", choices=sorted(TOPOLOGIES), nargs="+", default=sorted(TOPOLOGIES)
    )
    parser.add_argument("--json", type=Path, default=WORKDIR / "cluster_fanout.json")
    return parser.parse_args(argv)


class Run:
    """One contender's fan-out: when each peer finished, origin bytes, CPU."""

    def __init__(self, contender: str, topology: str, peers: int) -> None:
        self.contender = contender
        self.topology = topology
        self.peers = peers
        self.finished: list[float] = []
        self.origin_bytes = 0
        self.cpu_seconds = 0.0

    def summary(self, size: int, bound: float) -> dict[str, Any]:
        times = sorted(self.finished)
        delivered = size * self.peers / 2**30
        return {
            "contender": self.contender,
            "topology": self.topology,
            "peers": self.peers,
            "first_s": round(times[0], 2),
            "p50_s": round(times[len(times) // 2], 2),
            "last_s": round(times[-1], 2),
            "last_vs_bound": round(times[-1] / bound, 2),
            "origin_bytes_vs_blob": round(self.origin_bytes / size, 2),
            "cpu_s_per_gib": round(self.cpu_seconds / delivered, 1),
            "finished_s": [round(t, 2) for t in self.finished],
        }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_all(
    spawn: Callable[[Host], subprocess.Popen[bytes]], peers: list[Host]
) -> list[float]:
    """Start one process per peer at once; the seconds until each ended."""
    started = time.monotonic()
    running = {peer.name: spawn(peer) for peer in peers}
    finished: dict[str, float] = {}
    while running:
        for name, process in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            if code != 0:
                raise BenchmarkError(f"{name}: exited with {code}")
            finished[name] = time.monotonic() - started
            del running[name]
        if time.monotonic() - started > RUN_TIMEOUT:
            raise BenchmarkError(f"still running after {RUN_TIMEOUT:g} s: {running}")
        time.sleep(0.02)
    return [finished[peer.name] for peer in peers]


def direct(origin: Host, peers: list[Host], url: str, topology: str) -> Run:
    """Every peer pulls the blob from the origin itself."""
    run = Run("origin direct", topology, len(peers))
    before, cpu = origin.traffic()[1], children_cpu()

    def curl(peer: Host) -> subprocess.Popen[bytes]:
        output = WORKDIR / f"{peer.name}.out"
        return peer.spawn(["curl", "-sf", "-o", str(output), url])

    run.finished = run_all(curl, peers)
    run.origin_bytes = origin.traffic()[1] - before
    run.cpu_seconds = children_cpu() - cpu
    return run


def dragonpy(
    origin: Host, scheduler: Host, peers: list[Host], url: str, topology: str
) -> Run:
    """A scheduler and a daemon per peer; each peer runs ``dragonpy get``."""
    run = Run("dragonpy", topology, len(peers))
    python = [sys.executable, "-m", "dragonpy_cli"]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    cpu = children_cpu()
    sched = scheduler.spawn(
        [*python, "scheduler", "--port", str(SCHEDULER_PORT), "--keepalive", "1"],
        log=WORKDIR / "scheduler.log",
        env=env,
    )
    daemons = []
    for peer in peers:
        argv = [
            *python, "daemon", f"--store={WORKDIR / 'stores' / peer.name}",
            f"--ip={peer.ip}", f"--hostname={peer.name}",
            f"--scheduler={scheduler.ip}:{SCHEDULER_PORT}",
        ]  # fmt: skip
        daemons.append(peer.spawn(argv, log=WORKDIR / f"{peer.name}.log", env=env))
    for peer in peers:
        _wait_healthy(peer)
    before = origin.traffic()[1]

    def get(peer: Host) -> subprocess.Popen[bytes]:
        store = WORKDIR / "stores" / peer.name
        output = WORKDIR / f"{peer.name}.out"
        argv = [*python, "get", url, "-O", str(output), f"--store={store}", "--json"]
        return peer.spawn(argv, log=WORKDIR / f"{peer.name}.get.log", env=env)

    try:
        run.finished = run_all(get, peers)
        run.origin_bytes = origin.traffic()[1] - before
    finally:
        for process in [*daemons, sched]:
            _stop(process)
    run.cpu_seconds = children_cpu() - cpu
    return run


def _wait_healthy(peer: Host) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = ["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:4003/healthy"]
        if peer.run(probe, timeout=5).returncode == 0:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"the daemon on {peer.name} did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measured_efficiency(sender: Host, receiver: Host) -> float:
    """Goodput over the nominal rate of a tbf-shaped uplink (TCP, 8 MiB)."""
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


def lower_bound(size: int, peers: int, rates: tuple[float, float, float]) -> float:
    origin_up, peer_up, peer_down = (rate * 1e6 / 8 for rate in rates)
    return max(
        size / origin_up,
        size / peer_down,
        peers * size / (origin_up + peers * peer_up),
    )


def fan_out(
    size: int, topology: str, peers: int, blob: Path
) -> tuple[list[Run], float, float]:
    nominal = TOPOLOGIES[topology]
    with Lab.open("dpb", "198.18.9") as lab:
        origin = lab.add_host("origin")
        scheduler = lab.add_host("sched")
        hosts = [lab.add_host(f"peer{n}") for n in range(peers)]
        efficiency = measured_efficiency(hosts[0], hosts[1])
        # Shaping is set after the probe: the probe replaced peer0's uplink.
        origin.shape(up_mbit=nominal[0], down_mbit=None)
        for host in hosts:
            host.shape(up_mbit=nominal[1], down_mbit=nominal[2])
        prefix = WORKDIR / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                prefix=prefix, ip=origin.ip, port=NGINX_PORT, root=blob.parent
            )
        )
        origin.spawn(["nginx", "-c", str(conf), "-p", str(prefix)])
        url = f"http://{origin.ip}:{NGINX_PORT}/{blob.name}"
        time.sleep(0.5)
        runs = []
        for contender in ("dragonpy", "direct"):
            _clean_outputs(hosts)
            if contender == "dragonpy":
                run = dragonpy(origin, scheduler, hosts, url, topology)
            else:
                run = direct(origin, hosts, url, topology)
            _check_outputs(hosts, blob)
            runs.append(run)
        goodput = tuple(rate * efficiency for rate in nominal)
        bound = lower_bound(size, peers, goodput)  # type: ignore[arg-type]
    return runs, bound, efficiency


def _clean_outputs(hosts: list[Host]) -> None:
    shutil.rmtree(WORKDIR / "stores", ignore_errors=True)
    for host in hosts:
        (WORKDIR / f"{host.name}.out").unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)


def _check_outputs(hosts: list[Host], blob: Path) -> None:
    size = blob.stat().st_size
    for host in hosts:
        output = WORKDIR / f"{host.name}.out"
        if output.stat().st_size != size:
            raise BenchmarkError(f"{host.name} wrote {output.stat().st_size} bytes")
    # Byte-for-byte on one peer; the sizes, and dragonpy's digests, cover the rest.
    if (WORKDIR / f"{hosts[-1].name}.out").read_bytes() != blob.read_bytes():
        raise BenchmarkError(f"{hosts[-1].name} wrote other bytes than the origin's")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = can_build_labs()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    WORKDIR.mkdir(parents=True, exist_ok=True)
    blob = WORKDIR / "www" / "blob.bin"
    if not blob.exists() or blob.stat().st_size != args.size:
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(os.urandom(args.size))

    results = []
    for topology in args.topology:
        for peers in args.peers:
            runs, bound, efficiency = fan_out(args.size, topology, peers, blob)
            for run in runs:
                summary = run.summary(args.size, bound)
                summary["bound_s"] = round(bound, 2)
                summary["tbf_efficiency"] = round(efficiency, 3)
                results.append(summary)
                print(json.dumps(summary), flush=True)

    columns = [
        "topology", "peers", "contender", "first_s", "p50_s", "last_s", "bound_s",
        "last_vs_bound", "origin_bytes_vs_blob", "cpu_s_per_gib",
    ]  # fmt: skip
    print()
    print(markdown_table(columns, [[str(r[c]) for c in columns] for r in results]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"size": args.size, "date": time.strftime("%Y-%m-%d"), "runs": results}
    args.json.write_text(json.dumps(record, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
