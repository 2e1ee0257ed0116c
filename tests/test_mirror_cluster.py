"""Three daemons pull one blob through their mirrors at once: the registry serves
it once, and the daemons share it peer to peer."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

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
