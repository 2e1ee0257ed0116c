"""The registry mirror on a cache hit, against nginx serving the same blob file.

nginx serves the test file; a daemon (no scheduler) mirrors nginx as its upstream
and holds the file in its store after one untimed GET. Then, in the same run and in
alternating order:

- whole-blob GETs with ``curl -o /dev/null``, from nginx and through the mirror;
- 1 MiB ``Range`` reads at random offsets, 16 at a time over kept-alive
  connections (the Nydus pattern), from nginx and through the mirror: latency p50
  and p99 of each read.

    nox -s bench -- mirror_throughput [--size 1GiB] [--runs 3] [--reads 800]

Targets (reported, not asserted): whole blob >= 0.8x nginx's throughput; range p99
<= 2x nginx's.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from _origin import (
    DEFAULT_WORKDIR,
    GIB,
    MIB,
    BenchmarkError,
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
    wait_until_answering,
)

CLIENTS: Final = 16
RANGE: Final = MIB
RUN_TIMEOUT: Final = 600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="e.g. 1GiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reads", type=int, default=800, help="range reads per run")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size < RANGE or args.reads < CLIENTS:
        parser.error("--runs must be positive, --size at least 1 MiB, --reads >= 16")
    return args


@contextmanager
def mirror_of(upstream: str, work: Path) -> Iterator[int]:
    """A daemon whose mirror serves ``upstream``; yields the mirror's port."""
    store, port, health = work / "mirror-store", free_port(), free_port()
    remove(store)
    log = work / "mirror.log"
    argv = [
        "daemon",
        f"--store={store}",
        "--listen=127.0.0.1",
        f"--piece-port={free_port()}",
        f"--metrics-port={free_port()}",
        f"--health-port={health}",
        f"--proxy-port={port}",
        f"--registry={upstream}",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dragonpy_cli", *argv],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(process, health, log.read_text)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def whole(url: str, headers: dict[str, str], size: int) -> float:
    """Seconds for one ``curl`` GET of the whole blob into /dev/null."""
    argv = ["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", url]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    began = time.perf_counter()
    done = subprocess.run(
        argv, check=True, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    seconds = time.perf_counter() - began
    if int(done.stdout) != size:
        raise BenchmarkError(f"{url} sent {done.stdout} bytes, expected {size}")
    return seconds


def ranges(
    port: int, path: str, headers: dict[str, str], size: int, reads: int, seed: int
) -> list[float]:
    """Latencies of ``reads`` random 1 MiB range GETs, ``CLIENTS`` at a time."""
    offsets = random.Random(seed).sample(range(0, size - RANGE), reads)
    queue = iter(offsets)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                offset = next(queue, None)
            if offset is None:
                break
            wanted = {**headers, "Range": f"bytes={offset}-{offset + RANGE - 1}"}
            began = time.perf_counter()
            connection.request("GET", path, headers=wanted)
            answer = connection.getresponse()
            body = answer.read()
            took = time.perf_counter() - began
            with lock:
                if answer.status != 206 or len(body) != RANGE:
                    errors.append(f"{answer.status}, {len(body)} bytes at {offset}")
                latencies.append(took)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchmarkError(f"bad range answers: {errors[:3]}")
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[
        int(fraction * 100) - 1
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir / "mirror"
    work.mkdir(parents=True, exist_ok=True)
    source = ensure_test_file(args.workdir / f"test-{args.size}.bin", args.size)
    path = f"/{source.name}"
    p2p = {"X-Dragonfly-Use-P2P": "true"}
    seconds: dict[str, list[float]] = {"nginx": [], "mirror": []}
    latencies: dict[str, list[float]] = {"nginx": [], "mirror": []}

    with nginx_serving(source.parent) as base, mirror_of(base, work) as port:
        nginx_port = int(base.rsplit(":", 1)[1])
        targets = {
            "nginx": (f"{base}{path}", nginx_port, {}),
            "mirror": (f"http://127.0.0.1:{port}{path}", port, p2p),
        }
        whole(targets["mirror"][0], p2p, args.size)  # fills the store, untimed
        for round_number in range(args.runs):
            for name in round_order(list(targets), round_number):
                url, target_port, headers = targets[name]
                seconds[name].append(whole(url, headers, args.size))
                latencies[name] += ranges(
                    target_port, path, headers, args.size, args.reads, round_number
                )

    report(args, seconds, latencies)
    return 0


def report(
    args: argparse.Namespace,
    seconds: dict[str, list[float]],
    latencies: dict[str, list[float]],
) -> None:
    nginx_median, _ = median_and_best(seconds["nginx"])
    nginx_p99 = percentile(latencies["nginx"], 0.99)
    rows = []
    for name in ("nginx", "mirror"):
        median, best = median_and_best(seconds[name])
        p50 = percentile(latencies[name], 0.50)
        p99 = percentile(latencies[name], 0.99)
        rows.append(
            [
                name,
                f"{mb_per_s(args.size, median):.0f}",
                f"{mb_per_s(args.size, best):.0f}",
                f"{nginx_median / median:.2f}x",
                f"{p50 * 1000:.1f}",
                f"{p99 * 1000:.1f}",
                f"{p99 / nginx_p99:.2f}x",
            ]
        )
    print(f"{args.size} bytes, {args.runs} runs, {CLIENTS} range clients, ", end="")
    print(f"load {load_average()}\n")
    headers = [
        "server",
        "whole median MB/s",
        "whole best MB/s",
        "vs nginx",
        "range p50 ms",
        "range p99 ms",
        "p99 vs nginx",
    ]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    sys.exit(main())
