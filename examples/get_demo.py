"""Fetch a file with ``dragonpy get`` twice: cold from an origin, then warm.

Starts its own origin (a threaded HTTP server from the standard library, serving a
generated file with Range support) and a private piece store, so it needs nothing
else on the machine. Run it with ``nox -s demo`` or ``python examples/get_demo.py``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeHandler(SimpleHTTPRequestHandler):
    """The standard file handler, plus single byte ranges (RFC 9110 §14.2)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        spec = self.headers.get("Range", "")
        if not spec.startswith("bytes=") or not path.is_file():
            return super().do_GET()

        size = path.stat().st_size
        first, _, last = spec[6:].partition("-")
        start, end = int(first), min(int(last or size - 1), size - 1)
        self.send_response(206)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with path.open("rb") as file:
            file.seek(start)
            self.wfile.write(file.read(end - start + 1))


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that exit with idle keep-alive connections reset them; that is normal.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(directory: Path) -> ThreadingHTTPServer:
    handler = functools.partial(RangeHandler, directory=str(directory))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def dragonpy_get(url: str, output: Path, store: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "dragonpy_cli", "get", url, "-O", str(output)]
    command += ["--store", str(store), "--json"]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        content = os.urandom(args.size_mib * 1024 * 1024)
        (workdir / "model.bin").write_bytes(content)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        server = serve(workdir)
        url = f"http://127.0.0.1:{server.server_address[1]}/model.bin"
        print(f"origin: {url} ({len(content)} bytes, {digest})")

        try:
            for attempt in ("cold", "warm"):
                output = workdir / f"{attempt}.bin"
                result = dragonpy_get(url, output, workdir / "store")
                same = output.read_bytes() == content
                print(
                    f"{attempt}: {result['duration']:.2f} s, "
                    f"{result['bytes_from_origin']} bytes from the origin, "
                    f"{result['bytes_from_store']} from the store, "
                    f"content {'identical' if same else 'DIFFERENT'}"
                )
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
