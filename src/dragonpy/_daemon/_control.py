"""The daemon's control socket: how ``dragonpy get`` hands a download to it.

``POST /downloads`` with a ``DownloadOrder`` downloads the task into the daemon's
store through the swarm and answers, once it is there, with a ``DownloadDone`` or a
``DownloadRefused`` naming the error and the exit code ``dragonpy get`` should use.
The caller then copies the content out of the store, which it shares with the
daemon.
"""

from __future__ import annotations

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
