"""Three daemons pull one blob through their mirrors at once: the registry serves
it once, and the daemons share it peer to peer."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import dragonpy

from .cluster import Cluster, Daemon
from .registry import Registry

pytestmark = pytest.mark.registry


def pull(daemon: Daemon, path: str, registry: Registry) -> bytes:
    answer = httpx.get(
        f"http://127.0.0.1:{daemon.proxy_port}{path}",
        headers={"X-Dragonfly-Registry": registry.url},
        timeout=60,
    )
    answer.raise_for_status()
    return answer.content


def test_a_blob_pulled_through_three_mirrors_leaves_the_registry_once(
    cluster: Cluster, registry: Registry
) -> None:
    data = os.urandom(24 * 1024 * 1024 + 7)
    digest = registry.push_blob("team/app", data)
    cluster.start_scheduler()
    daemons = [
        cluster.start_daemon(f"node{n}", f"--registry={registry.url}") for n in range(3)
    ]
    path = f"/v2/team/app/blobs/{digest}"

    with ThreadPoolExecutor(len(daemons)) as pool:
        pulled = list(pool.map(lambda daemon: pull(daemon, path, registry), daemons))

    assert all(content == data for content in pulled)
    assert registry.blob_bytes(digest) == len(data) + 1, cluster.logs()
    from_peers = sum(
        daemon.metric("dragonpy_download_bytes_total", source="peer")
        for daemon in daemons
    )
    assert from_peers == 2 * len(data)


def test_range_reads_on_three_mirrors_take_each_piece_from_the_registry_once(
    cluster: Cluster, registry: Registry
) -> None:
    """Nydus-style 1 MiB reads on every node, without prefetch: each node brings
    only the pieces its reads cover, from whoever holds them."""
    mib = 1024 * 1024
    data = os.urandom(24 * mib + 7)
    digest = registry.push_blob("team/app", data)
    cluster.start_scheduler()
    daemons = [
        cluster.start_daemon(f"node{n}", f"--registry={registry.url}") for n in range(3)
    ]
    url = f"/v2/team/app/blobs/{digest}"
    offsets = random.Random(3).sample(range(len(data) - mib), 24)

    def read_all(daemon: Daemon) -> list[str]:
        sources = []
        with httpx.Client(base_url=f"http://127.0.0.1:{daemon.proxy_port}") as client:
            for offset in offsets:
                wanted = f"bytes={offset}-{offset + mib - 1}"
                answer = client.get(url, headers={"Range": wanted}, timeout=60)
                assert answer.status_code == 206
                assert answer.content == data[offset : offset + mib]
                sources.append(answer.headers["x-dragonpy-source"])
        return sources

    with ThreadPoolExecutor(len(daemons)) as pool:
        sources = [s for found in pool.map(read_all, daemons) for s in found]

    piece = dragonpy.piece_length_for(len(data))
    covered = {offset // piece for offset in offsets}
    covered |= {(offset + mib - 1) // piece for offset in offsets}
    piece_bytes = sum(min(piece, len(data) - n * piece) for n in covered)
    probes = registry.blob_bytes(digest) - piece_bytes
    assert 1 <= probes <= 3 * len(offsets), cluster.logs()  # 1-byte stats
    assert "peer" in sources
