"""A whole swarm on this machine: an origin that counts what it serves, a scheduler,
a seed and three peers, each a real process on loopback. Every peer downloads the
same file at the same instant; the table shows where each one's bytes came from,
and the origin's total shows it served the file once.

Run it with ``nox -s demo`` (or ``python examples/cluster_demo.py --size 512``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

MIB = 1024 * 1024
SOURCES = ("local", "peer", "seed", "origin")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class CountingOrigin(ThreadingHTTPServer):
    """Serves one directory with Range support and counts the body bytes it sends."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bytes_served = 0
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _OriginHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients closing kept-alive connections are not news

    def count(self, sent: int) -> None:
        with self.lock:
            self.bytes_served += sent
            self.requests += 1


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingOrigin

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.flush()  # the head goes out before the body is sent from the file
        with path.open("rb") as file:
            sent = self.connection.sendfile(file, start, end - start + 1)
        self.server.count(sent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dragonpy(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "dragonpy_cli", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up:\n{log.read_text()}")


@contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)


class Node:
    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.store = workdir / name
        self.log = workdir / f"{name}.log"
        self.health = free_port()
        self.metrics = free_port()

    def start(self, scheduler: str, *, seed: bool, stack: ExitStack) -> None:
        args = [
            "daemon",
            f"--store={self.store}",
            f"--hostname={self.name}",
            "--listen=127.0.0.1",
            f"--piece-port={free_port()}",
            f"--health-port={self.health}",
            f"--metrics-port={self.metrics}",
            f"--proxy-port={free_port()}",
            f"--scheduler={scheduler}",
            *(["--seed"] if seed else []),
        ]
        process = stack.enter_context(running(dragonpy(*args, log=self.log)))
        wait_healthy(f"http://127.0.0.1:{self.health}/healthy", process, self.log)

    def bytes_by_source(self) -> dict[str, int]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics}/metrics").text
        found = dict.fromkeys(SOURCES, 0)
        for source in SOURCES:
            sample = f'dragonpy_download_bytes_total{{source="{source}"}} '
            for line in text.splitlines():
                if line.startswith(sample):
                    found[source] = int(float(line[len(sample) :]))
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="file size in MiB")
    parser.add_argument("--peers", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dragonpy-demo-"))
    try:
        run_demo(workdir, args.size * MIB, args.peers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(workdir: Path, size: int, peer_count: int) -> None:
    www = workdir / "www"
    www.mkdir()
    content = os.urandom(size)
    (www / "blob.bin").write_bytes(content)
    expected = hashlib.sha256(content).hexdigest()
    del content

    origin = CountingOrigin(www)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_address[1]}/blob.bin"

    with ExitStack() as stack:
        port = free_port()
        scheduler_log = workdir / "scheduler.log"
        scheduler = stack.enter_context(
            running(
                dragonpy(
                    "scheduler",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    f"--metrics-port={free_port()}",
                    log=scheduler_log,
                )
            )
        )
        wait_healthy(f"http://127.0.0.1:{port}/healthy", scheduler, scheduler_log)
        seed = Node("seed", workdir)
        seed.start(f"127.0.0.1:{port}", seed=True, stack=stack)
        peers = [Node(f"peer{n}", workdir) for n in range(1, peer_count + 1)]
        for peer in peers:
            peer.start(f"127.0.0.1:{port}", seed=False, stack=stack)

        print(f"{len(peers)} peers download {size // MIB} MiB at the same instant...")
        started = time.monotonic()
        gets = {
            peer.name: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dragonpy_cli",
                    "get",
                    url,
                    "-O",
                    str(workdir / f"{peer.name}.out"),
                    f"--store={peer.store}",
                    "--quiet",
                ]
            )
            for peer in peers
        }
        seconds = {}
        for name, process in gets.items():
            if process.wait(timeout=600) != 0:
                raise SystemExit(f"{name}: dragonpy get failed")
            seconds[name] = time.monotonic() - started

        print_table(seed, peers, seconds)
        for peer in peers:
            digest = hashlib.sha256((workdir / f"{peer.name}.out").read_bytes())
            assert digest.hexdigest() == expected, f"{peer.name}: wrong content"
        verdict = "once" if origin.bytes_served <= size + 1 else "MORE THAN ONCE"
        print(
            f"\norigin served {origin.bytes_served:,} bytes in {origin.requests} "
            f"requests for a {size:,}-byte file: the file {verdict}."
        )
    origin.shutdown()


def print_table(seed: Node, peers: list[Node], seconds: dict[str, float]) -> None:
    header = f"{'node':<8}" + "".join(f"{s + ' MiB':>12}" for s in SOURCES)
    print(header + f"{'time':>10}")
    for node in [seed, *peers]:
        counts = node.bytes_by_source()
        row = f"{node.name:<8}" + "".join(f"{counts[s] / MIB:>12.1f}" for s in SOURCES)
        took = seconds.get(node.name)
        print(row + (f"{took:>9.2f}s" if took is not None else f"{'-':>10}"))


if __name__ == "__main__":
    main()
