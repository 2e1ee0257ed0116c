"""What tracing costs when nothing is configured: piece transfers and bare spans.

Three ways of running the same code, in one process, alternating between rounds:

* ``untraced``: the transports' span and trace-context calls replaced by nothing, as
  if the code had no tracing at all;
* ``no-op API``: as shipped, with no tracer provider installed (the default);
* ``SDK, no exporter``: opentelemetry-sdk's provider recording every span and
  dropping it (what a configured daemon pays, less the export). Measured last, since
  a process installs its provider once.

For each, N sequential fetches of a small piece over the ``tcp`` transport on
loopback inside one ``download`` span, as the daemon makes them (small pieces make
the per-piece cost stand out); N times the tracing calls both halves of the
transport make per piece, alone (what the fetches above carry, without their
noise); and N bare spans.

    python benchmarks/tracing_overhead.py [--pieces 2000] [--spans 200000]

Prints a Markdown table: the median time per piece and per span, and the overhead
against ``untraced``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final
from unittest import mock

import anyio
from opentelemetry import trace

from _origin import markdown_table
from dragonpy import PieceStore, StorePolicy, Task, open_store
from dragonpy._pieces import Piece, piece_digest
from dragonpy._telemetry import context_from_traceparent, traceparent, tracer
from dragonpy._transport import _base
from dragonpy._transport._tcp import TcpPieceClient, TcpPieceServer, _client

PIECE: Final = 64 * 1024
ROUNDS: Final = 5
TASK_ID: Final = "cd" * 32


def fill_store(directory: Path) -> PieceStore:
    store = open_store(directory, StorePolicy())
    data = os.urandom(PIECE)
    record = Task(
        id=TASK_ID,
        url="http://origin/bench",
        content_length=PIECE,
        piece_length=PIECE,
        validator="",
        created_at=time.time(),
    )
    store.put_task(record)
    store.put_piece(TASK_ID, Piece(0, 0, PIECE, piece_digest(data)), data)
    return store


async def time_pieces(store: PieceStore, count: int, traced: bool) -> float:
    """Seconds per piece, fetching ``count`` pieces one after another (in a span
    standing for their download when ``traced``)."""
    server = TcpPieceServer(store)
    client = TcpPieceClient()
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        address = f"127.0.0.1:{port}"
        await client.fetch(address, TASK_ID, 0)  # connect outside the timing
        download = (
            tracer.start_as_current_span("download")
            if traced
            else contextlib.nullcontext()
        )
        began = time.perf_counter()
        with download:
            for _ in range(count):
                await client.fetch(address, TASK_ID, 0)
        elapsed = time.perf_counter() - began
        await client.aclose()
        group.cancel_scope.cancel()
    return elapsed / count


def time_piece_calls(count: int, traced: bool) -> float:
    """Seconds per piece of the transports' tracing calls, inside a download."""
    download = (
        tracer.start_as_current_span("download") if traced else contextlib.nullcontext()
    )
    began = time.perf_counter()
    with download:
        for _ in range(count):
            with _base.fetch_span("tcp", "127.0.0.1:4000", TASK_ID, 0):
                parent = context_from_traceparent(traceparent())
            # Looked up in the transport's module at each call, as the server does,
            # so that ``untraced`` replaces it here too.
            upload_span = _base.child_span  # type: ignore[attr-defined]
            with upload_span("piece upload", trace.SpanKind.SERVER, None, parent):
                pass
    return (time.perf_counter() - began) / count


def time_spans(count: int, traced: bool) -> float:
    """Seconds per span (or per empty iteration when not ``traced``)."""
    began = time.perf_counter()
    if traced:
        for _ in range(count):
            with tracer.start_as_current_span("bench"):
                pass
    else:
        for _ in range(count):
            with contextlib.nullcontext():
                pass
    return (time.perf_counter() - began) / count


def no_span(*args: object) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """The transports without their tracing calls."""
    with (
        mock.patch.object(_base, "child_span", no_span),
        mock.patch.object(_client, "fetch_span", no_span),
        mock.patch.object(_client, "traceparent", lambda: ""),
    ):
        yield


def measure(
    store: PieceStore, pieces: int, spans: int, traced: bool
) -> tuple[float, float, float]:
    piece = anyio.run(time_pieces, store, pieces, traced)
    calls = time_piece_calls(spans, traced) if traced else 0.0
    return piece, calls, time_spans(spans, traced)


def install_sdk() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    # Spans are recorded and ended; with no span processor they go nowhere.
    trace.set_tracer_provider(TracerProvider())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=2000)
    parser.add_argument("--spans", type=int, default=200_000)
    arguments = parser.parse_args()

    results: dict[str, list[tuple[float, float, float]]] = {
        "untraced": [],
        "no-op API": [],
    }
    modes: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
        "untraced": untraced,
        "no-op API": contextlib.nullcontext,
    }
    with tempfile.TemporaryDirectory() as workdir:
        store = fill_store(Path(workdir))
        for round_number in range(ROUNDS):
            order = list(modes) if round_number % 2 == 0 else list(modes)[::-1]
            for name in order:
                with modes[name]():
                    traced = name != "untraced"
                    results[name].append(
                        measure(store, arguments.pieces, arguments.spans, traced)
                    )
        install_sdk()
        results["SDK, no exporter"] = [
            measure(store, arguments.pieces, arguments.spans, True)
            for _ in range(ROUNDS)
        ]
        store.close()

    print(report(results, arguments.pieces, arguments.spans))


def report(
    results: dict[str, list[tuple[float, float, float]]], pieces: int, spans: int
) -> str:
    base_piece = statistics.median(run[0] for run in results["untraced"])
    rows = []
    for name, runs in results.items():
        piece, calls, span = (
            statistics.median(run[i] for run in runs) for i in range(3)
        )
        overhead = (piece - base_piece) / base_piece
        rows.append(
            [
                name,
                f"{piece * 1e6:.1f} µs",
                f"{overhead:+.1%}",
                f"{calls * 1e9:.0f} ns",
                f"{span * 1e9:.0f} ns",
            ]
        )
    headers = [
        f"mode ({ROUNDS} rounds, median)",
        f"per {PIECE // 1024} KiB piece ({pieces} fetches)",
        "against untraced",
        f"tracing calls per piece ({spans} times)",
        "per bare span (untraced: empty loop)",
    ]
    return f"python: {sys.version.split()[0]}\n\n" + markdown_table(headers, rows)


if __name__ == "__main__":
    main()
