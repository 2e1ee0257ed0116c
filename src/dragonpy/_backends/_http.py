"""HTTP(S) origins and OCI registries, on httpx.

One pooled ``httpx.AsyncClient`` per backend does the talking: redirects are followed
(the task ID is taken from the URL the user gave, so signed redirect targets never
enter it), registry token challenges are answered by ``RegistryAuth``, transient
failures are retried with exponential backoff. Piece bodies take the fast path in
``_range_reader`` and fall back to httpx whenever the response is anything unusual.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import anyio
import anyio.to_thread
import httpx

from .._errors import (
    OriginAuthError,
    OriginError,
    OriginProtocolError,
    OriginStatusError,
    OriginTimeout,
    OriginUnreachable,
    RangeNotSupported,
)
from .._tls import client_context
from .._version import __version__
from ._base import Backend, BackendOptions, OriginStat
from ._oci import resolve_oci_url
from ._range_reader import NeedsFullClient, RangeReader
from ._registry_auth import RegistryAuth

logger = logging.getLogger("dragonpy.backends")

USER_AGENT: Final = f"dragonpy/{__version__}"
_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_FIRST_BACKOFF: Final = 0.2

T = TypeVar("T")


class HttpBackend(Backend):
    """``http://``, ``https://`` and ``oci://`` origins."""

    schemes = ("http", "https", "oci")

    def __init__(self, options: BackendOptions, *, concurrency: int = 16) -> None:
        self._options = options
        self._auth = RegistryAuth(options.credentials)
        # Shared by httpx and the range reader: verification on by default.
        context = client_context(options.verify_tls, options.ca_file)
        self._client = httpx.AsyncClient(
            auth=self._auth,
            verify=context,
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(
                options.read_timeout, connect=options.connect_timeout, pool=None
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._reader = RangeReader(
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            ssl_context=context,
            user_agent=USER_AGENT,
        )
        self._threads = anyio.CapacityLimiter(concurrency)

    async def stat(self, url: str) -> OriginStat:
        return await self._retrying(lambda: self._stat_once(url), url)

    @asynccontextmanager
    async def open_range(
        self, stat: OriginStat, offset: int, length: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        last = offset + length - 1
        headers = {**stat.request_headers, "Range": f"bytes={offset}-{last}"}
        async with self._stream(stat.location, headers) as response:
            _check_range_response(response, stat, offset, length)
            yield response.aiter_raw()

    async def read_into(
        self, stat: OriginStat, offset: int, buffer: memoryview
    ) -> None:
        await self._retrying(lambda: self._read_once(stat, offset, buffer), stat.url)

    async def aclose(self) -> None:
        self._reader.close()
        await self._client.aclose()

    async def _read_once(
        self, stat: OriginStat, offset: int, buffer: memoryview
    ) -> None:
        headers = dict(stat.request_headers)
        authorization = self._auth.cached_authorization(stat.location)
        if authorization is not None:
            headers["Authorization"] = authorization

        try:
            await anyio.to_thread.run_sync(
                self._reader.read_into,
                stat.location,
                offset,
                buffer,
                headers,
                limiter=self._threads,
            )
        except (NeedsFullClient, OriginAuthError):
            # Unusual responses, and expired tokens, take the full client's path.
            await super().read_into(stat, offset, buffer)

    async def _stat_once(self, url: str) -> OriginStat:
        http_url, headers, digest = self._resolve(url)
        # A one-byte range tells the length (from Content-Range) and whether ranges
        # work, in one round trip, as HEAD does not always do (RFC 9110 §14.2).
        async with self._stream(
            http_url, {**headers, "Range": "bytes=0-0"}
        ) as response:
            length: int | None
            if response.status_code == 416:
                length, ranges = _empty_length(response), True
            else:
                _raise_for_status(response)
                length, ranges = _stat_length(response)

        if length is None:
            raise OriginProtocolError(
                "origin did not say how long the content is (no Content-Length)",
                url=url,
            )
        return OriginStat(
            url=url,
            content_length=length,
            accepts_ranges=ranges,
            location=str(response.url),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            digest=digest or response.headers.get("docker-content-digest"),
            request_headers=headers,
        )

    def _resolve(self, url: str) -> tuple[str, dict[str, str], str | None]:
        headers = dict(self._options.headers)
        if not url.startswith("oci://"):
            return url, headers, None

        plain_http = self._options.extensions.get("plain_http_registries", ())
        assert isinstance(plain_http, tuple | list | frozenset | set)
        reference = resolve_oci_url(url, plain_http_hosts=tuple(map(str, plain_http)))
        if reference.accept is not None:
            headers.setdefault("Accept", reference.accept)
        return reference.http_url, headers, reference.digest

    @asynccontextmanager
    async def _stream(
        self, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[httpx.Response]:
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                yield response
        except httpx.TimeoutException as exc:
            raise OriginTimeout(f"origin timed out: {exc}", url=url) from exc
        except httpx.RemoteProtocolError as exc:
            raise OriginProtocolError(f"origin broke HTTP: {exc}", url=url) from exc
        except httpx.UnsupportedProtocol as exc:
            raise OriginUnreachable(str(exc), url=url) from exc
        except httpx.TransportError as exc:
            raise OriginUnreachable(_describe_transport_error(exc), url=url) from exc

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], url: str) -> T:
        delay = _FIRST_BACKOFF
        for remaining in range(self._options.retries, -1, -1):
            try:
                return await attempt()
            except OriginError as exc:
                if remaining == 0 or not _is_transient(exc):
                    raise
                logger.debug("retrying %s in %.1fs after: %s", url, delay, exc)

            await anyio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


def _is_transient(exc: OriginError) -> bool:
    if isinstance(exc, OriginStatusError):
        return exc.status in _RETRY_STATUSES
    return isinstance(exc, OriginUnreachable | OriginTimeout | OriginProtocolError)


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return

    url = str(response.url)
    if status in (401, 403):
        raise OriginAuthError(
            f"origin refused access ({status} {response.reason_phrase}); "
            "pass credentials (--user or an Authorization header) or check them",
            url=url,
            status=status,
        )
    raise OriginStatusError(
        f"origin answered {status} {response.reason_phrase}", url=url, status=status
    )


def _stat_length(response: httpx.Response) -> tuple[int | None, bool]:
    """The full length and range support from the answer to ``Range: bytes=0-0``."""
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total), True
        raise OriginProtocolError(
            f"origin sent a 206 with Content-Range "
            f"{response.headers.get('content-range')!r}",
            url=str(response.url),
        )

    # A 200 means the origin ignored our Range, whatever Accept-Ranges says.
    length = response.headers.get("content-length")
    return (int(length) if length and length.isdigit() else None), False


def _empty_length(response: httpx.Response) -> int:
    """A 416 to ``bytes=0-0`` means the content is empty (``Content-Range: */0``)."""
    if response.headers.get("content-range", "").strip() == "bytes */0":
        return 0
    raise OriginProtocolError(
        "origin refused a range starting at byte 0 "
        f"(Content-Range {response.headers.get('content-range')!r})",
        url=str(response.url),
    )


def _check_range_response(
    response: httpx.Response, stat: OriginStat, offset: int, length: int
) -> None:
    _raise_for_status(response)
    if response.status_code == 206:
        expected = f"bytes {offset}-{offset + length - 1}/"
        if not response.headers.get("content-range", "").startswith(expected):
            raise OriginProtocolError(
                f"origin sent Content-Range {response.headers.get('content-range')!r}, "
                f"expected {expected}*",
                url=stat.url,
            )
        return

    # A whole-content answer is fine only when the whole content is what we asked for.
    if offset == 0 and length == stat.content_length:
        return
    raise RangeNotSupported(
        "origin ignored the Range header and sent the whole content", url=stat.url
    )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is in the chain of causes of ``exc``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe_transport_error(exc: httpx.TransportError) -> str:
    cause = exc.__cause__ or exc.__context__
    detail = str(cause or exc) or type(exc).__name__
    if _caused_by(exc, ssl.SSLCertVerificationError):
        detail += (
            "; trust the origin's CA (--cacert, BackendOptions.ca_file) or turn "
            "verification off (--insecure)"
        )
    return f"cannot reach origin: {detail}"
