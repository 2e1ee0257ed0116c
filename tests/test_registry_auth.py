"""RegistryAuth against a real docker-registry, and its edge cases on mock servers.

The registry tests count every request with httpx event hooks: the point of the
token cache is the round trips it saves, so the request log is the assertion.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from dragonpy._backends._base import Credentials
from dragonpy._backends._registry_auth import RegistryAuth, parse_challenges

from .registry import PASSWORD, USERNAME, Registry, TokenServer, run_registry

ALICE = Credentials(USERNAME, PASSWORD)
MALLORY = Credentials(USERNAME, "wrong-pw")

Seen = list[tuple[str, int]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _async_client(auth: RegistryAuth) -> tuple[httpx.AsyncClient, Seen]:
    """A client that logs ``(path, status)`` of every response, auth ones too."""
    seen: Seen = []

    async def record(response: httpx.Response) -> None:
        seen.append((response.request.url.path, response.status_code))

    client = httpx.AsyncClient(
        auth=auth, event_hooks={"response": [record]}, timeout=10.0
    )
    return client, seen


def _sync_client(auth: RegistryAuth) -> tuple[httpx.Client, Seen]:
    seen: Seen = []

    def record(response: httpx.Response) -> None:
        seen.append((response.request.url.path, response.status_code))

    client = httpx.Client(auth=auth, event_hooks={"response": [record]}, timeout=10.0)
    return client, seen


def _blob(registry: Registry, repo: str, data: bytes) -> tuple[str, str]:
    """Push ``data``; return its blob URL and API path."""
    digest = registry.push_blob(repo, data)
    path = f"/v2/{repo}/blobs/{digest}"
    return registry.url + path, path


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("open"), auth="none") as registry:
        yield registry


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("basic"), auth="htpasswd") as registry:
        yield registry


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("token"), auth="token") as registry:
        yield registry


@pytest.fixture
def tokens(token_registry: Registry) -> Iterator[TokenServer]:
    """The token server, with its knobs put back after the test."""
    assert token_registry.tokens is not None
    server = token_registry.tokens
    yield server
    server.expires_in = 300
    server.broken = False


# --- no auth ---------------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.anyio
async def test_open_registry_is_one_request(open_registry: Registry) -> None:
    url, path = _blob(open_registry, "library/open", b"open data")
    client, seen = _async_client(RegistryAuth())
    async with client:
        response = await client.get(url)
    assert response.content == b"open data"
    assert seen == [(path, 200)]


@pytest.mark.anyio
async def test_plain_server_sees_one_request_without_authorization() -> None:
    requests: list[httpx.Request] = []

    def plain(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        status = {"/ok": 200, "/missing": 404, "/forbidden": 403}[request.url.path]
        return httpx.Response(status, content=b"body")

    auth = RegistryAuth(ALICE)
    transport = httpx.MockTransport(plain)
    async with httpx.AsyncClient(auth=auth, transport=transport) as client:
        statuses = [
            (await client.get(f"http://web{p}")).status_code
            for p in ("/ok", "/missing", "/forbidden")
        ]
    assert statuses == [200, 404, 403]
    assert [r.url.path for r in requests] == ["/ok", "/missing", "/forbidden"]
    assert all("Authorization" not in r.headers for r in requests)
    assert auth.cached_authorization("http://web/ok") is None


# --- htpasswd (Basic) ------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.anyio
async def test_basic_answers_challenge_then_sends_up_front(
    basic_registry: Registry,
) -> None:
    url, path = _blob(basic_registry, "team/basic", b"basic data")
    auth = RegistryAuth(ALICE)
    client, seen = _async_client(auth)
    async with client:
        first = await client.get(url)
        second = await client.get(url)
    assert first.content == second.content == b"basic data"
    assert seen == [(path, 401), (path, 200), (path, 200)]
    expected = "Basic " + base64.b64encode(b"alice:secret-pw").decode()
    assert auth.cached_authorization(url) == expected


@pytest.mark.registry
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("credentials", "attempts"), [(MALLORY, 2), (None, 1)], ids=["wrong", "missing"]
)
async def test_basic_refused_ends_in_401(
    basic_registry: Registry, credentials: Credentials | None, attempts: int
) -> None:
    url, path = _blob(basic_registry, "team/refused", b"secret data")
    auth = RegistryAuth(credentials)
    client, seen = _async_client(auth)
    async with client:
        response = await client.get(url)
    assert response.status_code == 401
    assert seen == [(path, 401)] * attempts
    assert auth.cached_authorization(url) is None


@pytest.mark.registry
def test_sync_flow_basic(basic_registry: Registry) -> None:
    url, path = _blob(basic_registry, "team/sync", b"sync basic")
    client, seen = _sync_client(RegistryAuth(ALICE))
    with client:
        assert client.get(url).content == b"sync basic"
    assert seen == [(path, 401), (path, 200)]


# --- token (Bearer) --------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.anyio
async def test_token_is_fetched_once_and_sent_up_front(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url_a, path_a = _blob(token_registry, "team/app", b"layer a")
    url_b, path_b = _blob(token_registry, "team/app", b"layer b")
    auth = RegistryAuth(ALICE)
    client, seen = _async_client(auth)
    before = tokens.token_requests
    async with client:
        assert (await client.get(url_a)).content == b"layer a"
        assert (await client.get(url_b)).content == b"layer b"
    assert seen == [(path_a, 401), ("/token", 200), (path_a, 200), (path_b, 200)]
    assert tokens.token_requests == before + 1
    assert tokens.scopes_seen[-1] == ["repository:team/app:pull"]
    header = auth.cached_authorization(url_a)
    assert header is not None
    assert header.startswith("Bearer ey")


@pytest.mark.registry
@pytest.mark.anyio
async def test_token_is_not_sent_to_other_repositories(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url_a, _ = _blob(token_registry, "team/one", b"one")
    url_b, path_b = _blob(token_registry, "team/two", b"two")
    auth = RegistryAuth(ALICE)
    client, seen = _async_client(auth)
    async with client:
        await client.get(url_a)
        assert auth.cached_authorization(url_b) is None
        seen.clear()
        assert (await client.get(url_b)).content == b"two"
    assert seen == [(path_b, 401), ("/token", 200), (path_b, 200)]
    assert auth.cached_authorization(url_a) != auth.cached_authorization(url_b)


@pytest.mark.registry
@pytest.mark.anyio
async def test_expired_token_is_refreshed_without_401(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "team/refresh", b"refresh")
    clock = FakeClock()
    auth = RegistryAuth(ALICE, clock=clock)
    client, seen = _async_client(auth)
    async with client:
        await client.get(url)
        first = auth.cached_authorization(url)
        clock.now += tokens.expires_in - 5
        assert auth.cached_authorization(url) is None
        seen.clear()
        assert (await client.get(url)).content == b"refresh"
    assert seen == [("/token", 200), (path, 200)]
    assert auth.cached_authorization(url) not in (None, first)


@pytest.mark.registry
@pytest.mark.anyio
async def test_short_lived_token_defaults_and_margin(
    token_registry: Registry, tokens: TokenServer
) -> None:
    tokens.expires_in = 4
    url, _ = _blob(token_registry, "team/short", b"short")
    clock = FakeClock()
    auth = RegistryAuth(ALICE, clock=clock)
    client, _ = _async_client(auth)
    async with client:
        await client.get(url)
    clock.now += 1.9
    assert auth.cached_authorization(url) is not None
    clock.now += 0.2
    assert auth.cached_authorization(url) is None


@pytest.mark.registry
@pytest.mark.anyio
async def test_token_wrong_credentials_end_in_registry_401(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "team/locked", b"locked")
    auth = RegistryAuth(MALLORY)
    client, seen = _async_client(auth)
    async with client:
        response = await client.get(url)
    assert response.status_code == 401
    assert response.url == httpx.URL(url)
    assert seen == [(path, 401), ("/token", 401), (path, 401)]
    assert auth.cached_authorization(url) is None


@pytest.mark.registry
@pytest.mark.anyio
async def test_token_endpoint_garbage_ends_in_registry_401(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "team/garbage", b"garbage")
    tokens.broken = True
    client, seen = _async_client(RegistryAuth(ALICE))
    async with client:
        response = await client.get(url)
    assert response.status_code == 401
    assert seen == [(path, 401), ("/token", 200), (path, 401)]


@pytest.mark.registry
@pytest.mark.anyio
async def test_anonymous_token_for_public_repository(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "public/base", b"public")
    client, seen = _async_client(RegistryAuth())
    async with client:
        assert (await client.get(url)).content == b"public"
        assert (await client.get(url)).content == b"public"
    assert seen == [(path, 401), ("/token", 200), (path, 200), (path, 200)]


@pytest.mark.registry
@pytest.mark.anyio
async def test_anonymous_token_without_access_ends_in_401(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "team/private", b"private")
    client, seen = _async_client(RegistryAuth())
    async with client:
        response = await client.get(url)
    assert response.status_code == 401
    assert seen == [(path, 401), ("/token", 200), (path, 401)]


@pytest.mark.registry
@pytest.mark.anyio
async def test_token_flow_for_head_and_range(
    token_registry: Registry, tokens: TokenServer
) -> None:
    url, path = _blob(token_registry, "team/ranges", b"0123456789")
    client, seen = _async_client(RegistryAuth(ALICE))
    async with client:
        head = await client.head(url)
        part = await client.get(url, headers={"Range": "bytes=2-4"})
    assert head.headers["Content-Length"] == "10"
    assert (part.status_code, part.content) == (206, b"234")
    assert seen == [(path, 401), ("/token", 200), (path, 200), (path, 206)]


@pytest.mark.registry
def test_sync_flow_token(token_registry: Registry, tokens: TokenServer) -> None:
    url, path = _blob(token_registry, "team/sync", b"sync token")
    auth = RegistryAuth(ALICE)
    client, seen = _sync_client(auth)
    with client:
        assert client.get(url).content == b"sync token"
        assert client.get(url).content == b"sync token"
    assert seen == [(path, 401), ("/token", 200), (path, 200), (path, 200)]
    assert auth.cached_authorization(url) is not None


# --- mock servers: protocol details ----------------------------------------------


def _challenging_server(
    challenge: str,
    token_reply: Callable[[httpx.Request], httpx.Response],
    log: list[httpx.Request],
) -> httpx.MockTransport:
    """An origin that wants ``Bearer good`` and a token endpoint at /token."""

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.url.path == "/token":
            return token_reply(request)
        if request.headers.get("Authorization") == "Bearer good":
            return httpx.Response(200, content=b"ok")
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return httpx.MockTransport(handle)


def _token_json(**body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, content=json.dumps(body).encode())


@pytest.mark.anyio
async def test_scopes_are_split_and_repeated() -> None:
    log: list[httpx.Request] = []
    challenge = (
        'Bearer realm="https://auth.example/token?client=x",service="reg",'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    transport = _challenging_server(challenge, _token_json(access_token="good"), log)
    async with httpx.AsyncClient(auth=RegistryAuth(), transport=transport) as client:
        response = await client.get("https://reg.example/v2/a/b/blobs/x")
    assert response.status_code == 200
    token_request = log[1]
    assert token_request.url.params.get_list("scope") == [
        "repository:a/b:pull,push",
        "repository:c:pull",
    ]
    assert token_request.url.params["service"] == "reg"
    assert token_request.url.params["client"] == "x"
    assert "Authorization" not in token_request.headers


@pytest.mark.anyio
async def test_no_credentials_in_clear_after_tls() -> None:
    """Basic credentials never go to a plain-HTTP realm from an HTTPS registry."""
    log: list[httpx.Request] = []
    transport = _challenging_server(
        'Bearer realm="http://auth.example/token"', _token_json(token="good"), log
    )
    async with httpx.AsyncClient(auth=RegistryAuth(ALICE), transport=transport) as c:
        await c.get("https://reg.example/v2/a/manifests/latest")
    assert log[1].url.host == "auth.example"
    assert "Authorization" not in log[1].headers


@pytest.mark.anyio
async def test_default_lifetime_is_sixty_seconds() -> None:
    log: list[httpx.Request] = []
    transport = _challenging_server(
        'Bearer realm="https://auth.example/token"', _token_json(token="good"), log
    )
    clock = FakeClock()
    auth = RegistryAuth(clock=clock)
    url = "https://reg.example/v2/a/manifests/latest"
    async with httpx.AsyncClient(auth=auth, transport=transport) as client:
        await client.get(url)
    clock.now += 49
    assert auth.cached_authorization(url) == "Bearer good"
    clock.now += 2
    assert auth.cached_authorization(url) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "reply",
    [
        lambda request: httpx.Response(403, content=b'{"token": "good"}'),
        _token_json(token="bad token\r\nX-Evil: 1"),
        _token_json(expires_in=30),
        _token_json(token=["good"]),
        lambda request: httpx.Response(200, content=b"[1, 2]"),
    ],
    ids=["403", "header-injection", "no-token", "token-not-string", "not-object"],
)
async def test_unusable_token_replies_end_in_origin_401(
    reply: Callable[[httpx.Request], httpx.Response],
) -> None:
    log: list[httpx.Request] = []
    transport = _challenging_server(
        'Bearer realm="https://auth.example/token"', reply, log
    )
    async with httpx.AsyncClient(auth=RegistryAuth(), transport=transport) as client:
        response = await client.get("https://reg.example/v2/a/blobs/x")
    assert (response.status_code, response.url.host) == (401, "reg.example")
    assert [r.url.path for r in log] == ["/v2/a/blobs/x", "/token", "/v2/a/blobs/x"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "challenge",
    ['Bearer realm="/relative"', "Bearer", 'Bearer service="x"', "", "Negotiate"],
)
async def test_unanswerable_challenges_pass_through(challenge: str) -> None:
    log: list[httpx.Request] = []
    transport = _challenging_server(challenge, _token_json(token="good"), log)
    async with httpx.AsyncClient(auth=RegistryAuth(ALICE), transport=transport) as c:
        response = await c.get("https://reg.example/v2/a/blobs/x")
    assert response.status_code == 401
    assert len(log) == 1


@pytest.mark.anyio
async def test_caller_authorization_is_left_alone() -> None:
    log: list[httpx.Request] = []
    transport = _challenging_server(
        'Bearer realm="https://auth.example/token"', _token_json(token="good"), log
    )
    async with httpx.AsyncClient(auth=RegistryAuth(ALICE), transport=transport) as c:
        response = await c.get(
            "https://reg.example/v2/a/blobs/x", headers={"Authorization": "Bearer own"}
        )
    assert response.status_code == 401
    assert [r.headers["Authorization"] for r in log] == ["Bearer own"]


@pytest.mark.anyio
async def test_bearer_preferred_over_basic() -> None:
    log: list[httpx.Request] = []
    transport = _challenging_server(
        'Basic realm="r", Bearer realm="https://auth.example/token"',
        _token_json(token="good"),
        log,
    )
    async with httpx.AsyncClient(auth=RegistryAuth(ALICE), transport=transport) as c:
        response = await c.get("https://reg.example/v2/a/blobs/x")
    assert response.status_code == 200
    assert log[1].url.path == "/token"


def test_parse_challenges_handles_quotes_commas_and_lists() -> None:
    header = (
        'Basic realm="a \\"quoted\\" realm", Bearer realm="https://x/t",'
        'scope="repository:a:pull,push", error=invalid_token, Negotiate abc=='
    )
    assert parse_challenges([header, "Digest nonce=1"]) == [
        ("basic", [("realm", 'a "quoted" realm')]),
        (
            "bearer",
            [
                ("realm", "https://x/t"),
                ("scope", "repository:a:pull,push"),
                ("error", "invalid_token"),
            ],
        ),
        ("negotiate", []),
        ("digest", [("nonce", "1")]),
    ]


def test_cached_authorization_of_nonsense_url_is_none() -> None:
    assert RegistryAuth(ALICE).cached_authorization("http://[bad") is None


@pytest.mark.anyio
async def test_copied_cached_header_is_still_renewed() -> None:
    """A caller may copy cached_authorization into its own request; when the
    registry then refuses that token, the flow must fetch a new one."""
    issued: list[str] = []
    log: list[httpx.Request] = []

    def token_reply(request: httpx.Request) -> httpx.Response:
        issued.append(f"t{len(issued)}")
        return httpx.Response(200, json={"token": issued[-1]})

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.url.path == "/token":
            return token_reply(request)
        if issued and request.headers.get("Authorization") == f"Bearer {issued[-1]}":
            return httpx.Response(200)
        challenge = (
            'Bearer realm="https://auth.example/token",scope="repository:a:pull"'
        )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    auth = RegistryAuth(clock=FakeClock())
    url = "https://reg.example/v2/a/blobs/x"
    transport = httpx.MockTransport(handle)
    async with httpx.AsyncClient(auth=auth, transport=transport) as client:
        await client.get(url)
        copied = auth.cached_authorization(url)
        assert copied == "Bearer t0"
        issued.append("rotated")
        log.clear()
        response = await client.get(url, headers={"Authorization": copied})
    assert response.status_code == 200
    assert [r.url.path for r in log] == ["/v2/a/blobs/x", "/token", "/v2/a/blobs/x"]
    assert auth.cached_authorization(url) == "Bearer t2"
