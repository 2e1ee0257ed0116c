"""``dragonpy get``'s side of the control socket, against a stand-in daemon that
answers what each test makes it answer (the real daemon: tests/test_cluster.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dragonpy._handoff import (
    DaemonDownloadFailed,
    DaemonUnavailable,
    DownloadDone,
    DownloadOrder,
    order_download,
)

ORDER = DownloadOrder("http://origin.test/blob", headers={"X-Trace": "1"}, tag="t")
DONE = {
    "task_id": "ab" * 32,
    "peer_id": "peer",
    "content_length": 5,
    "bytes": {"origin": 5},
    "duration": 0.5,
}


def answer(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@contextmanager
def daemon(path: Path, reply: bytes | None) -> Iterator[list[bytes]]:
    """A socket at ``path`` that takes one request and sends ``reply`` (None: never
    answers); yields the list the request's bytes are put in."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    requests: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request or not request.endswith(b"}"):
                request += connection.recv(65536)
            requests.append(request)
            if reply is not None:
                connection.sendall(reply)
            else:
                done.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        done.set()
        thread.join(5)
        listener.close()


def test_the_order_is_posted_and_the_answer_read(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sock"
    with daemon(path, answer(200, json.dumps(DONE).encode())) as requests:
        done = order_download(str(path), ORDER, timeout=5)

    assert done == DownloadDone(**DONE)  # type: ignore[arg-type]
    head, _, body = requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /downloads HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["headers"] == {"X-Trace": "1"}


def test_no_socket_or_a_dead_daemons_socket_is_no_daemon(tmp_path: Path) -> None:
    assert order_download(str(tmp_path / "none.sock"), ORDER, timeout=5) is None

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(stale))  # the file stays when the socket closes
    assert order_download(str(stale), ORDER, timeout=5) is None


def test_a_failed_download_carries_the_daemons_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sock"
    refused = {"error": "OriginStatusError", "message": "404 Not Found", "exit_code": 5}
    reply = answer(502, json.dumps(refused).encode())
    with (
        daemon(path, reply),
        pytest.raises(DaemonDownloadFailed, match="404 Not Found") as failed,
    ):
        order_download(str(path), ORDER, timeout=5)

    assert failed.value.exit_code == 5


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (answer(400, b"bad download order: url"), "refused the download: 400"),
        (answer(200, b'{"task_id": 1}'), "answered 200 with a bad body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length"),
        (answer(200, b"{}")[:-1], "closed the connection"),
        (answer(200, b"{}") + b"{}", "sent more than the 2 bytes"),
        (b"", "closed the connection without answering"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed status line"),
    ],
)
def test_a_daemon_answering_wrongly_is_unavailable(
    tmp_path: Path, reply: bytes, match: str
) -> None:
    path = tmp_path / "daemon.sock"
    with daemon(path, reply), pytest.raises(DaemonUnavailable, match=match):
        order_download(str(path), ORDER, timeout=5)


def test_a_daemon_that_never_answers_times_out(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sock"
    with daemon(path, None), pytest.raises(DaemonUnavailable, match="timed out"):
        order_download(str(path), ORDER, timeout=0.2)
