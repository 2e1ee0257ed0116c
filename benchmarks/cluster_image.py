"""Pull time of an image's layers in four states, as Dragonfly's documentation
tabulates them for Nydus: from the registry directly, through dragonpy cold, with
the layers on a remote peer, and with them in the local store.

The origin is a real ``docker-registry`` holding a few random layers; two peers run
daemons in a scheduler's swarm. The four states, in order:

1. ``origin direct``: peer A reads from the registry itself;
2. ``dragonpy cold``: peer A through its mirror, nobody holding anything;
3. ``remote peer``: peer B through its mirror, peer A holding the layers;
4. ``local store``: peer B again.

Two patterns, each on fresh stores: ``whole`` pulls every layer at once (as
containerd does), ``ranges`` reads 1 MiB ``Range``s at random offsets of every
layer, Nydus-style, with no prefetch. Times are wall-clock for all the layers.

    nox -s bench_cluster -- cluster_image [--layers 32MiB 64MiB 32MiB]

Needs root. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
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
    dragonpy_swarm,
    print_and_write,
    shape_hosts,
)
from _origin import MIB, BenchmarkError, ensure_test_file, parse_size

MIRROR: Final = "http://127.0.0.1:4001"
STATES: Final = ("origin direct", "dragonpy cold", "remote peer", "local store")
COLUMNS: Final = ["pattern", *STATES, "cold_vs_direct", "remote_vs_direct"]
_READER: Final = Path(__file__).resolve().parent / "_range_reader.py"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=parse_size, nargs="+", default=[32 * MIB, 64 * MIB, 32 * MIB]
    )
    parser.add_argument("--reads", type=int, default=8, help="range reads per layer")
    parser.add_argument(
        "--topology", choices=sorted(TOPOLOGIES), default="origin-limited"
    )
    parser.add_argument("--json", type=Path, default=WORKDIR / "cluster_image.json")
    return parser.parse_args(argv)


def pull(
    host: Host, base: str, digests: Sequence[str], pattern: str, args: Any
) -> float:
    """Seconds for ``host`` to get every layer from ``base``, all at once."""
    processes = []
    for digest in digests:
        url = f"{base}/v2/{REPOSITORY}/blobs/{digest}"
        header = f"X-Dragonfly-Registry: {args.registry}"
        if pattern == "whole":
            argv = ["curl", "-sf", "-o", "/dev/null", "-H", header, url]
        else:
            output = WORKDIR / f"{host.name}-{digest[7:19]}.reads.json"
            argv = [
                sys.executable, str(_READER), url, f"--registry={args.registry}",
                f"--reads={args.reads}", f"--out={output}",
            ]  # fmt: skip
        processes.append(host.spawn(argv, log=WORKDIR / f"{host.name}.image.log"))
    began = time.monotonic()
    for process in processes:
        if process.wait(timeout=600) != 0:
            raise BenchmarkError(f"a {pattern} pull on {host.name} failed")
    return time.monotonic() - began


def pattern_row(
    args: Any, pattern: str, origin: RegistryOrigin, hosts: list[Host], sched: Host
) -> dict[str, Any]:
    a, b = hosts
    subprocess.run(["rm", "-rf", str(WORKDIR / "stores")], check=True)
    row: dict[str, Any] = {"pattern": pattern}
    row["origin direct"] = pull(a, origin.url, args.digests, pattern, args)
    with dragonpy_swarm(sched, hosts, [f"--registry={origin.url}"]):
        row["dragonpy cold"] = pull(a, MIRROR, args.digests, pattern, args)
        row["remote peer"] = pull(b, MIRROR, args.digests, pattern, args)
        row["local store"] = pull(b, MIRROR, args.digests, pattern, args)
    row.update({state: round(row[state], 2) for state in STATES})
    row["cold_vs_direct"] = round(row["dragonpy cold"] / row["origin direct"], 2)
    row["remote_vs_direct"] = round(row["remote peer"] / row["origin direct"], 2)
    return row


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = can_build_labs()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    layers = [
        ensure_test_file(WORKDIR / "layers" / f"layer{n}.bin", size)
        for n, size in enumerate(args.layers)
    ]
    results = []
    with Lab.open("dpi", "198.18.12") as lab:
        origin_host = lab.add_host("origin")
        sched = lab.add_host("sched")
        hosts = [lab.add_host("peerA"), lab.add_host("peerB")]
        shape_hosts(args.topology, origin_host, hosts)
        origin = RegistryOrigin(origin_host)
        args.digests = [origin.push(layer) for layer in layers]
        args.registry = origin.url
        for pattern in ("whole", "ranges"):
            row = pattern_row(args, pattern, origin, hosts, sched)
            results.append(row)
            print(json.dumps(row), flush=True)
    print_and_write(
        args.json, COLUMNS, results, layers=args.layers, topology=args.topology
    )


if __name__ == "__main__":
    main()
