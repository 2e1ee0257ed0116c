"""The registry mirror against a real docker-registry, through the daemon."""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import attrs
import httpx
import pytest

import dragonpy

from .images import MANIFEST_TYPE, push_image
from .registry import PASSWORD, USERNAME, Registry, run_registry

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

MIB = 1024 * 1024


@pytest.fixture
def layer(registry: Registry) -> tuple[str, bytes]:
    data = os.urandom(10 * MIB + 123)
    return registry.push_blob("team/app", data), data


@asynccontextmanager
async def running_mirror(
    tmp_path: Path, proxy: dragonpy.ProxyConfig
) -> AsyncIterator[httpx.AsyncClient]:
    """A daemon (no scheduler) with this mirror; a client of the mirror."""
    config = dragonpy.DaemonConfig(
        store_dir=tmp_path / "store",
        listen="127.0.0.1",
        piece_port=0,
        health_port=0,
        metrics_port=0,
        proxy=proxy,
    )
    daemon = dragonpy.Daemon(config)
    async with anyio.create_task_group() as group:
        await group.start(daemon.run)
        base = f"http://127.0.0.1:{daemon.proxy_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield client
        group.cancel_scope.cancel()


@pytest.fixture
async def mirror(
    tmp_path: Path, registry: Registry
) -> AsyncIterator[httpx.AsyncClient]:
    proxy = dragonpy.ProxyConfig(port=0, registries=(registry.url,))
    async with running_mirror(tmp_path, proxy) as client:
        yield client


async def test_a_blob_goes_through_the_store_once(
    mirror: httpx.AsyncClient, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"

    first = await mirror.get(path)
    second = await mirror.get(path, headers={"X-Dragonfly-Registry": registry.url})

    for answer in (first, second):
        assert answer.status_code == 200
        assert answer.content == data
        assert answer.headers["content-length"] == str(len(data))
        assert answer.headers["x-dragonpy-task-id"] == digest.removeprefix("sha256:")
    assert registry.blob_bytes(digest) == len(data) + 1  # pieces and a 1-byte probe


async def test_a_range_gets_exactly_its_bytes(
    mirror: httpx.AsyncClient, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"

    middle = await mirror.get(path, headers={"Range": "bytes=5000000-6048575"})
    tail = await mirror.get(path, headers={"Range": f"bytes={len(data) - 10}-"})
    beyond = await mirror.get(path, headers={"Range": f"bytes={len(data)}-"})
    nonsense = await mirror.get(path, headers={"Range": "pages=1-2"})
    backwards = await mirror.get(path, headers={"Range": "bytes=9-3"})
    several = await mirror.get(path, headers={"Range": "bytes=0-1,5-6"})

    assert middle.status_code == 206
    assert middle.content == data[5000000:6048576]
    assert middle.headers["content-range"] == f"bytes 5000000-6048575/{len(data)}"
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert nonsense.status_code == 416
    assert backwards.status_code == 416
    assert several.status_code == 200 and several.content == data


async def test_a_range_read_brings_only_the_pieces_covering_it(
    mirror: httpx.AsyncClient, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"
    piece = dragonpy.piece_length_for(len(data))

    cold = await mirror.get(path, headers={"Range": "bytes=100-199"})
    sent = registry.blob_bytes(digest)
    warm = await mirror.get(path, headers={"Range": "bytes=1000-1099"})
    whole = await mirror.get(path)

    assert cold.content == data[100:200] and warm.content == data[1000:1100]
    assert cold.headers["x-dragonpy-source"] == "origin"
    assert warm.headers["x-dragonpy-source"] == "local"
    assert sent == piece + 1  # its piece and a 1-byte probe
    assert whole.content == data
    rest = len(data) - piece
    assert registry.blob_bytes(digest) - sent == rest + 1  # and a probe


async def _wait_for_bytes(registry: Registry, digest: str, count: int) -> None:
    with anyio.fail_after(20):
        while registry.blob_bytes(digest) < count:
            await anyio.sleep(0.05)


async def _wait_until_stored(store_dir: Path, task_id: str) -> None:
    store = dragonpy.open_store(store_dir)
    with anyio.fail_after(20):
        while (task := store.get_task(task_id)) is None or not task.complete:
            await anyio.sleep(0.05)


async def test_prefetch_brings_the_rest_of_the_blob_once(
    tmp_path: Path,
    mirror: httpx.AsyncClient,
    registry: Registry,
    layer: tuple[str, bytes],
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"
    prefetch = {"Range": "bytes=100-199", "X-Dragonfly-Prefetch": "true"}

    ranged = await mirror.get(path, headers=prefetch)
    again = await mirror.get(path, headers=prefetch)
    # Nobody else asks: the blob is whole in the store once the prefetch is done.
    await _wait_until_stored(tmp_path / "store", ranged.headers["x-dragonpy-task-id"])
    whole = await mirror.get(path)

    assert ranged.status_code == 206 and ranged.content == data[100:200]
    assert again.content == data[100:200]
    assert whole.content == data
    assert whole.headers["x-dragonpy-source"] == "local"
    assert registry.blob_bytes(digest) == len(data) + 1


async def test_the_prefetch_header_overrides_the_setting(
    tmp_path: Path, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"
    piece = dragonpy.piece_length_for(len(data))
    proxy = dragonpy.ProxyConfig(port=0, registries=(registry.url,), prefetch=True)
    async with running_mirror(tmp_path, proxy) as mirror:
        declined = {"Range": "bytes=0-9", "X-Dragonfly-Prefetch": "false"}
        first = await mirror.get(path, headers=declined)
        assert registry.blob_bytes(digest) == piece + 1
        second = await mirror.get(path, headers={"Range": f"bytes={piece}-"})
        await _wait_for_bytes(registry, digest, len(data) + 1)

    assert first.content == data[:10]
    assert second.content == data[piece:]


async def test_priority_1_keeps_the_request_off_the_swarm(
    mirror: httpx.AsyncClient, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"

    direct = await mirror.get(path, headers={"X-Dragonfly-Priority": "1"})
    sent = registry.blob_bytes(digest)
    swarm = await mirror.get(path, headers={"X-Dragonfly-Priority": "6"})

    assert direct.content == data
    assert "x-dragonpy-task-id" not in direct.headers
    assert sent == len(data)  # no probe, no pieces: the registry's own answer
    assert swarm.headers["x-dragonpy-task-id"] == digest.removeprefix("sha256:")


async def test_priority_2_without_peers_is_answered_by_the_upstream(
    mirror: httpx.AsyncClient, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"

    answer = await mirror.get(path, headers={"X-Dragonfly-Priority": "2"})

    assert answer.status_code == 200 and answer.content == data
    assert "x-dragonpy-task-id" not in answer.headers


@pytest.mark.parametrize("value", ["9", "high", "-1"])
async def test_an_impossible_priority_is_refused(
    mirror: httpx.AsyncClient, layer: tuple[str, bytes], value: str
) -> None:
    digest, _ = layer
    path = f"/v2/team/app/blobs/{digest}"
    answer = await mirror.get(path, headers={"X-Dragonfly-Priority": value})
    assert answer.status_code == 400
    assert "send 0 to 6" in answer.text


async def test_manifests_and_pings_pass_through(
    mirror: httpx.AsyncClient, registry: Registry
) -> None:
    image = push_image(registry, "team/app", "v1", layers=0)
    manifest, digest = image.manifest, image.digest

    ping = await mirror.get("/v2/")
    # One Accept line per type, as skopeo sends them: all of them must go on.
    accept = [
        ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("Accept", MANIFEST_TYPE),
        ("Accept", "application/vnd.oci.image.index.v1+json"),
    ]
    answer = await mirror.get("/v2/team/app/manifests/v1", headers=accept)
    missing = await mirror.get("/v2/team/app/manifests/nope")

    assert ping.status_code == 200
    assert ping.headers["docker-distribution-api-version"] == "registry/2.0"
    assert answer.status_code == 200
    assert answer.content == manifest
    assert answer.headers["docker-content-digest"] == digest
    assert hashlib.sha256(answer.content).hexdigest() == digest.removeprefix("sha256:")
    assert missing.status_code == 404
    assert "MANIFEST_UNKNOWN" in missing.text


async def test_upstreams_not_configured_are_refused(
    mirror: httpx.AsyncClient, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, _ = layer
    path = f"/v2/team/app/blobs/{digest}"

    elsewhere = await mirror.get(
        path, headers={"X-Dragonfly-Registry": "https://evil.example"}
    )
    by_namespace = await mirror.get(f"{path}?ns={registry.host}")
    not_a_url = await mirror.get(path, headers={"X-Dragonfly-Registry": "ftp://x"})

    assert elsewhere.status_code == 403
    assert "--registry" in elsewhere.text
    assert by_namespace.status_code == 200
    assert not_a_url.status_code == 400


async def test_what_the_swarm_cannot_fetch_the_upstream_answers(
    mirror: httpx.AsyncClient,
) -> None:
    answer = await mirror.get("/v2/team/app/blobs/sha256:" + "0" * 64)

    assert answer.status_code == 404
    assert "BLOB_UNKNOWN" in answer.text  # the registry's own error


async def test_private_blobs_relay_the_upstream_challenge(
    tmp_path: Path,
) -> None:
    with run_registry(tmp_path, auth="htpasswd") as private:
        digest = private.push_blob("team/secret", b"secret layer")
        proxy = dragonpy.ProxyConfig(port=0, registries=(private.url,))
        async with running_mirror(tmp_path, proxy) as mirror:
            path = f"/v2/team/secret/blobs/{digest}"
            anonymous = await mirror.get(path)
            allowed = await mirror.get(path, auth=(USERNAME, PASSWORD))
            # Now in the store: still not for anyone who asks.
            cached_anonymous = await mirror.get(path)
            cached_wrong = await mirror.get(path, auth=(USERNAME, "wrong"))

    assert anonymous.status_code == 401
    assert "Basic" in anonymous.headers["www-authenticate"]
    assert allowed.status_code == 200
    assert allowed.content == b"secret layer"
    assert cached_anonymous.status_code == 401
    assert cached_wrong.status_code == 401
    assert b"secret layer" not in cached_anonymous.content + cached_wrong.content


async def test_a_stalled_blob_closes_the_connection(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    # nginx's /slow/ sends a 4 MiB piece in about a second. The first piece is
    # stored beforehand, so the answer starts at once, then waits too long.
    headers = {"X-Dragonfly-Registry": nginx, "X-Dragonfly-Use-P2P": "true"}
    patient = dragonpy.ProxyConfig(port=0, allow_any_registry=True)
    async with running_mirror(tmp_path, patient) as mirror:
        first = await mirror.get(
            "/slow/big.bin", headers={**headers, "Range": "bytes=0-0"}
        )
    hasty = attrs.evolve(patient, stall_timeout=0.3)
    async with running_mirror(tmp_path, hasty) as mirror:
        with pytest.raises(httpx.RemoteProtocolError):
            await mirror.get("/slow/big.bin", headers=headers)
        whole = await mirror.get("/small.bin", headers=headers)

    assert first.headers["x-dragonpy-source"] == "origin"
    assert whole.content == (origin_root / "small.bin").read_bytes()


async def test_no_first_piece_in_time_lets_the_upstream_answer(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    proxy = dragonpy.ProxyConfig(port=0, allow_any_registry=True, stall_timeout=0.3)
    headers = {
        "X-Dragonfly-Registry": nginx,
        "X-Dragonfly-Use-P2P": "true",
        "Range": "bytes=10-19",
    }
    async with running_mirror(tmp_path, proxy) as mirror:
        answer = await mirror.get("/slow/big.bin", headers=headers)

    assert answer.status_code == 206
    assert answer.content == (origin_root / "big.bin").read_bytes()[10:20]
    assert "x-dragonpy-task-id" not in answer.headers  # nginx's own answer


async def test_a_nydus_style_reader_gets_every_byte(
    mirror: httpx.AsyncClient, registry: Registry, layer: tuple[str, bytes]
) -> None:
    """HEAD for the size, then 1 MiB ranges at random offsets, 8 at a time, each
    naming the registry in a header, as nydusd in mirror mode does."""
    digest, data = layer
    path = f"/v2/team/app/blobs/{digest}"
    headers = {"X-Dragonfly-Registry": registry.url, "User-Agent": "nydusd/1.0.0"}

    head = await mirror.head(path, headers=headers)
    size = int(head.headers["content-length"])
    offsets = random.Random(7).sample(range(size - MIB), 40)

    async def read(offset: int) -> None:
        wanted = {**headers, "Range": f"bytes={offset}-{offset + MIB - 1}"}
        answer = await mirror.get(path, headers=wanted)
        assert answer.status_code == 206
        assert answer.content == data[offset : offset + MIB]

    limiter = anyio.CapacityLimiter(8)

    async def limited(offset: int) -> None:
        async with limiter:
            await read(offset)

    async with anyio.create_task_group() as group:
        for offset in offsets:
            group.start_soon(limited, offset)

    assert head.status_code == 200 and size == len(data)
    # Every piece left the registry once; each download that went there began
    # with a 1-byte probe.
    assert registry.blob_bytes(digest) - len(data) in range(1, 4)


async def test_as_a_forward_proxy_the_same_rules_apply(
    tmp_path: Path, registry: Registry, layer: tuple[str, bytes]
) -> None:
    digest, data = layer
    proxy_config = dragonpy.ProxyConfig(port=0, registries=(registry.url,))
    async with running_mirror(tmp_path, proxy_config) as mirror:
        proxy = str(mirror.base_url).rstrip("/")
        async with httpx.AsyncClient(proxy=proxy, timeout=30) as client:
            blob = await client.get(f"{registry.url}/v2/team/app/blobs/{digest}")
            ping = await client.get(f"{registry.url}/v2/")
            elsewhere = await client.get("http://elsewhere.example/v2/")

    assert blob.status_code == 200 and blob.content == data
    assert "x-dragonpy-task-id" in blob.headers  # through the swarm
    assert ping.status_code == 200
    assert elsewhere.status_code == 403


async def test_connect_tunnels_to_served_registries_only(
    tmp_path: Path, registry: Registry
) -> None:
    proxy_config = dragonpy.ProxyConfig(port=0, registries=(registry.url,))
    async with running_mirror(tmp_path, proxy_config) as mirror:
        port = int(str(mirror.base_url).rstrip("/").rsplit(":", 1)[1])
        through = await _through_tunnel(port, registry.host)
        refused = await _through_tunnel(port, "elsewhere.example:443")

    assert through.startswith(b"HTTP/1.1 200")
    # The registry itself answered, over the tunnel.
    assert b"HTTP/1.1 200 OK" in through and b"registry/2.0" in through
    assert refused.startswith(b"HTTP/1.1 403")


async def _through_tunnel(port: int, authority: str) -> bytes:
    """CONNECT to ``authority``, then a ``GET /v2/`` through the tunnel; all the
    bytes that came back."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        get = f"GET /v2/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        await stream.send((connect + get).encode())
        received = b""
        with anyio.move_on_after(10):
            try:
                async for chunk in stream:
                    received += chunk
            except anyio.BrokenResourceError:
                pass
        return received


async def test_token_requests_sent_to_the_mirror_reach_their_realm(
    tmp_path: Path,
) -> None:
    """Older nydusd sends its token requests to the mirror's host: the mirror
    forwards them to the realm a served registry's challenge named."""
    with run_registry(tmp_path, auth="token") as private:
        assert private.tokens is not None
        digest = private.push_blob("team/app", b"layer behind a token")
        proxy = dragonpy.ProxyConfig(port=0, registries=(private.url,))
        async with running_mirror(tmp_path, proxy) as mirror:
            path = f"/v2/team/app/blobs/{digest}"
            challenged = await mirror.get(path)
            # As nydusd does: the realm's path and the challenge's parameters,
            # sent to the mirror's host.
            challenge = dict(
                re.findall(r'(\w+)="([^"]*)"', challenged.headers["www-authenticate"])
            )
            token = await mirror.get(
                urlsplit(challenge["realm"]).path,
                params={"scope": challenge["scope"], "service": challenge["service"]},
                auth=(USERNAME, PASSWORD),
            )
            blob = await mirror.get(
                path, headers={"Authorization": f"Bearer {token.json()['token']}"}
            )

    assert challenged.status_code == 401
    assert token.status_code == 200
    assert private.tokens.token_requests >= 1
    assert blob.status_code == 200 and blob.content == b"layer behind a token"
