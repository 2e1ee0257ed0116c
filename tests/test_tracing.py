"""Traces: one trace from a mirror request down to the piece transfers, with the
trace context crossing every hop on the wire."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import anyio
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import dragonpy
from dragonpy._pieces import Piece, piece_digest
from dragonpy._telemetry import tracer
from dragonpy._transport import TRANSPORTS, open_client, open_server
from dragonpy._transport._tcp import TcpPieceServer
from dragonpy._transport._tcp._wire import CAP_TRACE, HEADER, FrameType

from .daemons import daemon_config
from .registry import Registry

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The process's tracer provider: installed once, as a daemon would."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    installed = TracerProvider()
    trace.set_tracer_provider(installed)
    return installed


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    """Spans finished during one test."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()  # the exporter keeps nothing more


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def wait_for(
    exporter: InMemorySpanExporter,
    name: str,
    parent: ReadableSpan | None = None,
    kind: trace.SpanKind | None = None,
) -> ReadableSpan:
    """The first finished span of ``name`` (a child of ``parent``, of ``kind``);
    servers end theirs just after they answer, so it may come a moment later."""

    def found() -> list[ReadableSpan]:
        return [
            span
            for span in named(exporter, name)
            if (parent is None or parent_of(span) == span_id(parent))
            and (kind is None or span.kind is kind)
        ]

    with anyio.fail_after(10):
        while not found():
            await anyio.sleep(0.01)
    return found()[0]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    number: int = span.context.span_id
    return number


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    number: int = span.context.trace_id
    return number


# A whole trace, in one process: every hop still goes over a socket.


# The mirror serves whatever upstream a request names: the tests' registry.
_OPEN_PROXY = dragonpy.ProxyConfig(port=0, allow_any_registry=True)


@pytest.fixture
async def swarm(tmp_path: Path) -> AsyncIterator[tuple[dragonpy.Daemon, ...]]:
    """A scheduler and two daemons, ``first`` and ``second``."""
    async with anyio.create_task_group() as group:
        port = await group.start(dragonpy.SchedulerServer().serve, "127.0.0.1", 0)
        configs = [
            daemon_config(tmp_path / name, scheduler=port, proxy=_OPEN_PROXY)
            for name in ("first", "second")
        ]
        daemons = tuple(dragonpy.Daemon(config) for config in configs)
        for daemon in daemons:
            await group.start(daemon.run)
        yield daemons
        group.cancel_scope.cancel()


@pytest.mark.registry
async def test_a_mirror_request_is_one_trace_down_to_the_piece_uploads(
    spans: InMemorySpanExporter,
    swarm: tuple[dragonpy.Daemon, dragonpy.Daemon],
    registry: Registry,
) -> None:
    first, second = swarm
    data = os.urandom(6 * MIB)
    digest = registry.push_blob("team/app", data)
    path = f"/v2/team/app/blobs/{digest}"
    await first.download(dragonpy.Download(registry.url + path))
    spans.clear()

    headers = {"X-Dragonfly-Registry": registry.url}
    base = f"http://127.0.0.1:{second.proxy_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as mirror_client:
        answer = await mirror_client.get(path, headers=headers)
    assert answer.status_code == 200 and answer.content == data
    await second.download(dragonpy.Download(registry.url + path))  # until it ends

    # Each span is found as the child of the one before: the chain is the trace.
    client, server = trace.SpanKind.CLIENT, trace.SpanKind.SERVER
    mirror = await wait_for(spans, "mirror GET")
    download = await wait_for(spans, "download", mirror)
    register = await wait_for(spans, "scheduler POST /peers", download, client)
    registered = await wait_for(spans, "scheduler POST /peers", register, server)
    fetch = await wait_for(spans, "piece fetch", download)
    upload = await wait_for(spans, "piece upload", fetch)

    chain = [mirror, download, register, registered, fetch, upload]
    assert parent_of(mirror) is None
    assert {trace_id(span) for span in chain} == {trace_id(mirror)}
    assert mirror.attributes is not None
    assert mirror.attributes["dragonpy.task_id"] == digest.removeprefix("sha256:")


async def test_an_incoming_traceparent_makes_the_mirror_span_a_child(
    spans: InMemorySpanExporter, swarm: tuple[dragonpy.Daemon, dragonpy.Daemon]
) -> None:
    first, _ = swarm
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(
            f"http://127.0.0.1:{first.proxy_port}/v2/",
            headers={"traceparent": traceparent, "X-Dragonfly-Registry": "nowhere:1"},
        )

    mirror = await wait_for(spans, "mirror GET")
    assert trace_id(mirror) == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_of(mirror) == 0xB7AD6B7169203331


@pytest.mark.registry
async def test_a_head_answer_ends_its_span(
    spans: InMemorySpanExporter,
    swarm: tuple[dragonpy.Daemon, dragonpy.Daemon],
    registry: Registry,
) -> None:
    first, _ = swarm
    data = os.urandom(MIB)
    digest = registry.push_blob("team/app", data)
    path = f"/v2/team/app/blobs/{digest}"
    await first.download(dragonpy.Download(registry.url + path))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.head(
            f"http://127.0.0.1:{first.proxy_port}{path}",
            headers={"traceparent": traceparent, "X-Dragonfly-Registry": registry.url},
        )

    # A HEAD answer sends no body, so the span cannot wait for the body's end.
    assert answer.headers["content-length"] == str(len(data))
    mirror = await wait_for(spans, "mirror HEAD")
    assert mirror.attributes is not None
    assert mirror.attributes["http.response.status_code"] == 200


# The piece transports, both halves


@pytest.fixture
def held(store: dragonpy.PieceStore) -> str:
    task_id = "ab" * 32
    data = os.urandom(1000)
    store.put_task(
        dragonpy.Task(
            id=task_id,
            url="http://origin/file",
            content_length=len(data),
            piece_length=4 * MIB,
            validator="",
            created_at=0.0,
        )
    )
    store.put_piece(task_id, Piece(0, 0, len(data), piece_digest(data)), data)
    return task_id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_piece_upload_is_a_child_of_its_fetch(
    spans: InMemorySpanExporter,
    store: dragonpy.PieceStore,
    held: str,
    transport: str,
) -> None:
    server = open_server(transport, store)
    client = open_client(transport)
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        with tracer.start_as_current_span("test"):
            await client.fetch(f"127.0.0.1:{port}", held, 0)
        upload = await wait_for(spans, "piece upload")
        await client.aclose()
        group.cancel_scope.cancel()

    (fetch,) = named(spans, "piece fetch")
    assert parent_of(upload) == span_id(fetch)
    assert trace_id(upload) == trace_id(fetch)
    assert server.upload_latency.counts != [0] * len(server.upload_latency.counts)


async def test_a_tcp_server_without_trace_contexts_still_serves(
    spans: InMemorySpanExporter, store: dragonpy.PieceStore, held: str
) -> None:
    server = TcpPieceServer(store)
    server.capabilities &= ~CAP_TRACE
    client = open_client("tcp")
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        with tracer.start_as_current_span("test"):
            piece, _ = await client.fetch(f"127.0.0.1:{port}", held, 0)
        await client.aclose()
        group.cancel_scope.cancel()

    assert piece.number == 0
    assert named(spans, "piece fetch")
    # The context stayed home, and uploads outside any trace have no span.
    assert not named(spans, "piece upload")


def get_frame(task_id: str, trace_field: bytes) -> bytes:
    body = (0).to_bytes(4, "big") + len(task_id).to_bytes(4, "big") + task_id.encode()
    body += trace_field
    return HEADER.pack(FrameType.GET, 0x1, 0, 7, len(body)) + body


def exchange(port: int, frame: bytes) -> int:
    """Send HELLO (offering TRACE) and ``frame``; the type of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        hello = b"DPYT" + (1).to_bytes(2, "big") + CAP_TRACE.to_bytes(4, "big")
        sock.sendall(HEADER.pack(FrameType.HELLO, 0, 0, 0, len(hello)) + hello)
        ack = sock.recv(HEADER.size + 12)
        assert ack[0] == FrameType.HELLO_ACK
        sock.sendall(frame)
        return sock.recv(HEADER.size)[0]


async def test_a_tcp_get_carries_its_traceparent_after_the_task_id(
    spans: InMemorySpanExporter, store: dragonpy.PieceStore, held: str
) -> None:
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    server = open_server("tcp", store)
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve, "127.0.0.1", 0)
        good = get_frame(held, bytes((len(traceparent),)) + traceparent)
        short = get_frame(held, bytes((len(traceparent) + 1,)) + traceparent)
        answers = [
            await anyio.to_thread.run_sync(exchange, port, frame)
            for frame in (good, short)
        ]
        upload = await wait_for(spans, "piece upload")
        group.cancel_scope.cancel()

    assert answers == [FrameType.PIECE, FrameType.ERROR]
    assert trace_id(upload) == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_of(upload) == 0xB7AD6B7169203331


# Exporting


class _Collector(BaseHTTPRequestHandler):
    posted: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.posted.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts everything; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_EXPORT = """
import sys
from opentelemetry import trace
from dragonpy_cli._tracing import configure_tracing
configure_tracing("dragonpy-test", sys.argv[1] or None)
with trace.get_tracer("test").start_as_current_span("exported"):
    pass
provider = trace.get_tracer_provider()
print(type(provider).__name__)
getattr(provider, "shutdown", lambda: None)()
"""


@pytest.mark.parametrize("configured", [True, False])
def test_spans_are_exported_over_otlp_only_when_an_endpoint_is_set(
    collector: str, configured: bool
) -> None:
    _Collector.posted.clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

    run = subprocess.run(
        [sys.executable, "-c", _EXPORT, collector if configured else ""],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )

    provider = run.stdout.strip()
    if configured:
        assert (provider, _Collector.posted) == ("TracerProvider", ["/v1/traces"])
    else:
        assert (provider, _Collector.posted) == ("ProxyTracerProvider", [])
