"""A daemon's side of the scheduler API (see ``_messages`` for the exchanges)."""

from __future__ import annotations

from typing import Final, TypeVar

import httpx
from opentelemetry import trace

from .._errors import DragonpyError
from .._telemetry import child_span, inject_headers
from .._tls import client_context
from .._wire import decode, encode
from ._messages import (
    AnnounceReply,
    HostAnnounce,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceReport,
    SeedTrigger,
    SeedTriggers,
    route_of,
)

__all__ = [
    "SchedulerClient",
    "SchedulerForgot",
    "SchedulerRefused",
    "SchedulerUnreachable",
]

_TIMEOUT: Final = 5.0
# Long polls are held by the server; the client waits this much longer before it
# calls the scheduler unreachable.
_POLL_SLACK: Final = 10.0

T = TypeVar("T")


class SchedulerUnreachable(DragonpyError):
    """The scheduler did not answer (down, restarting, or the network)."""


class SchedulerRefused(DragonpyError):
    """The scheduler rejected a request as malformed or impossible."""


class SchedulerForgot(SchedulerRefused):
    """The scheduler does not know the host or peer (it restarted): announce and
    register again."""


class SchedulerClient:
    """Talks to one scheduler at ``host:port``."""

    def __init__(self, address: str, *, timeout: float = _TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=f"http://{address}",
            headers={"Content-Type": "application/json"},
            verify=client_context(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def announce(self, host: HostAnnounce) -> AnnounceReply:
        return decode(await self._call("POST", "/hosts", encode(host)), AnnounceReply)

    async def leave_host(self, host_id: str) -> None:
        await self._call("DELETE", f"/hosts/{host_id}")

    async def triggers(self, host_id: str, *, wait: float) -> list[SeedTrigger]:
        """Seed triggers for ``host_id``, waiting up to ``wait`` s for one."""
        body = await self._call(
            "GET", f"/hosts/{host_id}/triggers", params={"timeout": wait}, wait=wait
        )
        return decode(body, SeedTriggers).triggers

    async def register(self, registration: PeerRegister) -> PeerView:
        return decode(
            await self._call("POST", "/peers", encode(registration)), PeerView
        )

    async def view(self, peer_id: str, *, since: int, wait: float) -> PeerView:
        """The peer's view once its version passes ``since`` (or after ``wait`` s)."""
        body = await self._call(
            "GET",
            f"/peers/{peer_id}/view",
            params={"since": since, "timeout": wait},
            wait=wait,
        )
        return decode(body, PeerView)

    async def report(self, peer_id: str, report: PieceReport) -> None:
        await self._call("POST", f"/peers/{peer_id}/report", encode(report))

    async def finished(self, peer_id: str, finished: PeerFinished) -> None:
        await self._call("POST", f"/peers/{peer_id}/finished", encode(finished))

    async def leave_peer(self, peer_id: str) -> None:
        await self._call("DELETE", f"/peers/{peer_id}")

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        params: dict[str, float] | None = None,
        wait: float = 0.0,
    ) -> bytes:
        read = self.timeout + (wait + _POLL_SLACK if wait else 0.0)
        span = child_span(
            f"scheduler {method} {route_of(path)}",
            trace.SpanKind.CLIENT,
            {"server.address": self.address},
        )
        headers: dict[str, str] = {}
        try:
            with span:
                inject_headers(headers)
                response = await self._http.request(
                    method,
                    path,
                    content=body,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, read=read),
                )
        except httpx.HTTPError as exc:
            raise SchedulerUnreachable(
                f"scheduler {self.address} did not answer {method} {path}: {exc!r}"
            ) from exc
        if response.status_code == 404:
            raise SchedulerForgot(f"scheduler {self.address}: {response.text.strip()}")
        if 400 <= response.status_code < 500:
            raise SchedulerRefused(
                f"scheduler {self.address} refused {method} {path}: "
                f"{response.status_code} {response.text.strip()}"
            )
        if response.status_code >= 500:
            raise SchedulerUnreachable(
                f"scheduler {self.address} failed {method} {path}: "
                f"{response.status_code}"
            )
        return response.content
