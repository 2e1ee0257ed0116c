"""PNG plots of the multi-host scenarios, from the JSON their scripts wrote.

    nox -s bench_cluster -- plot_cluster [--fanout F.json] [--late F.json]
                                         [--ranges F.json] [--out docs/img]

Each input defaults to where its script writes it; a missing one is skipped.
Makes, per topology: every peer's completion time for the largest N, and the last
peer's time against N beside the lower bound; origin bytes against N; the late
half's times; the registry's requests and bytes against N for range reads.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib

# No display on the benchmark machines; Agg renders straight to PNG.
matplotlib.use("Agg")
import matplotlib.pyplot as plt

WORKDIR: Final = Path("/tmp/dragonpy-bench-cluster")
ROOT: Final = Path(__file__).resolve().parents[1]
Runs = list[dict[str, Any]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=Path, default=WORKDIR / "cluster_fanout.json")
    parser.add_argument("--late", type=Path, default=WORKDIR / "cluster_late.json")
    parser.add_argument("--ranges", type=Path, default=WORKDIR / "cluster_ranges.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    return parser.parse_args(argv)


def load(path: Path) -> Runs | None:
    if not path.exists():
        print(f"skipped: no {path}")
        return None
    runs: Runs = json.loads(path.read_text())["runs"]
    return runs


def by(runs: Runs, key: str) -> dict[Any, Runs]:
    grouped: dict[Any, Runs] = defaultdict(list)
    for run in runs:
        grouped[run[key]].append(run)
    return dict(grouped)


def save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"written {path}")


def fanout_plots(runs: Runs, out: Path) -> None:
    for topology, of_topology in by(runs, "topology").items():
        largest = max(run["peers"] for run in of_topology)
        figure, (per_peer, last) = plt.subplots(1, 2, figsize=(11, 4.2))

        for run in of_topology:
            if run["peers"] != largest:
                continue
            times = sorted(run["finished_s"].values())
            ranks = range(1, len(times) + 1)
            per_peer.plot(ranks, times, marker="o", label=run["contender"])
            bound = run["bound_s"]
        per_peer.axhline(bound, color="black", linestyle="--", label="lower bound")
        per_peer.set(
            title=f"{topology}: each of {largest} peers, in the order they finished",
            xlabel="peers done",
            ylabel="seconds from the start",
        )
        per_peer.legend(fontsize="small")

        for contender, of_contender in by(of_topology, "contender").items():
            points = sorted((run["peers"], run["last_s"]) for run in of_contender)
            last.plot(*zip(*points, strict=True), marker="o", label=contender)
        bounds = sorted({(run["peers"], run["bound_s"]) for run in of_topology})
        last.plot(*zip(*bounds, strict=True), "k--", label="lower bound")
        # Runs recorded before this bound was computed lack it.
        once = {
            (run["peers"], run["bound_origin_once_s"])
            for run in of_topology
            if "bound_origin_once_s" in run
        }
        if once:
            points = sorted(once)
            last.plot(*zip(*points, strict=True), "k:", label="bound, origin once")
        last.set(
            title=f"{topology}: the last peer",
            xlabel="peers (N)",
            ylabel="seconds",
            ylim=(0, None),
        )
        last.set_xticks(sorted({run["peers"] for run in of_topology}))
        last.legend(fontsize="small")
        save(figure, out / f"cluster-fanout-{topology}.png")

    topologies = by(runs, "topology")
    figure, axes = plt.subplots(1, len(topologies), figsize=(11, 4.2), squeeze=False)
    for axis, (topology, of_topology) in zip(axes[0], topologies.items(), strict=True):
        for contender, of_contender in by(of_topology, "contender").items():
            points = sorted(
                (run["peers"], run["origin_bytes_vs_blob"]) for run in of_contender
            )
            axis.plot(*zip(*points, strict=True), marker="o", label=contender)
        axis.set(
            title=f"{topology}: origin bytes",
            xlabel="peers (N)",
            ylabel="origin bytes / blob size",
        )
        axis.legend(fontsize="small")
    save(figure, out / "cluster-origin-bytes.png")


def late_plot(runs: Runs, out: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    labels, late, floors = [], [], []
    for run in runs:
        labels.append(f"{run['contender']}\n{run['topology']}, N={run['peers']}")
        late.append(run["late_last_s"])
        floors.append(run["floor_s"])
    axis.bar(labels, late, label="late half, last peer (from its start)")
    axis.scatter(labels, floors, color="black", marker="_", s=400, label="S / d_peer")
    axis.set(ylabel="seconds", title="late joiners")
    axis.tick_params(axis="x", labelsize="small")
    axis.legend(fontsize="small")
    save(figure, out / "cluster-late.png")


def ranges_plot(runs: Runs, out: Path) -> None:
    figure, (gets, sent) = plt.subplots(1, 2, figsize=(11, 4.2))
    for contender, of_contender in by(runs, "contender").items():
        of_contender.sort(key=lambda run: run["peers"])
        peers = [run["peers"] for run in of_contender]
        gets.plot(peers, [r["origin_gets"] for r in of_contender], marker="o")
        sent.plot(
            peers,
            [r["origin_bytes_mib"] for r in of_contender],
            marker="o",
            label=contender,
        )
    gets.set(title="registry blob GETs", xlabel="peers (N)", ylabel="requests")
    sent.set(title="registry blob bytes", xlabel="peers (N)", ylabel="MiB")
    for axis in (gets, sent):
        axis.set_xticks(sorted({run["peers"] for run in runs}))
        axis.set_ylim(0, None)
    sent.legend(fontsize="small")
    save(figure, out / "cluster-ranges.png")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if (runs := load(args.fanout)) is not None:
        fanout_plots(runs, args.out)
    if (runs := load(args.late)) is not None:
        late_plot(runs, args.out)
    if (runs := load(args.ranges)) is not None:
        ranges_plot(runs, args.out)


if __name__ == "__main__":
    main()
