"""Late joiners: half the peers start cold at once, the other half when the first
of them holds half the blob; how long the late half takes from its own start.

The lab and the contenders are those of ``cluster_fanout.py``. "Holds half the
blob" is read from the early peers' links (bytes received, as the kernel counts
them), so the moment is the same for every contender whatever its protocol. The
late half cannot beat ``S / d_peer`` (the peers' downlink goodput, reported as
``floor_s``): a contender that serves the late peers from the early ones gets near
it, one that goes back to a busy origin does not.

    nox -s bench_cluster -- cluster_late [--size 128MiB] [--peers 8] [--contenders ...]

Needs root. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.netlab import Host, Lab, can_build_labs

from _alternatives import CONTENDERS, FanOutLab
from _cluster import (
    TOPOLOGIES,
    WORKDIR,
    make_blob,
    print_and_write,
    run_peers,
    timing,
)
from _origin import MIB, parse_size

COLUMNS: Final = [
    "topology", "peers", "contender", "early_last_s", "late_first_s", "late_p50_s",
    "late_last_s", "floor_s", "late_last_vs_floor", "origin_bytes_vs_blob",
    "cpu_s_per_gib",
]  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=128 * MIB)
    parser.add_argument("--peers", type=int, nargs="+", default=[8])
    parser.add_argument(
        "--topology", choices=sorted(TOPOLOGIES), nargs="+", default=sorted(TOPOLOGIES)
    )
    parser.add_argument(
        "--contenders", choices=CONTENDERS, nargs="+", default=["dragonpy", "direct"]
    )
    parser.add_argument("--json", type=Path, default=WORKDIR / "cluster_late.json")
    return parser.parse_args(argv)


def first_holds_half(early: Sequence[Host], size: int) -> Callable[[], bool]:
    """A test that holds once any early peer has received ``size / 2`` bytes
    since the test was first asked."""
    start: dict[str, int] = {}

    def holds() -> bool:
        if not start:
            start.update((peer.name, peer.traffic()[0]) for peer in early)
        return any(peer.traffic()[0] - start[peer.name] >= size / 2 for peer in early)

    return holds


def late_joiners(
    args: argparse.Namespace, topology: str, peers: int, blob: Path
) -> list[dict[str, Any]]:
    results = []
    with Lab.open("dpc", "198.18.10") as lab:
        built = FanOutLab(lab, topology, peers, blob)
        early, late = built.peers[: peers // 2], built.peers[peers // 2 :]
        floor = args.size / (built.goodput(topology)[2] * 1e6 / 8)
        for name in args.contenders:
            run = run_peers(
                built.contenders[name],
                early,
                topology,
                late=late,
                late_when=first_holds_half(early, args.size),
            )
            summary = run.summary(args.size)
            late_times = timing([run.finished[peer.name] for peer in late])
            summary.update({f"late_{key}": value for key, value in late_times.items()})
            early_times = [run.finished[peer.name] for peer in early]
            summary["early_last_s"] = round(max(early_times), 2)
            summary["floor_s"] = round(floor, 2)
            summary["late_last_vs_floor"] = round(late_times["last_s"] / floor, 2)
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
            results.extend(late_joiners(args, topology, peers, blob))
    print_and_write(args.json, COLUMNS, results, size=args.size)


if __name__ == "__main__":
    main()
