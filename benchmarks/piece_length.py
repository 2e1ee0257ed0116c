"""How the piece length trades bulk throughput against the cost of a small read.

For each piece length (1 to 16 MiB) this measures, through the SDK against a loopback
nginx: a cold ``dragonpy.download`` of the whole file (fresh store each run), and the
latency of a cold 1 MiB ``dragonpy.read_range`` at random offsets (fresh store each
read, so the covering pieces always come from the origin). Longer pieces mean fewer
requests and store transactions per GiB, but a small read fetches a whole piece.

    nox -s bench -- piece_length [--runs 3]    (or: python benchmarks/piece_length.py)

The piece length is forced by replacing ``piece_length_for`` where the downloader
looks it up (``dragonpy._download`` imports it by name).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from unittest import mock

import anyio

import dragonpy
import dragonpy._download
from _origin import (
    DEFAULT_WORKDIR,
    GIB,
    MIB,
    BenchmarkError,
    check_output,
    ensure_test_file,
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
)

PIECE_LENGTHS: Final = tuple(n * MIB for n in (1, 2, 4, 8, 16))
READ_LENGTH: Final = MIB


@dataclass
class Figures:
    """What was measured for one piece length."""

    length: int
    download_seconds: list[float] = field(default_factory=list)
    read_seconds: list[float] = field(default_factory=list)
    read_origin_bytes: list[int] = field(default_factory=list)
    verified: bool = False


@dataclass(frozen=True)
class Setup:
    url: str
    source: Path
    size: int
    sha256: str
    work: Path
    concurrency: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="e.g. 1GiB")
    parser.add_argument("--runs", type=int, default=3, help="downloads per length")
    parser.add_argument("--reads", type=int, default=20, help="reads per length")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="for the read offsets")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.reads < 1 or args.size < READ_LENGTH:
        parser.error("--runs and --reads must be positive, --size at least 1MiB")
    return args


@contextmanager
def fixed_piece_length(length: int) -> Iterator[None]:
    """Make every task planned inside the ``with`` use pieces of ``length`` bytes."""

    def fixed(content_length: int) -> int:
        return length

    # Patched where it is looked up: ``dragonpy._download`` imported it by name.
    with mock.patch.object(dragonpy._download, "piece_length_for", fixed):
        yield


def close_store(directory: Path) -> None:
    # ``open_store`` keeps every store open for the life of the process, each with
    # a 1 TiB address-space reservation; a hundred fresh stores would exhaust it.
    dragonpy.open_store(directory).close()


async def time_download(setup: Setup, figures: Figures) -> None:
    store, output = setup.work / "store", setup.work / "out.bin"
    remove(store, output)
    settle()
    try:
        with fixed_piece_length(figures.length):
            started = time.perf_counter()
            result = await dragonpy.download(
                setup.url, output, store_dir=store, concurrency=setup.concurrency
            )
            seconds = time.perf_counter() - started
    finally:
        close_store(store)

    expected_pieces = -(-setup.size // figures.length)
    if result.bytes_from_origin != setup.size or result.piece_count != expected_pieces:
        raise BenchmarkError(
            f"{figures.length // MIB} MiB pieces: {result.piece_count} pieces and "
            f"{result.bytes_from_origin} bytes from the origin, expected "
            f"{expected_pieces} and {setup.size}"
        )
    # Hashing 1 GiB takes seconds: once per piece length is enough.
    check_output(output, setup.size, None if figures.verified else setup.sha256)
    figures.verified = True
    figures.download_seconds.append(seconds)


async def time_read(setup: Setup, figures: Figures, start: int) -> None:
    store = setup.work / "store-read"
    end = start + READ_LENGTH - 1
    remove(store)
    settle()
    try:
        with fixed_piece_length(figures.length):
            started = time.perf_counter()
            data = await dragonpy.read_range(setup.url, start, end, store_dir=store)
            seconds = time.perf_counter() - started
    finally:
        close_store(store)

    if data != expected_bytes(setup.source, start, READ_LENGTH):
        raise BenchmarkError(f"read_range({start}, {end}) returned the wrong bytes")
    figures.read_seconds.append(seconds)
    pieces = end // figures.length - start // figures.length + 1
    figures.read_origin_bytes.append(pieces * figures.length)


def expected_bytes(source: Path, start: int, length: int) -> bytes:
    with source.open("rb") as file:
        return os.pread(file.fileno(), length, start)


async def measure(setup: Setup, runs: int, reads: int, seed: int) -> list[Figures]:
    all_figures = [Figures(length) for length in PIECE_LENGTHS]
    for round_number in range(runs):
        for figures in round_order(all_figures, round_number):
            await time_download(setup, figures)
            report("download", figures, figures.download_seconds[-1], setup.size)

    offsets = random.Random(seed)
    for read_number in range(reads):
        start = offsets.randrange(setup.size - READ_LENGTH + 1)
        for figures in round_order(all_figures, read_number):
            await time_read(setup, figures, start)
    return all_figures


def report(what: str, figures: Figures, seconds: float, size: int) -> None:
    print(
        f"{what}: {figures.length // MIB:2} MiB pieces {seconds:6.2f} s "
        f"{mb_per_s(size, seconds):6.0f} MB/s",
        file=sys.stderr,
    )


def table(all_figures: list[Figures], size: int) -> str:
    rows = []
    for figures in all_figures:
        download_median, download_best = median_and_best(figures.download_seconds)
        read_median, read_best = median_and_best(figures.read_seconds)
        fetched = statistics.mean(figures.read_origin_bytes) / MIB
        rows.append(
            [
                f"{figures.length // MIB} MiB",
                str(-(-size // figures.length)),
                f"{mb_per_s(size, download_median):.0f}",
                f"{mb_per_s(size, download_best):.0f}",
                f"{read_median * 1000:.1f}",
                f"{read_best * 1000:.1f}",
                f"{fetched:.1f}",
            ]
        )
    headers = [
        "piece length",
        "pieces",
        "download median MB/s",
        "download best MB/s",
        "1 MiB read median ms",
        "1 MiB read best ms",
        "MiB fetched per read",
    ]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.workdir
    source = ensure_test_file(work / "www" / f"random-{args.size}.bin", args.size)
    load_before = load_average()
    try:
        sha256 = sha256_of(source)
        with nginx_serving(source.parent) as base:
            setup = Setup(
                f"{base}/{source.name}",
                source,
                args.size,
                sha256,
                work,
                args.concurrency,
            )
            all_figures = anyio.run(measure, setup, args.runs, args.reads, args.seed)
    except (BenchmarkError, dragonpy.DragonpyError) as exc:
        print(f"piece_length: {exc}", file=sys.stderr)
        return 1
    finally:
        # The source file stays for the next benchmark; everything written goes.
        remove(work / "store", work / "store-read", work / "out.bin")

    print(
        f"{args.runs} cold downloads of {args.size} bytes at concurrency "
        f"{args.concurrency}, {args.reads} cold 1 MiB reads, per piece length"
    )
    print(table(all_figures, args.size))
    print(f"load average (1/5/15 min): {load_before} before, {load_average()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
