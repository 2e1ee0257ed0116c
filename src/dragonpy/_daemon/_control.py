"""The daemon's control socket: how ``dragonpy get`` hands a download to it.

``POST /downloads`` with a ``DownloadOrder`` downloads the task into the daemon's
store through the swarm and answers, once it is there, with a ``DownloadDone`` or a
``DownloadRefused`` naming the error and the exit code ``dragonpy get`` should use.
The caller then copies the content out of the store, which it shares with the
daemon.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING, Final

import attrs
import httpx

from .._download import Download, check_digest_syntax
from .._errors import DragonpyError
from .._scheduler import MessageError, decode, encode
from .._web import Request, Response, Router, text

if TYPE_CHECKING:
    from ._node import Daemon

_ORDER_TIMEOUT: Final = 10.0

#: The control socket's name inside the store directory.
CONTROL_SOCKET: Final = "daemon.sock"
# sockaddr_un holds 108 bytes with the terminating NUL (unix(7)).
_MAX_SOCKET_PATH: Final = 107
# Not the temporary directory: TMPDIR differs between processes and can itself be
# too deep.
_SHORT_SOCKET_ROOT: Final = "/tmp"


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


def control_router(node: Daemon) -> Router:
    async def download(request: Request) -> Response:
        try:
            order = decode(request.body, DownloadOrder)
            digest = None if order.digest is None else check_digest_syntax(order.digest)
            _check_range(order.first)
        except (MessageError, ValueError) as exc:
            return text(400, f"bad download order: {exc}")
        task = Download(
            order.url, tag=order.tag, application=order.application, digest=digest
        )
        try:
            result = await node.download(task, headers=order.headers, first=order.first)
        except DragonpyError as exc:
            refused = DownloadRefused(type(exc).__name__, str(exc), exc.exit_code)
            return Response(502, encode(refused))
        done = DownloadDone(
            result.task_id,
            result.peer_id,
            result.content_length,
            result.bytes,
            result.duration,
        )
        return Response(200, encode(done))

    async def healthy(request: Request) -> Response:
        return text(200, "OK")

    router = Router()
    router.add("POST", r"/downloads", download)
    router.add("GET", r"/healthy", healthy)
    return router


def _check_range(first: tuple[int, int] | None) -> None:
    if first is not None and not 0 <= first[0] <= first[1]:
        raise ValueError(f"first={list(first)} is not a byte range [start, end]")


class DaemonDownloadFailed(DragonpyError):
    """The local daemon could not download the task; carries its exit code."""

    def __init__(self, refused: DownloadRefused) -> None:
        super().__init__(f"{refused.message} (from the local daemon)")
        self.exit_code = refused.exit_code


class DaemonUnavailable(DragonpyError):
    """The local daemon's control socket answered, but not as a daemon should."""


async def order_download(
    socket_path: str, order: DownloadOrder, *, timeout: float | None
) -> DownloadDone | None:
    """Have the daemon listening on ``socket_path`` download ``order`` into its
    store; None when no daemon listens there."""
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    async with httpx.AsyncClient(transport=transport, timeout=_ORDER_TIMEOUT) as http:
        try:
            response = await http.post(
                "http://daemon/downloads",
                content=encode(order),
                timeout=httpx.Timeout(_ORDER_TIMEOUT, read=timeout),
            )
        except (httpx.ConnectError, FileNotFoundError):
            return None
        except httpx.HTTPError as exc:
            raise DaemonUnavailable(
                f"the local daemon at {socket_path} failed: {exc!r}"
            ) from exc
    if response.status_code == 200:
        return decode(response.content, DownloadDone)
    if response.status_code == 502:
        raise DaemonDownloadFailed(decode(response.content, DownloadRefused))
    raise DaemonUnavailable(
        f"the local daemon refused the download: {response.status_code} "
        f"{response.text.strip()}"
    )
