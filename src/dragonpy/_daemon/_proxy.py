"""The registry mirror (port 4001): containerd, skopeo, podman and Nydus pull
through it, and blobs go peer to peer.

A request names its upstream registry with the ``X-Dragonfly-Registry`` header
(``https://registry.example:5000``), else with containerd's ``?ns=`` parameter,
else the daemon's default registry; only registries the operator configured are
served, unless any is allowed. A request whose path matches a rule (default
``blobs/sha256.*``), or that carries ``X-Dragonfly-Use-P2P: true``, is a task:
the daemon downloads the blob through the swarm and streams it to the client piece
by piece, as the pieces land. A range read brings only the pieces that cover it,
unless prefetch is on (``--prefetch``, or ``X-Dragonfly-Prefetch: true``): then
the rest of the blob follows, after those pieces. Everything else (``/v2/`` pings,
manifests, tags, token endpoints) goes to the upstream as it came, and its answer
comes back as it left, streamed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import httpx
from opentelemetry import trace

from .._backends._oci import is_loopback
from .._download import Download
from .._errors import DragonpyError, StoreError
from .._pieces import pieces_covering
from .._scheduler import Priority
from .._storage import PieceStore
from .._task import Task
from .._telemetry import extract_headers, tracer
from .._tls import client_context
from .._web import Request, Response, SendChunk, WrittenBody, text
from ._metrics import SOURCES, DaemonMetrics
from ._swarm import SwarmDownload

if TYPE_CHECKING:
    from ._node import Daemon

logger = logging.getLogger("dragonpy.proxy")

REGISTRY_HEADER: Final = "x-dragonfly-registry"
USE_P2P_HEADER: Final = "x-dragonfly-use-p2p"
PREFETCH_HEADER: Final = "x-dragonfly-prefetch"
PRIORITY_HEADER: Final = "x-dragonfly-priority"
TASK_HEADER: Final = "X-Dragonpy-Task-Id"
SOURCE_HEADER: Final = "X-Dragonpy-Source"
DEFAULT_RULES: Final = (r"blobs/sha256.*",)
# Headers that describe one connection, not the message: never forwarded.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")
_REALM: Final = re.compile(r'realm="([^"]+)"')
_STREAM_CHUNK: Final = 4 * 1024 * 1024
_ACCEPTED_FOR: Final = 60.0
_ACCEPTED_MAX: Final = 10_000
_CONNECT_TIMEOUT: Final = 10.0


@attrs.frozen
class ProxyConfig:
    port: int = 4001
    #: Upstream registries served, as base URLs; the first is the default.
    registries: tuple[str, ...] = ()
    #: Serve any upstream a request names (an open relay: only on trusted networks).
    allow_any_registry: bool = False
    #: Regular expressions (searched in the path) that make a request a task.
    rules: tuple[str, ...] = DEFAULT_RULES
    #: Serve a blob only once the upstream accepts the request's credentials (or
    #: its lack of them) for it: private blobs are never served to anyone who asks.
    auth_check: bool = True
    #: Seconds a blob answer may wait for its next piece; then the connection
    #: closes, so the client falls back to the registry.
    stall_timeout: float = 30.0
    #: After a range read, bring the rest of the blob too (``X-Dragonfly-Prefetch``
    #: decides per request).
    prefetch: bool = False

    def __attrs_post_init__(self) -> None:
        for rule in self.rules:
            try:
                re.compile(rule)
            except re.error as exc:
                message = f"rule {rule!r} is not a regular expression: {exc}"
                raise ValueError(message) from None
        for url in self.registries:
            registry_base(url)


class BadProxyRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RegistryMirror:
    """Answers registry requests for one daemon."""

    def __init__(self, config: ProxyConfig, daemon: Daemon) -> None:
        self.daemon = daemon
        self.reconfigure(config)
        self.http = httpx.AsyncClient(
            follow_redirects=True, timeout=30.0, verify=client_context()
        )
        # (blob URL, digest of the Authorization header) -> accepted until then.
        self._accepted: dict[tuple[str, str], float] = {}
        # Token endpoints named by served registries' challenges, by path: older
        # nydusd sends its token requests to the mirror, which forwards them.
        self._realms: dict[str, str] = {}

    def reconfigure(self, config: ProxyConfig) -> None:
        """Answer by ``config`` from the next request on (the port stays)."""
        self.config = config
        self.rules = [re.compile(rule) for rule in config.rules]
        self.registries = {registry_base(url) for url in config.registries}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __call__(self, request: Request) -> Response:
        """Answer a request in a span that lasts until its body is sent: the parent
        of the blob's download, when it starts one."""
        span = tracer.start_span(
            f"mirror {request.method}",
            context=extract_headers(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
            },
        )
        with trace.use_span(span, end_on_exit=False):
            response = await self._answer(request)
        span.set_attribute("http.response.status_code", response.status)
        return _ending_span(response, span)

    async def _answer(self, request: Request) -> Response:
        try:
            if request.method == "CONNECT":
                return await self._connect(request.target)
            realm = self._realms.get(request.path)
            if realm is not None:
                return await self._pass_through(request, realm)
            upstream = self._upstream(request)
            if self._is_task(request):
                return await self._blob(request, upstream)
            return await self._pass_through(request, upstream)
        except BadProxyRequest as exc:
            logger.info("%s %s refused: %s", request.method, request.path, exc)
            return text(exc.status, str(exc))

    # Where to, and how

    def _upstream(self, request: Request) -> str:
        named = (
            _from_absolute_target(request)
            or request.headers.get(REGISTRY_HEADER)
            or _from_namespace(request)
        )
        if not named:
            if not self.config.registries:
                raise BadProxyRequest(
                    400,
                    "no upstream registry: send X-Dragonfly-Registry, or start the "
                    "daemon with --registry",
                )
            return registry_base(self.config.registries[0])
        try:
            upstream = registry_base(named)
        except ValueError as exc:
            raise BadProxyRequest(400, str(exc)) from None
        if upstream not in self.registries and not self.config.allow_any_registry:
            raise BadProxyRequest(
                403,
                f"{upstream} is not a registry this mirror serves; add it with "
                "--registry (or allow any with --allow-any-registry)",
            )
        return upstream

    def _prefetch(self, request: Request) -> bool:
        asked = request.headers.get(PREFETCH_HEADER)
        if asked is None:
            return self.config.prefetch
        return asked.lower() == "true"

    def _is_task(self, request: Request) -> bool:
        if request.method != "GET":
            return False
        if request.headers.get(USE_P2P_HEADER, "").lower() == "true":
            return True
        return any(rule.search(request.path) for rule in self.rules)

    # Blobs, through the swarm

    async def _blob(self, request: Request, upstream: str) -> Response:
        url = upstream + request.path
        headers = {
            name: value
            for name, value in request.headers.items()
            if name == "authorization"
        }
        priority = _priority(request.headers.get(PRIORITY_HEADER))
        if priority is Priority.FORBIDDEN:
            return await self._pass_through(request, upstream)
        if self.config.auth_check and not await self._upstream_allows(url, headers):
            return await self._pass_through(request, upstream)
        wanted = _parse_range(request.headers.get("range"))
        task = Download(url)
        # A blob held whole is read straight from the store: no download to follow.
        held = await anyio.to_thread.run_sync(self.daemon.store.get_task, task.task_id)
        swarm = None
        if held is not None and held.complete:
            record, source = held, "local"
        else:
            swarm = await self.daemon.open_download(
                task,
                headers=headers,
                wanted=wanted,
                whole=wanted is None or self._prefetch(request),
                priority=priority,
            )
            try:
                # The answer starts once its first piece is verified, so that a
                # swarm that cannot deliver leaves the client a clean answer.
                with anyio.fail_after(self.config.stall_timeout):
                    record = await swarm.wait_for_task()
                    source = swarm.source(wanted)
                    await _first_piece(swarm, record, wanted)
            except (DragonpyError, TimeoutError) as exc:
                # Nothing is sent yet: the upstream answers for itself (a 401 with
                # its challenge, a 404 with the registry's error), as without us.
                reason = str(exc) or "no first piece in time"
                logger.info("%s through the swarm failed (%s); passing it", url, reason)
                return await self._pass_through(request, upstream)
        length = record.content_length
        extra = ((TASK_HEADER, record.id), (SOURCE_HEADER, source))
        self.daemon.metrics.proxy_requests.labels(source).inc()
        trace.get_current_span().set_attributes(
            {"dragonpy.task_id": record.id, "dragonpy.source": source}
        )
        if wanted is None:
            served = self._served(swarm, record, 200, length)
            body = self._body(swarm, record, 0, length - 1, served)
            return Response(200, body, "application/octet-stream", extra, length)
        start, end = wanted
        if start >= length:
            return Response(
                416,
                b"",
                "text/plain",
                (*extra, ("Content-Range", f"bytes */{length}")),
            )
        end = min(end, length - 1)
        served = self._served(swarm, record, 206, end - start + 1)
        body = self._body(swarm, record, start, end, served)
        content_range = ("Content-Range", f"bytes {start}-{end}/{length}")
        return Response(
            206,
            body,
            "application/octet-stream",
            (*extra, content_range),
            end - start + 1,
        )

    def _served(
        self, swarm: SwarmDownload | None, record: Task, status: int, length: int
    ) -> _Served:
        if swarm is not None:
            peer = swarm.peer_id
        else:
            registration = self.daemon.finished.get(record.id)
            peer = "-" if registration is None else registration.peer_id
        return _Served(self.daemon, record.id, peer, status, length)

    def _body(
        self,
        swarm: SwarmDownload | None,
        record: Task,
        start: int,
        end: int,
        served: _Served,
    ) -> AsyncIterator[bytes] | WrittenBody:
        """Bytes ``start``..``end`` of the task: sent straight from the store when
        it holds them all (``swarm`` is None), else each piece once it is stored."""
        if swarm is None:
            store = self.daemon.store
            write = functools.partial(_send_stored, store, record, start, end, served)
            return WrittenBody(write)
        return self._stream(swarm, record, start, end, served)

    async def _stream(
        self,
        swarm: SwarmDownload,
        record: Task,
        start: int,
        end: int,
        served: _Served,
    ) -> AsyncIterator[bytes]:
        try:
            for number, low, high in _spans(record, start, end):
                with anyio.fail_after(self.config.stall_timeout):
                    await swarm.wait_for_piece(number)
                source = swarm.source_of(number)
                for at in range(low, high, _STREAM_CHUNK):
                    chunk = await anyio.to_thread.run_sync(
                        _read,
                        self.daemon.store,
                        record.id,
                        number,
                        at,
                        min(at + _STREAM_CHUNK, high),
                    )
                    served.add(source, len(chunk))
                    yield chunk
        finally:
            served.finish()

    async def _upstream_allows(self, url: str, headers: dict[str, str]) -> bool:
        """Whether the upstream serves this blob to these credentials: one HEAD,
        remembered for ``_ACCEPTED_FOR`` seconds."""
        credentials = hashlib.sha256(headers.get("authorization", "").encode())
        key = (url, credentials.hexdigest())
        now = time.monotonic()
        if self._accepted.get(key, 0.0) > now:
            return True
        try:
            answer = await self.http.head(url, headers=headers)
        except httpx.HTTPError:
            return False  # the pass-through says what went wrong
        if answer.status_code >= 400:
            return False
        if len(self._accepted) > _ACCEPTED_MAX:
            self._accepted = {k: t for k, t in self._accepted.items() if t > now}
        self._accepted[key] = now + _ACCEPTED_FOR
        return True

    def _remember_realm(self, challenge: str) -> None:
        match = _REALM.search(challenge)
        if match is None:
            return
        realm = urlsplit(match[1])
        # Registry API paths stay the registry's, whatever a challenge says.
        usable = realm.scheme in ("http", "https") and realm.netloc and realm.path
        if usable and not realm.path.startswith("/v2/"):
            self._realms[realm.path] = f"{realm.scheme}://{realm.netloc}"

    # Tunnels

    async def _connect(self, authority: str) -> Response:
        """``CONNECT host:port``: a byte tunnel to a served registry, not looked
        into (so HTTPS stays between the client and the registry)."""
        host, _, port_text = authority.rpartition(":")
        if not host or not port_text.isdigit():
            raise BadProxyRequest(400, f"CONNECT needs host:port, not {authority!r}")
        port = int(port_text)
        if not self._serves(host, port):
            raise BadProxyRequest(
                403,
                f"{authority} is not a registry this mirror serves; add it with "
                "--registry (or allow any with --allow-any-registry)",
            )
        try:
            with anyio.fail_after(_CONNECT_TIMEOUT):
                upstream = await anyio.connect_tcp(host.strip("[]"), port)
        except (OSError, TimeoutError) as exc:
            return text(502, f"cannot reach {authority}: {exc}")
        return Response(200, tunnel=functools.partial(_pipe_both, upstream))

    def _serves(self, host: str, port: int) -> bool:
        if self.config.allow_any_registry:
            return True
        for registry in self.registries:
            parts = urlsplit(registry)
            default = 443 if parts.scheme == "https" else 80
            if (parts.hostname, parts.port or default) == (host.strip("[]"), port):
                return True
        return False

    # Everything else, as it is

    async def _pass_through(self, request: Request, upstream: str) -> Response:
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name not in _HOP_BY_HOP and name not in (REGISTRY_HEADER, USE_P2P_HEADER)
        ]
        target = upstream + _without_namespace(request)
        outgoing = self.http.build_request(
            request.method, target, headers=headers, content=request.body
        )
        try:
            answer = await self.http.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            return text(502, f"upstream {upstream} did not answer: {exc!r}")
        self.daemon.metrics.proxy_requests.labels("upstream").inc()
        if answer.status_code == 401:
            self._remember_realm(answer.headers.get("www-authenticate", ""))
        passed = tuple(
            (name, value)
            for name, value in answer.headers.items()
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-type"
        )
        length = answer.headers.get("content-length")
        return Response(
            answer.status_code,
            _relay(answer, self.daemon.metrics),
            answer.headers.get("content-type", "application/octet-stream"),
            passed,
            int(length) if length and length.isdigit() else None,
            # Also when the body is never sent (a HEAD): the upstream connection
            # goes back to the pool.
            closed=answer.aclose,
        )


async def _pipe_both(
    upstream: anyio.abc.ByteStream, client: anyio.abc.ByteStream, leftover: bytes
) -> None:
    """Copy bytes both ways until either side closes."""
    async with upstream, anyio.create_task_group() as group:

        async def pipe(
            source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream
        ) -> None:
            try:
                async for chunk in source:
                    await sink.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            group.cancel_scope.cancel()

        if leftover:
            await upstream.send(leftover)
        group.start_soon(pipe, client, upstream)
        group.start_soon(pipe, upstream, client)


def _spans(record: Task, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The pieces holding bytes ``start``..``end`` of the task, each with the span
    of it that falls in the range (``low``..``high``, exclusive, within the piece)."""
    length = record.piece_length
    for number in pieces_covering(record.content_length, length, start, end):
        offset = number * length
        low = max(start, offset) - offset
        yield number, low, min(end + 1, offset + length) - offset


def _read(store: PieceStore, task_id: str, number: int, low: int, high: int) -> bytes:
    """Bytes ``low``..``high`` (exclusive) of a stored piece."""
    with store.read_piece(task_id, number) as view:
        return bytes(_stored_span(view, task_id, number, low, high))


def _send_stored(
    store: PieceStore,
    record: Task,
    start: int,
    end: int,
    served: _Served,
    send: SendChunk,
) -> None:
    """Send bytes ``start``..``end`` of a stored task from the store's map, each
    piece while its read transaction holds it (from a worker thread)."""
    try:
        for number, low, high in _spans(record, start, end):
            with store.read_piece(record.id, number) as view:
                chunk = _stored_span(view, record.id, number, low, high)
                send(chunk)
                served.add("local", len(chunk))
    finally:
        served.finish()


def _stored_span(
    view: memoryview | None, task_id: str, number: int, low: int, high: int
) -> memoryview:
    """Bytes ``low``..``high`` of a piece as the store gave it (None: not held)."""
    if view is None or len(view) < high:
        raise StoreError(f"piece {number} of {task_id} left the store")
    return view[low:high]


async def _relay(
    answer: httpx.Response, metrics: DaemonMetrics
) -> AsyncIterator[bytes]:
    async for chunk in answer.aiter_raw():
        metrics.served("upstream", len(chunk))
        yield chunk


def _ending_span(response: Response, span: trace.Span) -> Response:
    """``response``, ending ``span`` once the answer is over (sent, failed, or a
    HEAD's, whose body is never sent)."""
    closed = response.closed

    async def close() -> None:
        try:
            if closed is not None:
                await closed()
        finally:
            span.end()

    return attrs.evolve(response, closed=close)


class _Served:
    """One blob answer: its bytes by source, counted as they go out and logged
    once the answer is over (possibly from the worker thread that sent it)."""

    def __init__(
        self, daemon: Daemon, task_id: str, peer_id: str, status: int, length: int
    ) -> None:
        self.daemon = daemon
        self.task_id = task_id
        self.peer_id = peer_id
        self.status = status
        self.length = length
        self.bytes = dict.fromkeys(SOURCES, 0)
        self.started = time.monotonic()

    def add(self, source: str, count: int) -> None:
        self.bytes[source] += count
        self.daemon.metrics.served(source, count)

    def finish(self) -> None:
        sent = sum(self.bytes.values())
        logger.info(
            "served blob %s task_id=%s peer_id=%s host_id=%s status=%d bytes=%d/%d "
            "bytes_local=%d bytes_peer=%d bytes_seed=%d bytes_origin=%d "
            "duration=%.3fs",
            "completely" if sent == self.length else "partly (cut off)",
            self.task_id,
            self.peer_id,
            self.daemon.host.id,
            self.status,
            sent,
            self.length,
            self.bytes["local"],
            self.bytes["peer"],
            self.bytes["seed"],
            self.bytes["origin"],
            time.monotonic() - self.started,
        )


async def _first_piece(
    swarm: SwarmDownload, record: Task, wanted: tuple[int, int] | None
) -> None:
    """Wait for the first piece of the answer, if it has any bytes."""
    start = 0 if wanted is None else wanted[0]
    if start < record.content_length:
        await swarm.wait_for_piece(start // record.piece_length)


def _priority(header: str | None) -> Priority:
    if header is None:
        return Priority.DEFAULT
    try:
        return Priority(int(header))
    except ValueError:
        raise BadProxyRequest(
            400,
            f"X-Dragonfly-Priority: {header[:40]!r} is not a priority; send 0 to 6 "
            "(1: no P2P, 2: peers only, 3: fetch from the origin without a seed)",
        ) from None


def _parse_range(header: str | None) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (start, end); None for none, or for a form this
    mirror answers with the whole blob (multiple ranges, as RFC 9110 allows)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise BadProxyRequest(416, f"Range {header!r} is not bytes=START-END")
    first, last = match.groups()
    if not first:
        raise BadProxyRequest(416, "suffix ranges (bytes=-N) are not served")
    start = int(first)
    end = int(last) if last else 2**63 - 1
    if end < start:
        raise BadProxyRequest(416, f"Range {header!r} ends before it starts")
    return start, end


def _from_absolute_target(request: Request) -> str:
    """As an HTTP forward proxy, the request names its server in its target
    (``GET http://registry.local/v2/...``)."""
    if not request.target.startswith("http://"):
        return ""
    parts = urlsplit(request.target)
    return f"{parts.scheme}://{parts.netloc}"


def _from_namespace(request: Request) -> str:
    """containerd's ``?ns=docker.io``: the registry the image reference named."""
    namespace = request.query.get("ns", "")
    if namespace == "docker.io":
        return "https://registry-1.docker.io"
    return namespace


def registry_base(url: str) -> str:
    """``scheme://host[:port]`` of a registry named by URL or by bare host (plain
    HTTP for loopback hosts, as Docker does)."""
    if "://" not in url:
        host = url.split("/")[0]
        scheme = (
            "http" if is_loopback(urlsplit(f"//{host}").hostname or "") else "https"
        )
        url = f"{scheme}://{host}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not a registry URL like https://host[:port]")
    return f"{parts.scheme}://{parts.netloc}"


def _without_namespace(request: Request) -> str:
    query = {name: value for name, value in request.query.items() if name != "ns"}
    return request.path + (f"?{urlencode(query)}" if query else "")
