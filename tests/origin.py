"""Origins for tests: nginx for the real thing, and a scriptable Python server that
misbehaves on purpose (ignores Range, truncates bodies, lies about lengths)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it never does."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            # Any answer will do, even over a certificate nobody trusts yet.
            httpx.get(url, timeout=1, verify=False)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start:\n{log.read_text()}")


@contextlib.contextmanager
def run_nginx(
    root: Path, workdir: Path, certificate: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """nginx serving ``root`` on a free loopback port; yields its base URL.

    Its access log records each request's range and body bytes, so tests can count
    origin traffic. Under ``/slow/`` it serves the same files at a limited rate.
    With ``certificate`` (certificate and key files) it serves HTTPS.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    # As root, nginx workers would drop to "nobody", who cannot read pytest's tmp.
    user = "user root;" if os.geteuid() == 0 else ""
    config.write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format ranges '$request_method $uri $http_range $status $body_bytes_sent';
    access_log {workdir}/access.log ranges;
    client_body_temp_path {workdir};
    proxy_temp_path {workdir};
    fastcgi_temp_path {workdir};
    uwsgi_temp_path {workdir};
    scgi_temp_path {workdir};
    sendfile on;
    server {{
        {_listen(port, certificate)}
        root {root};
        # The same files at 4 MB/s per connection: downloads that last long enough
        # to kill something in the middle of them.
        location /slow/ {{ alias {root}/; limit_rate 4m; }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"{'https' if certificate else 'http'}://127.0.0.1:{port}"
    try:
        wait_until_serving(url + "/", process, workdir / "error.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listen(port: int, certificate: tuple[Path, Path] | None) -> str:
    if certificate is None:
        return f"listen 127.0.0.1:{port};"
    cert, key = certificate
    return (
        f"listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; "
        f"ssl_certificate_key {key};"
    )


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made by openssl."""
    cert, key = directory / "origin.crt", directory / "origin.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def nginx_requests(workdir: Path, path: str) -> list[str]:
    """Access-log lines of requests for ``path`` (one per request)."""
    log = workdir / "access.log"
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if f" {path} " in line]


class TrickyOrigin:
    """A Python origin whose behaviour tests choose per path.

    ``content[path]`` is served with correct ranges unless ``behaviour[path]`` says
    otherwise: ``ignore-range``, ``truncate`` (closes mid-body), ``short`` (claims one
    more byte than it has), ``fail-once`` (500 once, then fine), ``status:<code>``,
    ``redirect:<path>`` (302 with signed query parameters), ``basic:<user>:<pw>``.
    """

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.behaviour: dict[str, str] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.url = ""

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, seen, _ in self.requests if seen == path)


def _handler(origin: TrickyOrigin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path, _, _ = self.path.partition("?")
            with origin.lock:
                origin.requests.append(("GET", path, self.headers.get("Range", "")))
            behaviour = origin.behaviour.get(path, "")
            if behaviour.startswith("status:"):
                return self._empty(int(behaviour.split(":")[1]))
            if behaviour.startswith("redirect:"):
                target = behaviour.partition(":")[2] + "?X-Amz-Signature=abc&Expires=1"
                return self._empty(302, {"Location": target})
            if behaviour.startswith("basic:"):
                import base64

                expected = base64.b64encode(behaviour[6:].encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self._empty(401, {"WWW-Authenticate": 'Basic realm="t"'})
            if behaviour == "fail-once":
                origin.behaviour[path] = ""
                return self._empty(500)
            if path not in origin.content:
                return self._empty(404)
            self._serve(origin.content[path], behaviour)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, data: bytes, behaviour: str) -> None:
            total = len(data) + (1 if behaviour == "short" else 0)
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            if match is None or behaviour == "ignore-range":
                start, end, status = 0, total - 1, 200
            else:
                start, end = int(match[1]), min(int(match[2]), total - 1)
                status = 206

            self.send_response(status)
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
            self.end_headers()

            body = data[start : end + 1]
            if behaviour == "truncate":
                body = body[: len(body) // 2]
            self.wfile.write(body)
            if behaviour in ("truncate", "short") and len(body) < end - start + 1:
                self.close_connection = True

    return Handler


@contextlib.contextmanager
def run_tricky_origin() -> Iterator[TrickyOrigin]:
    origin = TrickyOrigin()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(origin))
    server.daemon_threads = True
    origin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
