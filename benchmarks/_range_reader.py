"""A Nydus-style reader for the lab: ``HEAD`` for the blob's size, then 1 MiB
``Range`` reads at random offsets, several at a time, each naming the registry in
``X-Dragonfly-Registry`` as nydusd in mirror mode does. Writes the latency of each
read and where the mirror said its bytes came from, as JSON.

    _range_reader.py URL --registry URL --reads 16 --seed 1 --out FILE
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--reads", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    headers = {"X-Dragonfly-Registry": args.registry, "User-Agent": "nydusd/2.3.0"}
    limits = httpx.Limits(max_connections=args.concurrency)
    with httpx.Client(headers=headers, limits=limits, timeout=120) as client:
        head = client.head(args.url)
        head.raise_for_status()
        size = int(head.headers["content-length"])
        offsets = random.Random(args.seed).sample(range(size - MIB), args.reads)

        def read(offset: int) -> tuple[float, str]:
            began = time.monotonic()
            wanted = {"Range": f"bytes={offset}-{offset + MIB - 1}"}
            answer = client.get(args.url, headers=wanted)
            if answer.status_code != 206 or len(answer.content) != MIB:
                raise RuntimeError(f"{wanted}: {answer.status_code}")
            source = answer.headers.get("x-dragonpy-source", "registry")
            return time.monotonic() - began, source

        with ThreadPoolExecutor(args.concurrency) as pool:
            done = list(pool.map(read, offsets))

    record = {
        "latencies_s": [latency for latency, _ in done],
        "sources": [source for _, source in done],
    }
    args.out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
