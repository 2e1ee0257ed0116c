"""Shared helpers for the benchmarks: an nginx origin, a test file, the timing rules.

The rules every benchmark follows, because disk writes on the benchmark machines are
noisy (page-cache writeback of one run lands in the next one's timing):

* before each timed run, delete the previous run's outputs and stores, then ``sync``;
* run every contender several times, alternating the order between rounds;
* report the median and the best run, and check every output outside the timing.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
#: Throughput is in MB/s (10**6 bytes), as ``dragonpy get`` itself reports it.
MB: Final = 1_000_000

#: Same disk as /tmp, and stable, so the large test file is reused between scripts.
DEFAULT_WORKDIR: Final = Path(tempfile.gettempdir()) / "dragonpy-bench"

_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 10.0
_POLL_INTERVAL: Final = 0.05
_WRITE_CHUNK: Final = 64 * MIB
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)

_NGINX_CONF: Final = """\
{user}daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{http}
    server {{
        listen {listen};
{server}
    }}
}}
"""


class BenchmarkError(Exception):
    """A contender failed or wrote wrong bytes: the figures cannot be trusted."""


# The origin


@contextmanager
def nginx_serving(root: Path) -> Iterator[str]:
    """Serve ``root`` with nginx on loopback; yields the base URL (no trailing /)."""
    with tempfile.TemporaryDirectory(prefix="dragonpy-nginx-") as prefix:
        port = free_port()
        conf = Path(prefix) / "nginx.conf"
        server = f"        root {root.resolve()};"
        conf.write_text(nginx_conf(Path(prefix), f"127.0.0.1:{port}", server=server))
        log = Path(prefix) / "stderr.log"
        with log.open("wb") as stderr:
            # A session of its own, so the workers can be killed with the master.
            process = subprocess.Popen(
                ["nginx", "-c", str(conf), "-p", prefix, "-e", f"{prefix}/error.log"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            wait_until_answering(process, port, lambda: _logs(Path(prefix)))
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


def nginx_conf(
    prefix: Path, listen: str, *, server: str, http: str = "", workers: int = 2
) -> str:
    """An nginx configuration with its files under ``prefix``, one server on
    ``listen`` (``host:port``) with the ``server`` directives, and ``http`` ones."""
    # As root, nginx would run its workers as "nobody", who cannot read a 0700
    # temp dir; any other user keeps its own identity and rejects the directive.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name};\n"
    return _NGINX_CONF.format(
        user=user,
        workers=workers,
        prefix=prefix,
        listen=listen,
        server=server,
        http=http,
    )


def free_port() -> int:
    # The port is free now; nginx binds it a few milliseconds later. A clash shows
    # up as the server exiting, which wait_until_answering reports.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_answering(
    process: subprocess.Popen[bytes], port: int, logs: Callable[[], str]
) -> None:
    """Wait until a server answers HTTP on ``port``; ``logs`` explains a failure."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"{process.args!r} exited at start:\n{logs()}")
        if _answers(port):
            return
        time.sleep(_POLL_INTERVAL)
    raise BenchmarkError(f"{process.args!r} did not answer within {_START_TIMEOUT} s")


def _answers(port: int) -> bool:
    """True once the server gives any HTTP answer (nginx's root is a 403 or 404)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("HEAD", "/")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        # SIGTERM is nginx's fast shutdown: the master stops its workers and exits.
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    # Still running, or the master died without its workers: kill the whole group.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=_STOP_TIMEOUT)


def _logs(prefix: Path) -> str:
    parts = [prefix / "stderr.log", prefix / "error.log"]
    return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())


# Files


def ensure_test_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes at ``path``; an existing one of that size stays.

    Random, so no layer can compress it; reused, because writing 1 GiB takes longer
    than the download it is there to measure.
    """
    if path.is_file() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under another name first: an interrupted write is never reused.
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        left = size
        while left > 0:
            chunk = min(left, _WRITE_CHUNK)
            out.write(os.urandom(chunk))
            left -= chunk
    partial.replace(path)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_WRITE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_output(path: Path, size: int, sha256: str | None) -> None:
    """Raise unless ``path`` has ``size`` bytes (and, if given, that sha256)."""
    if not path.is_file():
        raise BenchmarkError(f"{path} was not written")
    actual = path.stat().st_size
    if actual != size:
        raise BenchmarkError(f"{path} has {actual} bytes, expected {size}")
    if sha256 is not None and sha256_of(path) != sha256:
        raise BenchmarkError(f"{path} has the right size but the wrong sha256")


def remove(*paths: Path) -> None:
    """Delete files or directories that may not exist."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def settle() -> None:
    """Flush dirty pages now, so their writeback does not land in the next timing.

    Call it after deleting the previous outputs: deleted files' dirty pages are
    dropped rather than written.
    """
    os.sync()


def parse_size(text: str) -> int:
    """Bytes in ``1GiB``, ``512MiB``, ``64K`` (all binary) or ``1048576``."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size like 1GiB, 512MiB or 1048576")
    number, unit = match.groups()
    power = "BKMG".index((unit or "B")[0].upper())
    return int(number) << (10 * power)


# Rounds and figures


def round_order(items: Sequence[T], round_number: int) -> list[T]:
    """Forward in even rounds, backward in odd ones, so no one always goes first."""
    return list(items) if round_number % 2 == 0 else list(reversed(items))


def load_average() -> str:
    """The 1, 5 and 15 minute load: other work on a 2-core box skews every figure."""
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())


def mb_per_s(size: int, seconds: float) -> float:
    return size / MB / max(seconds, 1e-9)


def median_and_best(seconds: Sequence[float]) -> tuple[float, float]:
    """The median and the shortest of a contender's run times."""
    return statistics.median(seconds), min(seconds)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with columns padded to line up in a terminal too."""
    widths = [
        max(len(row[column]) for row in [headers, *rows])
        for column in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
