"""The daemon's side of the control socket (``_handoff``): it downloads what a
``dragonpy get`` sharing its store orders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._download import Download, check_digest_syntax
from .._errors import DragonpyError
from .._handoff import DownloadDone, DownloadOrder, DownloadRefused
from .._web import Request, Response, Router, text
from .._wire import MessageError, decode, encode

if TYPE_CHECKING:
    from ._node import Daemon


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
