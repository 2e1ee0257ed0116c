"""Peer-to-peer piece transfer between two daemons on loopback, against curl from
nginx for the same bytes, in the same run.

A scheduler and two daemons run as real processes. Daemon ``holder`` first fetches
the file from nginx (not timed). Each round then times, in alternating order:

- ``curl`` downloading the file from nginx to disk;
- daemon ``taker`` downloading the same task into its store, every piece from
  ``holder`` over the piece transport (the task is removed from its store before
  each round, and its bytes are checked to have come from the peer).

    nox -s bench -- p2p_throughput [--size 1GiB] [--runs 3] [--transport tcp]

The design's target (peer-to-peer >= 0.8x curl) is reported, not asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

from _origin import (
    DEFAULT_WORKDIR,
    GIB,
    BenchmarkError,
    check_output,
    ensure_test_file,
    free_port,
    load_average,
    markdown_table,
    mb_per_s,
    median_and_best,
    nginx_serving,
    parse_size,
    remove,
    round_order,
    settle,
    sha256_of,
    wait_until_answering,
)
from dragonpy import Download, open_store
from dragonpy._handoff import (
    DownloadDone,
    DownloadOrder,
    control_socket_path,
    order_download,
)

RUN_TIMEOUT: Final = 600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="e.g. 1GiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size < 1:
        parser.error("--runs and --size must be positive")
    return args


@contextmanager
def dragonpy_process(argv: list[str], log: Path, port: int) -> Iterator[None]:
    """A dragonpy process, up once ``port`` answers, stopped on the way out."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dragonpy_cli", *argv],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(process, port, log.read_text)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_cluster(stack: ExitStack, work: Path, transport: str) -> dict[str, Path]:
    """A scheduler and daemons ``holder`` and ``taker``; their store directories."""
    scheduler = free_port()
    stack.enter_context(
        dragonpy_process(
            [
                "scheduler",
                "--listen=127.0.0.1",
                f"--port={scheduler}",
                f"--metrics-port={free_port()}",
            ],
            work / "scheduler.log",
            scheduler,
        )
    )
    stores = {}
    for name in ("holder", "taker"):
        store, health = work / name, free_port()
        remove(store)
        argv = [
            "daemon",
            f"--store={store}",
            f"--hostname={name}",
            "--listen=127.0.0.1",
            f"--piece-port={free_port()}",
            f"--health-port={health}",
            f"--metrics-port={free_port()}",
            f"--proxy-port={free_port()}",
            f"--scheduler=127.0.0.1:{scheduler}",
            f"--transport={transport}",
        ]
        stack.enter_context(dragonpy_process(argv, work / f"{name}.log", health))
        stores[name] = store
    return stores


def order(store: Path, url: str) -> DownloadDone:
    socket_path = control_socket_path(store)
    done = order_download(socket_path, DownloadOrder(url), timeout=RUN_TIMEOUT)
    if done is None:
        raise BenchmarkError(f"no daemon listens in {store}")
    return done


def stored_sha256(store: Path, task_id: str) -> str:
    """The sha256 of a task's content as a daemon's store holds it."""
    pieces = open_store(store)
    record = pieces.get_task(task_id)
    if record is None or not record.complete:
        raise BenchmarkError(f"{store} does not hold task {task_id} whole")
    digest = hashlib.sha256()
    for number in range(record.piece_count):
        with pieces.read_piece(task_id, number) as view:
            if view is None:
                raise BenchmarkError(f"piece {number} is missing from {store}")
            digest.update(view)
    return digest.hexdigest()


def time_curl(url: str, output: Path) -> float:
    remove(output)
    settle()
    began = time.perf_counter()
    subprocess.run(
        ["curl", "-s", "-f", "-o", str(output), url], check=True, timeout=RUN_TIMEOUT
    )
    return time.perf_counter() - began


def time_p2p(store: Path, url: str, size: int) -> float:
    task_id = Download(url).task_id
    open_store(store).remove_task(task_id)
    settle()
    began = time.perf_counter()
    done = order(store, url)
    seconds = time.perf_counter() - began
    if done.bytes["peer"] != size:
        raise BenchmarkError(f"taker got {done.bytes} instead of all from its peer")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir / "p2p"
    work.mkdir(parents=True, exist_ok=True)
    source = ensure_test_file(args.workdir / f"test-{args.size}.bin", args.size)
    expected = sha256_of(source)
    seconds: dict[str, list[float]] = {"curl": [], "p2p": []}

    with ExitStack() as stack:
        base = stack.enter_context(nginx_serving(source.parent))
        url = f"{base}/{source.name}"
        stores = start_cluster(stack, work, args.transport)
        order(stores["holder"], url)  # the holder fetches from nginx, untimed
        for round_number in range(args.runs):
            for name in round_order(["curl", "p2p"], round_number):
                if name == "curl":
                    seconds[name].append(time_curl(url, work / "curl.bin"))
                else:
                    seconds[name].append(time_p2p(stores["taker"], url, args.size))
        check_output(work / "curl.bin", args.size, expected)
        if stored_sha256(stores["taker"], Download(url).task_id) != expected:
            raise BenchmarkError("the taker's store holds the wrong bytes")
        remove(work / "curl.bin")

    report(args, seconds)
    return 0


def report(args: argparse.Namespace, seconds: dict[str, list[float]]) -> None:
    curl_median, _ = median_and_best(seconds["curl"])
    rows = []
    labels = {
        "curl": "curl from nginx (to disk)",
        "p2p": f"peer to peer, {args.transport} (into the store)",
    }
    for name, runs in seconds.items():
        median, best = median_and_best(runs)
        rows.append(
            [
                labels[name],
                f"{mb_per_s(args.size, median):.0f}",
                f"{mb_per_s(args.size, best):.0f}",
                f"{curl_median / median:.2f}x",
            ]
        )
    print(f"{args.size} bytes, {args.runs} runs, load {load_average()}\n")
    headers = ["contender", "median MB/s", "best MB/s", "vs curl (median)"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    sys.exit(main())
