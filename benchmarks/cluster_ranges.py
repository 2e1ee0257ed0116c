"""Scale of the origin requests: N peers read the same blob Nydus-style (1 MiB
``Range`` reads at random offsets) through their local daemon's registry mirror;
how many requests and bytes reach the registry, against N.

The origin is a real ``docker-registry`` (distribution, Debian's package) on its
own lab host, holding the blob under ``bench/layer``; the peers run a scheduler's
swarm of daemons whose mirrors serve that registry, and each peer runs
``_range_reader.py`` against its daemon (``X-Dragonfly-Registry``, no prefetch).
Every peer reads the same offsets, as nodes that start the same image do. The
``direct`` contender reads the same ranges from the registry itself, to compare.

A range read brings whole pieces (4 MiB for these blobs), so one peer's origin
bytes exceed the bytes it read; what the swarm promises is that the figure stays
flat as N grows. Requests are counted from the registry's access log.

    nox -s bench_cluster -- cluster_ranges [--size 128MiB] [--peers 1 2 4 8]

Needs root. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Host, Lab, can_build_labs

from _cluster import (
    REPOSITORY,
    TOPOLOGIES,
    WORKDIR,
    RegistryOrigin,
    children_cpu,
    dragonpy_swarm,
    make_blob,
    print_and_write,
    shape_hosts,
    stop,
)
from _origin import MIB, BenchmarkError, parse_size

READ_TIMEOUT: Final = 600.0
COLUMNS: Final = [
    "topology", "peers", "contender", "origin_gets", "origin_bytes_mib",
    "read_mib", "read_p50_ms", "read_p99_ms", "last_s", "cpu_s_per_gib",
]  # fmt: skip
_READER: Final = Path(__file__).resolve().parent / "_range_reader.py"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=128 * MIB)
    parser.add_argument("--peers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--reads", type=int, default=16, help="reads per peer")
    parser.add_argument(
        "--topology", choices=sorted(TOPOLOGIES), default="origin-limited"
    )
    parser.add_argument(
        "--contenders",
        choices=["dragonpy", "direct"],
        nargs="+",
        default=["dragonpy", "direct"],
    )
    parser.add_argument("--json", type=Path, default=WORKDIR / "cluster_ranges.json")
    return parser.parse_args(argv)


def read_everywhere(
    peers: Sequence[Host], url: str, registry: str, reads: int
) -> tuple[list[float], float]:
    """Every peer's reads at once: all the latencies, and when the last ended."""
    outputs = [WORKDIR / f"{peer.name}.reads.json" for peer in peers]
    began = time.monotonic()
    processes = []
    for peer, output in zip(peers, outputs, strict=True):
        argv = [
            sys.executable, str(_READER), url, f"--registry={registry}",
            f"--reads={reads}", f"--out={output}",
        ]  # fmt: skip
        log = WORKDIR / f"{peer.name}.reads.log"
        processes.append(peer.spawn(argv, log=log))
    for peer, process in zip(peers, processes, strict=True):
        if process.wait(timeout=READ_TIMEOUT) != 0:
            raise BenchmarkError(f"the reader on {peer.name} failed: see its log")
    last = time.monotonic() - began
    latencies = [
        latency
        for output in outputs
        for latency in json.loads(output.read_text())["latencies_s"]
    ]
    return latencies, last


def ranges(args: argparse.Namespace, peers: int, blob: Path) -> list[dict[str, Any]]:
    results = []
    with Lab.open("dpr", "198.18.11") as lab:
        origin_host = lab.add_host("origin")
        scheduler = lab.add_host("sched")
        hosts = [lab.add_host(f"peer{n}") for n in range(peers)]
        shape_hosts(args.topology, origin_host, hosts)
        origin = RegistryOrigin(origin_host)
        digest = origin.push(blob)
        blob_url = origin.blob_url(digest)
        mirror = f"http://127.0.0.1:4001/v2/{REPOSITORY}/blobs/{digest}"
        for contender in args.contenders:
            subprocess.run(["rm", "-rf", str(WORKDIR / "stores")], check=True)
            gets, sent = origin.served(digest)
            cpu = children_cpu()
            if contender == "dragonpy":
                daemon_args = [f"--registry={origin.url}"]
                with dragonpy_swarm(scheduler, hosts, daemon_args):
                    latencies, last = read_everywhere(
                        hosts, mirror, origin.url, args.reads
                    )
            else:
                latencies, last = read_everywhere(
                    hosts, blob_url, origin.url, args.reads
                )
            cpu = children_cpu() - cpu
            after_gets, after_sent = origin.served(digest)
            latencies.sort()
            read = peers * args.reads * MIB
            summary = {
                "contender": contender,
                "topology": args.topology,
                "peers": peers,
                "origin_gets": after_gets - gets,
                "origin_bytes_mib": round((after_sent - sent) / MIB, 1),
                "read_mib": read // MIB,
                "read_p50_ms": round(statistics.median(latencies) * 1000),
                "read_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000),
                "last_s": round(last, 2),
                "cpu_s_per_gib": round(cpu / (read / 2**30), 1),
            }
            results.append(summary)
            print(json.dumps(summary), flush=True)
        stop(origin_host.processes[0])
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = can_build_labs()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    blob = make_blob(args.size)
    results = []
    for peers in args.peers:
        results.extend(ranges(args, peers, blob))
    print_and_write(
        args.json, COLUMNS, results, size=args.size, reads_per_peer=args.reads
    )


if __name__ == "__main__":
    main()
