"""How ``dragonpy get`` hands a download to the daemon that shares its store.

The daemon owning a store directory listens on a Unix socket found from that
directory (``control_socket_path``). ``POST /downloads`` with a ``DownloadOrder``
has it download the task into the store through the swarm; it answers, once the
task is there, with a ``DownloadDone``, or a ``DownloadRefused`` naming the error
and the exit code ``dragonpy get`` should use. The caller then copies the content
out of the store.

Kept apart from the daemon, which serves the socket (``_daemon/_control.py``): a
``dragonpy get`` started on every node at once should not import the daemon, the
scheduler and the metrics registry only to ask.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from typing import Final

import attrs

from ._errors import DragonpyError
from ._http11 import (
    BodyOverrun,
    HeadError,
    StaleConnection,
    TruncatedBody,
    read_body,
    read_head,
)
from ._wire import MessageError, decode, encode

#: The control socket's name inside the store directory.
CONTROL_SOCKET: Final = "daemon.sock"
# sockaddr_un holds 108 bytes with the terminating NUL (unix(7)).
_MAX_SOCKET_PATH: Final = 107
# Not the temporary directory: TMPDIR differs between processes and can itself be
# too deep.
_SHORT_SOCKET_ROOT: Final = "/tmp"
_ORDER_TIMEOUT: Final = 10.0
_MAX_ANSWER_HEAD: Final = 16 * 1024
_MAX_ANSWER_BODY: Final = 1024 * 1024


def control_socket_path(store_dir: str | os.PathLike[str]) -> str:
    """Where the daemon owning ``store_dir`` listens for ``dragonpy get``.

    ``<store>/daemon.sock`` when that path fits in a socket address. A deeper store
    gets a socket named after its real path in ``/tmp/dragonpy-<uid>``, the uid
    being the store's owner, so a daemon and a CLI sharing the store agree on it
    whatever their environments say.
    """
    inside = os.path.join(store_dir, CONTROL_SOCKET)
    if len(os.fsencode(inside)) <= _MAX_SOCKET_PATH:
        return inside
    real = os.path.realpath(store_dir)
    name = hashlib.sha256(os.fsencode(real)).hexdigest()[:32]
    owner = os.stat(real).st_uid
    return os.path.join(_SHORT_SOCKET_ROOT, f"dragonpy-{owner}", f"{name}.sock")


def make_socket_directory(socket_path: str) -> None:
    """Create the directory of a control socket outside its store, private to
    this user; refuse one somebody else made."""
    directory = os.path.dirname(socket_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    status = os.lstat(directory)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
        raise DragonpyError(
            f"{directory} is not a directory of this user's; remove it, or give "
            "the daemon a store directory with a shorter path"
        )


@attrs.frozen
class DownloadOrder:
    url: str
    headers: dict[str, str] = attrs.field(factory=dict)
    tag: str = ""
    application: str = ""
    digest: str | None = None
    #: Bytes wanted before the others, ``[start, end]`` inclusive (a range read).
    first: tuple[int, int] | None = None


@attrs.frozen
class DownloadDone:
    task_id: str
    peer_id: str
    content_length: int
    bytes: dict[str, int]
    duration: float


@attrs.frozen
class DownloadRefused:
    error: str
    message: str
    exit_code: int


class DaemonDownloadFailed(DragonpyError):
    """The local daemon could not download the task; carries its exit code."""

    def __init__(self, refused: DownloadRefused) -> None:
        super().__init__(f"{refused.message} (from the local daemon)")
        self.exit_code = refused.exit_code


class DaemonUnavailable(DragonpyError):
    """The local daemon's control socket answered, but not as a daemon should."""


def order_download(
    socket_path: str, order: DownloadOrder, *, timeout: float | None
) -> DownloadDone | None:
    """Have the daemon listening on ``socket_path`` download ``order`` into its
    store; None when no daemon listens there.

    Blocking: the daemon answers once the download is done, within ``timeout``
    seconds (None: however long it takes). A plain socket rather than httpx, whose
    import would cost every node of a fan-out start-up time for one request.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_ORDER_TIMEOUT)
        try:
            sock.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None  # no daemon, or a socket file a dead one left behind
        try:
            status, body = _exchange(sock, encode(order), timeout)
        except StaleConnection as exc:
            raise DaemonUnavailable(
                f"the local daemon at {socket_path} closed the connection without "
                "answering"
            ) from exc
        except (OSError, HeadError, BodyOverrun, TruncatedBody) as exc:
            raise DaemonUnavailable(
                f"the local daemon at {socket_path} failed: {exc!r}"
            ) from exc

    if status not in (200, 502):
        raise DaemonUnavailable(
            f"the local daemon refused the download: {status} "
            f"{body.decode(errors='replace').strip()}"
        )
    try:
        if status == 200:
            return decode(body, DownloadDone)
        refused = decode(body, DownloadRefused)
    except MessageError as exc:
        raise DaemonUnavailable(
            f"the local daemon answered {status} with a bad body: {exc}"
        ) from exc
    raise DaemonDownloadFailed(refused)


def _exchange(
    sock: socket.socket, body: bytes, timeout: float | None
) -> tuple[int, bytes]:
    """Send ``POST /downloads`` and read the answer: its status and body."""
    head = (
        "POST /downloads HTTP/1.1\r\nHost: daemon\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode("ascii") + body)
    sock.settimeout(timeout)
    buffer = bytearray(_MAX_ANSWER_HEAD)
    response, received = read_head(sock, buffer)
    length = response.headers.get("content-length", "")
    if not length.isdigit() or int(length) > _MAX_ANSWER_BODY:
        raise HeadError(f"answered with a Content-Length of {length!r}")
    answer = bytearray(int(length))
    read_body(sock, memoryview(answer), response, buffer, received)
    return response.status, bytes(answer)
