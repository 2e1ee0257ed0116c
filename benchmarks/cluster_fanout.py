"""Cold fan-out of one blob to N peers on a shaped multi-host network: dragonpy
against every peer pulling from the origin, a central pull-through cache, a
BitTorrent swarm, and the theoretical lower bound.

Each host is a network namespace (``tests/netlab.py``): an origin (nginx), a
scheduler, a cache host, a BitTorrent seeder and N peers, each running real
processes. Links are shaped with tbf. Two topologies:

- ``origin-limited``: the origin's uplink is much slower than the peers' links;
- ``swarm-limited``: the origin is fast, the peers' uplinks are slow.

The contenders (``--contenders``, all by default):

- ``dragonpy``: a scheduler, a daemon per peer, ``dragonpy get`` on every peer;
- ``dragonpy-seed``: the same, with a seed daemon on a host with the origin's
  uplink (the BitTorrent seeder's host), which fetches from the origin for all;
- ``direct``: curl on every peer, straight from the origin;
- ``cache``: curl on every peer through nginx ``proxy_cache`` (with
  ``proxy_cache_lock``) on the cache host, whose uplink runs at the fastest rate
  of the topology and whose downlink is unshaped (``--cache-uplink`` changes it);
- ``bittorrent`` and ``bittorrent-super``: libtorrent on every peer, seeded by a
  host with the origin's uplink and libtorrent's high-performance seed settings,
  without and with super-seeding; 4 MiB pieces, as dragonpy's.

The lower bound for the last peer (the fluid model of file distribution, with
the goodput measured through tbf rather than the nominal rates) is

    T = max(S / u_origin, S / d_peer, N * S / (u_origin + N * u_peer))

and, for a swarm whose origin sends each byte once (as dragonpy's does), the other
N - 1 copies cross the peers' uplinks, so ``bound_origin_once_s`` is

    T1 = max(S / u_origin, S / d_peer, (N - 1) * S / (N * u_peer))

    nox -s bench_cluster -- [--size 128MiB] [--peers 4 8 16] [--topology ...]

Needs root. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Lab, can_build_labs

from _alternatives import CONTENDERS, FanOutLab
from _cluster import (
    TOPOLOGIES,
    WORKDIR,
    lower_bound,
    lower_bound_origin_once,
    make_blob,
    print_and_write,
    run_peers,
)
from _origin import MIB, parse_size

COLUMNS: Final = [
    "topology", "peers", "contender", "first_s", "p50_s", "last_s", "bound_s",
    "bound_origin_once_s", "last_vs_bound", "origin_bytes_vs_blob", "cpu_s_per_gib",
]  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=128 * MIB)
    parser.add_argument("--peers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument(
        "--topology", choices=sorted(TOPOLOGIES), nargs="+", default=sorted(TOPOLOGIES)
    )
    parser.add_argument(
        "--contenders", choices=CONTENDERS, nargs="+", default=list(CONTENDERS)
    )
    parser.add_argument(
        "--cache-uplink",
        type=float,
        metavar="MBIT",
        help="the cache host's uplink (default: the topology's fastest link)",
    )
    parser.add_argument("--json", type=Path, default=WORKDIR / "cluster_fanout.json")
    return parser.parse_args(argv)


def fan_out(
    args: argparse.Namespace, topology: str, peers: int, blob: Path
) -> list[dict[str, Any]]:
    results = []
    with Lab.open("dpb", "198.18.9") as lab:
        built = FanOutLab(lab, topology, peers, blob, args.cache_uplink)
        bound = lower_bound(args.size, peers, built.goodput(topology))
        once = lower_bound_origin_once(args.size, peers, built.goodput(topology))
        for name in args.contenders:
            run = run_peers(built.contenders[name], built.peers, topology)
            summary = run.summary(args.size, bound)
            summary["bound_origin_once_s"] = round(once, 2)
            summary["tbf_efficiency"] = round(built.efficiency, 3)
            results.append(summary)
            print(json.dumps(summary), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = can_build_labs()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    blob = make_blob(args.size)
    results = []
    for topology in args.topology:
        for peers in args.peers:
            results.extend(fan_out(args, topology, peers, blob))
    print_and_write(args.json, COLUMNS, results, size=args.size)


if __name__ == "__main__":
    main()
