"""Throughput of ``dragonpy get`` against curl and aria2c, from a loopback nginx.

Times, in one run and in alternating order: ``curl``, ``aria2c`` with 8 connections,
``dragonpy get`` cold (an empty store each time) and warm (the store already holds
the file, so the origin must not be asked for any of it). Every contender is a real
process, so dragonpy's interpreter start-up counts as curl's does.

    nox -s bench -- get_throughput [--size 1GiB] [--runs 3]

Prints a Markdown table; exits 1 if a contender fails or writes wrong bytes. The
design's targets (cold >= 1.0x curl, warm >= cold) are reported, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from _origin import (
    DEFAULT_WORKDIR,
    GIB,
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

#: Far above any sane run at 1 GiB; only there so a hung contender cannot hang us.
RUN_TIMEOUT: Final = 600.0


@dataclass
class Contender:
    """One tool's command, what it writes, and how its runs went."""

    name: str
    argv: list[str]
    output: Path
    #: dragonpy's store directory.
    store: Path | None = None
    #: Whether the store directory is deleted before each run (cold, first use).
    fresh_store: bool = False
    #: Whether the store's tasks are removed before each run, keeping its files
    #: (cold, as on a node whose store has been in use).
    emptied_store: bool = False
    #: For dragonpy: how many bytes ``--json`` must say came from the origin.
    from_origin: int | None = None
    seconds: list[float] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)
    verified: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Source:
    url: str
    size: int
    sha256: str


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="e.g. 1GiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size < 1:
        parser.error("--runs and --size must be positive")
    return args


def dragonpy_argv(url: str, output: Path, store: Path, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dragonpy_cli",
        "get",
        url,
        "-O",
        str(output),
        "--store",
        str(store),
        "--concurrency",
        str(concurrency),
        "--json",
    ]


def contenders(source: Source, work: Path, concurrency: int) -> list[Contender]:
    out = work / "out"
    aria2 = out / "aria2c.bin"
    cold_store, warm_store = work / "store-cold", work / "store-warm"
    used_store = work / "store-used"
    aria2_argv = ["aria2c", "-x", "8", "-s", "8", "-k", "1M"]
    aria2_argv += ["--file-allocation=none", "--allow-overwrite=true"]
    aria2_argv += ["-d", str(aria2.parent), "-o", aria2.name, "-q", source.url]
    return [
        Contender(
            "curl",
            ["curl", "-s", "-o", str(out / "curl.bin"), source.url],
            out / "curl.bin",
        ),
        Contender("aria2c -x8 -s8", aria2_argv, aria2),
        Contender(
            "dragonpy get (cold)",
            dragonpy_argv(source.url, out / "cold.bin", cold_store, concurrency),
            out / "cold.bin",
            store=cold_store,
            fresh_store=True,
            from_origin=source.size,
        ),
        Contender(
            "dragonpy get (cold, used store)",
            dragonpy_argv(source.url, out / "used.bin", used_store, concurrency),
            out / "used.bin",
            store=used_store,
            emptied_store=True,
            from_origin=source.size,
        ),
        Contender(
            "dragonpy get (warm)",
            dragonpy_argv(source.url, out / "warm.bin", warm_store, concurrency),
            out / "warm.bin",
            store=warm_store,
            from_origin=0,
        ),
    ]


def cli_env() -> dict[str, str]:
    """This environment: the dragonpy it runs is the installed one, so that
    ``nox -s bench`` measures the compiled wheel."""
    return dict(os.environ)


def empty_store(store: Path, env: dict[str, str]) -> None:
    """Remove every task from a store, as ``dragonpy cache rm --all`` does."""
    command = [sys.executable, "-m", "dragonpy_cli", "cache", "rm", "--all"]
    subprocess.run([*command, "--store", str(store)], env=env, check=True)


def run_once(contender: Contender, env: dict[str, str]) -> tuple[float, str]:
    """Time one run from a clean, flushed state; returns seconds and stdout."""
    remove(contender.output)
    if contender.fresh_store and contender.store is not None:
        remove(contender.store)
    if contender.emptied_store and contender.store is not None:
        empty_store(contender.store, env)
    settle()
    started = time.perf_counter()
    done = subprocess.run(
        contender.argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchmarkError(
            f"{contender.name} exited with {done.returncode}: {done.stderr.strip()}"
        )
    return seconds, done.stdout


def check_run(contender: Contender, stdout: str, source: Source) -> None:
    """Size on every run, sha256 once per contender, origin bytes for dragonpy."""
    sha256 = None if contender.verified else source.sha256
    check_output(contender.output, source.size, sha256)
    contender.verified = True
    if contender.from_origin is None:
        return
    result = json.loads(stdout)
    if result["bytes_from_origin"] != contender.from_origin:
        raise BenchmarkError(
            f"{contender.name}: {result['bytes_from_origin']} bytes from the origin, "
            f"expected {contender.from_origin}"
        )
    contender.reported.append(float(result["duration"]))


def prime_store(contender: Contender, source: Source, env: dict[str, str]) -> None:
    """Fill a contender's store with one untimed download."""
    priming = Contender(
        f"{contender.name}, priming its store",
        contender.argv,
        contender.output,
        store=contender.store,
        fresh_store=True,
        from_origin=source.size,
    )
    _, stdout = run_once(priming, env)
    check_run(priming, stdout, source)


def run_rounds(
    field_: list[Contender], source: Source, runs: int, env: dict[str, str]
) -> None:
    for round_number in range(runs):
        for contender in round_order(field_, round_number):
            if contender.error is not None:
                continue
            try:
                seconds, stdout = run_once(contender, env)
                check_run(contender, stdout, source)
            except (BenchmarkError, subprocess.TimeoutExpired, ValueError) as exc:
                # One broken contender should not hide the others' figures.
                contender.error = str(exc)
                continue
            contender.seconds.append(seconds)
            print(
                f"round {round_number + 1}: {contender.name:22} {seconds:6.2f} s "
                f"{mb_per_s(source.size, seconds):7.0f} MB/s",
                file=sys.stderr,
            )


def table(field_: list[Contender], size: int) -> str:
    curl = next(c for c in field_ if c.name == "curl")
    curl_median = median_and_best(curl.seconds)[0] if curl.seconds else None
    rows = []
    for contender in field_:
        if contender.error is not None or not contender.seconds:
            rows.append([contender.name, "FAILED", "", "", ""])
            continue
        median, best = median_and_best(contender.seconds)
        ratio = "n/a" if curl_median is None else f"{curl_median / median:.2f}x"
        rows.append(
            [
                contender.name,
                str(len(contender.seconds)),
                f"{mb_per_s(size, median):.0f}",
                f"{mb_per_s(size, best):.0f}",
                ratio,
            ]
        )
    headers = ["tool", "runs", "median MB/s", "best MB/s", "median vs curl"]
    return markdown_table(headers, rows)


def in_process_note(field_: list[Contender], size: int) -> str:
    """dragonpy's own ``duration``: the transfer without interpreter start-up."""
    lines = []
    for contender in field_:
        if contender.reported:
            median, best = median_and_best(contender.reported)
            lines.append(
                f"{contender.name}: in-process duration median {median:.2f} s "
                f"({mb_per_s(size, median):.0f} MB/s), best {best:.2f} s"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.workdir
    source_file = ensure_test_file(work / "www" / f"random-{args.size}.bin", args.size)
    env = cli_env()
    field_: list[Contender] = []
    load_before = load_average()
    try:
        sha256 = sha256_of(source_file)
        with nginx_serving(source_file.parent) as base:
            source = Source(f"{base}/{source_file.name}", args.size, sha256)
            field_ = contenders(source, work, args.concurrency)
            (work / "out").mkdir(parents=True, exist_ok=True)
            for contender in field_:
                if contender.store is not None and not contender.fresh_store:
                    prime_store(contender, source, env)
            run_rounds(field_, source, args.runs, env)
    except (BenchmarkError, subprocess.TimeoutExpired) as exc:
        print(f"get_throughput: {exc}", file=sys.stderr)
        return 1
    finally:
        # The source file stays for the next benchmark; everything written goes.
        remove(work / "out", work / "store-cold", work / "store-used")
        remove(work / "store-warm")

    print(
        f"{args.runs} runs of {args.size} bytes, dragonpy at concurrency "
        f"{args.concurrency}; MB/s = 10^6 bytes/s of wall time per process"
    )
    print(table(field_, args.size))
    print()
    print(in_process_note(field_, args.size))
    print(f"load average (1/5/15 min): {load_before} before, {load_average()} after")
    failures = [c.error for c in field_ if c.error is not None]
    for failure in failures:
        print(f"get_throughput: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
