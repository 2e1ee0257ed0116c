"""Registry authentication for every request of the HTTP backend.

Container registries answer anonymous requests with ``401`` and a challenge
(OCI distribution spec, "Authentication"; RFC 7235 §4.1). A ``Bearer`` challenge
names a token endpoint (the Docker token protocol, RFC 6750 §3); a ``Basic``
challenge wants the credentials directly. ``RegistryAuth`` answers either once per
request and remembers what worked, so later requests to the same repository carry
the right ``Authorization`` header up front and skip the ``401`` round trip.

Plain HTTP servers never send such a challenge, so for them the flow is a single
pass-through request.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable

import attrs
import httpx

from ._base import Credentials

__all__ = ["RegistryAuth"]

logger = logging.getLogger("dragonpy.backends")

#: Lifetime assumed when the token response names none (Docker token spec).
_DEFAULT_EXPIRES_IN = 60.0
#: A token is refreshed this long before it expires, so it cannot lapse in flight.
_SAFETY_MARGIN = 10.0

_TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN_CHARS})")
_PARAM_RE = re.compile(
    rf'[\s,]*({_TOKEN_CHARS})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN_CHARS}))'
)
_TOKEN68_RE = re.compile(r"[ \t]+[A-Za-z0-9._~+/-]+=*(?=[ \t]*(?:,|$))")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_REPOSITORY_RE = re.compile(r"/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)")
# Header values must not smuggle CR/LF or spaces; RFC 6750 §2.1 b64token is
# narrower, but real registries hand out opaque tokens, so accept visible ASCII.
_TOKEN_VALUE_RE = re.compile(r"[\x21-\x7e]+")

_Step = tuple[httpx.Request, bool]
_Flow = Generator[_Step, httpx.Response, None]


@attrs.frozen
class _Challenge:
    """A Bearer challenge: where to get a token and what it must grant."""

    realm: str
    service: str | None
    scopes: tuple[str, ...]


@attrs.frozen
class _Token:
    header: str = attrs.field(repr=False)
    expires_at: float


@attrs.frozen
class _Target:
    """Where a request goes: its origin and, for registry API paths, the repo."""

    origin: str
    repository: str

    @classmethod
    def of(cls, url: httpx.URL) -> _Target:
        port = url.port or (443 if url.scheme == "https" else 80)
        match = _REPOSITORY_RE.match(url.path)
        repository = match.group(1) if match else ""
        return cls(f"{url.scheme}://{url.host}:{port}", repository)


def parse_challenges(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Split ``WWW-Authenticate`` values into ``(scheme, params)`` (RFC 7235 §4.1).

    A naive split on commas breaks on quoted values such as
    ``scope="repository:a:pull,push"``, hence the small scanner. Schemes come back
    lower-cased, parameter names too; token68 credentials are skipped.
    """
    challenges: list[tuple[str, list[tuple[str, str]]]] = []
    for value in values:
        position = 0
        while scheme := _SCHEME_RE.match(value, position):
            position = scheme.end()
            params: list[tuple[str, str]] = []
            if token68 := _TOKEN68_RE.match(value, position):
                position = token68.end()
            while param := _PARAM_RE.match(value, position):
                position = param.end()
                quoted, bare = param.group(2), param.group(3)
                text = _QUOTED_PAIR_RE.sub(r"\1", quoted) if bare is None else bare
                params.append((param.group(1).lower(), text))
            challenges.append((scheme.group(1).lower(), params))
    return challenges


def _bearer_challenge(
    challenges: list[tuple[str, list[tuple[str, str]]]],
) -> _Challenge | None:
    """The first usable Bearer challenge, or None.

    ``scope`` is a space-delimited list (RFC 6750 §3) and may also be repeated;
    each scope becomes its own ``scope`` query parameter of the token request.
    """
    for scheme, params in challenges:
        if scheme != "bearer":
            continue
        realm = next((v for k, v in params if k == "realm"), "")
        if not _is_http_url(realm):
            continue
        service = next((v for k, v in params if k == "service"), None)
        scopes = tuple(s for k, v in params if k == "scope" for s in v.split())
        return _Challenge(realm, service, scopes)
    return None


def _is_http_url(text: str) -> bool:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _basic_header(credentials: Credentials) -> str:
    userpass = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(userpass).decode("ascii")


def _parse_token(response: httpx.Response, now: float) -> _Token | None:
    """Read a token endpoint answer; None when it is not a usable grant."""
    if not response.is_success:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("token") or body.get("access_token")
    if not isinstance(value, str) or not _TOKEN_VALUE_RE.fullmatch(value):
        return None
    lifetime = _lifetime(body.get("expires_in"))
    margin = min(_SAFETY_MARGIN, lifetime / 2)
    return _Token(f"Bearer {value}", now + lifetime - margin)


def _lifetime(expires_in: object) -> float:
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return _DEFAULT_EXPIRES_IN
    if not math.isfinite(expires_in) or expires_in <= 0:
        return _DEFAULT_EXPIRES_IN
    return float(expires_in)


class RegistryAuth(httpx.Auth):
    """Answers registry ``401`` challenges and reuses what it learned.

    One instance is meant to live as long as the client that uses it: the token
    cache and the per-repository memory of challenges are what save the extra
    round trips. ``clock`` is injectable so tests can expire tokens without waiting.
    """

    requires_request_body = True
    requires_response_body = False

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._basic = _basic_header(credentials) if credentials else None
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[_Challenge, _Token] = {}
        self._challenge_for: dict[_Target, _Challenge] = {}
        self._basic_origins: set[str] = set()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive the shared flow, reading token responses synchronously."""
        request.read()
        flow = self._flow(request)
        try:
            outgoing, wants_body = next(flow)
            while True:
                response = yield outgoing
                if wants_body:
                    response.read()
                outgoing, wants_body = flow.send(response)
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive the shared flow, reading token responses asynchronously."""
        await request.aread()
        flow = self._flow(request)
        try:
            outgoing, wants_body = next(flow)
            while True:
                response = yield outgoing
                if wants_body:
                    await response.aread()
                outgoing, wants_body = flow.send(response)
        except StopIteration:
            return
        finally:
            flow.close()

    def cached_authorization(self, url: str) -> str | None:
        """The ``Authorization`` value a request to ``url`` would carry up front.

        For readers that bypass httpx; None when nothing valid is cached (an
        expired token counts as nothing: the caller should go through httpx).
        """
        try:
            target = _Target.of(httpx.URL(url))
        except httpx.InvalidURL:
            return None
        with self._lock:
            challenge = self._challenge_for.get(target)
            if challenge is not None:
                token = self._tokens.get(challenge)
                if token is not None and token.expires_at > self._clock():
                    return token.header
                return None
            if target.origin in self._basic_origins:
                return self._basic
        return None

    def _flow(self, request: httpx.Request) -> _Flow:
        """Yield ``(request, read_body)`` steps; the drivers do the I/O.

        Sync and async flows differ only in how a token response body is read, so
        the logic lives here once and flags the steps whose body it needs.
        """
        sent = request.headers.get("Authorization")
        if sent is not None and not self._issued(sent):
            # The caller chose its own credentials; answering challenges on top
            # would override them.
            yield request, False
            return
        target = _Target.of(request.url)
        failed: set[_Challenge] = set()
        if sent is None:
            sent = yield from self._authorize_up_front(request, target, failed)
        response = yield request, False
        if response.status_code != 401:
            return
        challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
        bearer = _bearer_challenge(challenges)
        if bearer is not None:
            yield from self._answer_bearer(request, target, bearer, sent, failed)
        elif self._may_answer_basic(challenges, sent):
            yield from self._answer_basic(request, target)

    def _authorize_up_front(
        self, request: httpx.Request, target: _Target, failed: set[_Challenge]
    ) -> Generator[_Step, httpx.Response, str | None]:
        """Set what worked last time for this repository; return the header sent."""
        with self._lock:
            challenge = self._challenge_for.get(target)
            basic = target.origin in self._basic_origins
        header: str | None = None
        if challenge is not None:
            token = self._valid_token(challenge)
            if token is None:
                token = yield from self._fetch_token(challenge, request)
            if token is None:
                failed.add(challenge)
            else:
                header = token.header
        elif basic:
            header = self._basic
        if header is not None:
            request.headers["Authorization"] = header
        return header

    def _answer_bearer(
        self,
        request: httpx.Request,
        target: _Target,
        challenge: _Challenge,
        sent: str | None,
        failed: set[_Challenge],
    ) -> _Flow:
        """Retry once with a token for ``challenge`` (RFC 6750 §3).

        A token that was just refused is not reused. When no token can be had, the
        origin request is sent once more without one so that the final response is
        the origin's own ``401`` rather than the token endpoint's answer.
        """
        if challenge in failed:
            return
        token = self._valid_token(challenge)
        if token is None or token.header == sent:
            token = yield from self._fetch_token(challenge, request)
        if token is None:
            request.headers.pop("Authorization", None)
            yield request, False
            return
        request.headers["Authorization"] = token.header
        response = yield request, False
        if response.status_code != 401:
            with self._lock:
                self._challenge_for[target] = challenge

    def _may_answer_basic(
        self, challenges: list[tuple[str, list[tuple[str, str]]]], sent: str | None
    ) -> bool:
        """Basic is answered only with credentials not already refused."""
        offered = any(scheme == "basic" for scheme, _ in challenges)
        return offered and self._basic is not None and sent != self._basic

    def _answer_basic(self, request: httpx.Request, target: _Target) -> _Flow:
        assert self._basic is not None
        request.headers["Authorization"] = self._basic
        response = yield request, False
        if response.status_code != 401:
            with self._lock:
                self._basic_origins.add(target.origin)

    def _valid_token(self, challenge: _Challenge) -> _Token | None:
        with self._lock:
            token = self._tokens.get(challenge)
        if token is None or token.expires_at <= self._clock():
            return None
        return token

    def _fetch_token(
        self, challenge: _Challenge, origin_request: httpx.Request
    ) -> Generator[_Step, httpx.Response, _Token | None]:
        """Ask the realm for a token; None when it refuses or answers garbage."""
        logger.debug(
            "fetching registry token from %s for %s", challenge.realm, challenge.scopes
        )
        response = yield self._token_request(challenge, origin_request), True
        token = _parse_token(response, self._clock())
        if token is None:
            logger.debug("token endpoint %s gave no token", challenge.realm)
            return None
        with self._lock:
            self._tokens[challenge] = token
        return token

    def _issued(self, header: str) -> bool:
        """Whether ``header`` came from this instance (then a 401 may renew it).

        Callers may copy a header from :meth:`cached_authorization` into later
        requests; those must still be refreshed when the token lapses. One token is
        kept per challenge, so this set stays as small as the set of repositories.
        """
        with self._lock:
            tokens = {token.header for token in self._tokens.values()}
        return header == self._basic or header in tokens

    def _token_request(
        self, challenge: _Challenge, origin_request: httpx.Request
    ) -> httpx.Request:
        """Build the token GET (Docker token spec: ``service`` and ``scope``).

        The origin request's timeout is carried over: a request built here gets no
        client defaults. Credentials never travel in clear text to the realm when
        the registry itself was reached over TLS.
        """
        service = (("service", challenge.service),) if challenge.service else ()
        scopes = tuple(("scope", scope) for scope in challenge.scopes)
        url = httpx.URL(challenge.realm).copy_merge_params(service + scopes)
        headers = {"Accept": "application/json"}
        downgrade = url.scheme == "http" and origin_request.url.scheme == "https"
        if self._basic is not None and not downgrade:
            headers["Authorization"] = self._basic
        extensions: dict[str, object] = {}
        if "timeout" in origin_request.extensions:
            extensions["timeout"] = origin_request.extensions["timeout"]
        return httpx.Request("GET", url, headers=headers, extensions=extensions)
