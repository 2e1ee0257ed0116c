"""Metrics, scraped from the endpoints Prometheus scrapes, after real downloads."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import dragonpy

from .daemons import daemon_config
from .registry import Registry

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    answer.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.nginx
async def test_a_swarm_download_in_the_metrics_of_daemons_and_scheduler(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    request = dragonpy.Download(f"{nginx}/pieces.bin")
    size = (origin_root / "pieces.bin").stat().st_size
    pieces = -(-size // dragonpy.piece_length_for(size))
    server = dragonpy.SchedulerServer()
    async with anyio.create_task_group() as group:
        port = await group.start(
            lambda **status: server.serve("127.0.0.1", 0, metrics_port=0, **status)
        )
        first, second = (
            dragonpy.Daemon(daemon_config(tmp_path / name, scheduler=port))
            for name in ("first", "second")
        )
        await group.start(first.run)
        await group.start(second.run)
        await first.download(request)
        await second.download(request)
        await second.download(request)  # found whole in the store

        assert server.metrics_port is not None
        fetcher = await scrape(first.metrics_port)
        child = await scrape(second.metrics_port)
        scheduler = await scrape(server.metrics_port)
        group.cancel_scope.cancel()

    origin = {"source": "origin"}
    assert value(fetcher, "dragonpy_download_bytes_total", **origin) == size
    assert value(fetcher, "dragonpy_piece_download_seconds_count", **origin) == pieces
    assert value(fetcher, "dragonpy_back_to_source_total", reason="scheduler") == 1
    assert value(fetcher, "dragonpy_origin_requests_total") >= pieces
    assert value(fetcher, "dragonpy_piece_upload_seconds_count") == pieces
    assert value(fetcher, "dragonpy_upload_pieces_total") == pieces
    assert value(fetcher, "dragonpy_store_used_bytes") == size

    peer = {"source": "peer"}
    assert value(child, "dragonpy_download_bytes_total", **peer) == size
    assert value(child, "dragonpy_download_bytes_total", **origin) == 0
    assert value(child, "dragonpy_download_bytes_total", source="local") == size
    assert value(child, "dragonpy_piece_download_seconds_count", **peer) == pieces
    assert value(child, "dragonpy_download_tasks_total", result="succeeded") == 2
    assert value(child, "dragonpy_download_tasks_running") == 0
    assert value(child, "dragonpy_download_parents") == 0

    registrations = value(
        scheduler, "dragonpy_scheduler_decision_seconds_count", kind="register"
    )
    assert registrations == 2
    assert value(scheduler, "dragonpy_scheduler_decision_seconds_count", kind="view")
    back = "dragonpy_scheduler_back_to_source_total"
    assert value(scheduler, back, decision="fetcher") == 1
    assert value(scheduler, back, decision="seed_trigger") == 0
    assert value(scheduler, "dragonpy_scheduler_hosts") == 2
    assert value(scheduler, "dragonpy_scheduler_peers") == 2
    assert value(scheduler, "dragonpy_scheduler_tasks") == 1
    reported = "dragonpy_scheduler_pieces_total"
    assert value(scheduler, reported, source="origin") == pieces
    assert value(scheduler, reported, source="peer") == pieces
    assert value(scheduler, "dragonpy_scheduler_origin_repeats_total") == 0


@pytest.mark.nginx
async def test_evictions_are_counted(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    evicted = (origin_root / "pieces.bin").stat().st_size
    kept = (origin_root / "big.bin").stat().st_size
    # Room for either file under the high watermark, not for both; and room for the
    # second under the low one, so that evicting the first is enough.
    capacity = int(57.5 * MIB)
    policy = dragonpy.StorePolicy(capacity=capacity)
    daemon = dragonpy.Daemon(daemon_config(tmp_path / "node", store_policy=policy))
    async with anyio.create_task_group() as group:
        await group.start(daemon.run)
        await daemon.download(dragonpy.Download(f"{nginx}/pieces.bin"))
        await daemon.download(dragonpy.Download(f"{nginx}/big.bin"))
        samples = await scrape(daemon.metrics_port)
        group.cancel_scope.cancel()

    reason = {"reason": "capacity"}
    assert value(samples, "dragonpy_store_evicted_tasks_total", **reason) == 1
    assert value(samples, "dragonpy_store_evicted_bytes_total", **reason) == evicted
    assert value(samples, "dragonpy_store_evicted_tasks_total", reason="ttl") == 0
    assert value(samples, "dragonpy_store_used_bytes") == kept
    assert value(samples, "dragonpy_store_capacity_bytes") == capacity
    assert value(samples, "dragonpy_store_high_watermark_bytes") == int(capacity * 0.9)
    assert value(samples, "dragonpy_store_tasks") == 1
    back = "dragonpy_back_to_source_total"
    assert value(samples, back, reason="no_scheduler") == 2


@pytest.mark.nginx
async def test_making_room_for_a_download_does_not_evict_it(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    kept = (origin_root / "big.bin").stat().st_size
    # big.bin fits under the high watermark, not under the low one nor beside
    # pieces.bin: making room evicts all it can, but not the task it is for.
    policy = dragonpy.StorePolicy(capacity=50 * MIB)
    daemon = dragonpy.Daemon(daemon_config(tmp_path / "node", store_policy=policy))
    async with anyio.create_task_group() as group:
        await group.start(daemon.run)
        await daemon.download(dragonpy.Download(f"{nginx}/pieces.bin"))
        result = await daemon.download(dragonpy.Download(f"{nginx}/big.bin"))
        samples = await scrape(daemon.metrics_port)
        group.cancel_scope.cancel()

    assert result.bytes["origin"] == kept
    assert value(samples, "dragonpy_store_used_bytes") == kept
    assert value(samples, "dragonpy_store_tasks") == 1


@pytest.fixture
async def mirror(tmp_path: Path, registry: Registry) -> AsyncIterator[dragonpy.Daemon]:
    proxy = dragonpy.ProxyConfig(port=0, registries=(registry.url,))
    daemon = dragonpy.Daemon(daemon_config(tmp_path / "mirror", proxy=proxy))
    async with anyio.create_task_group() as group:
        await group.start(daemon.run)
        yield daemon
        group.cancel_scope.cancel()


@pytest.mark.registry
async def test_mirror_answers_are_counted_and_logged_by_source(
    mirror: dragonpy.Daemon, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(5 * MIB + 17)
    digest = registry.push_blob("team/app", data)
    path = f"/v2/team/app/blobs/{digest}"
    base = f"http://127.0.0.1:{mirror.proxy_port}"

    caplog.set_level(logging.INFO, logger="dragonpy.proxy")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        cold = await client.get(path)
        warm = await client.get(path)
        ranged = await client.get(path, headers={"Range": "bytes=10-19"})
        ping = await client.get("/v2/")
    samples = await scrape(mirror.metrics_port)

    assert [cold.headers["x-dragonpy-source"], warm.headers["x-dragonpy-source"]] == [
        "origin",
        "local",
    ]
    assert cold.content == warm.content == data and ranged.status_code == 206
    requests, sent = "dragonpy_proxy_requests_total", "dragonpy_proxy_bytes_total"
    assert value(samples, requests, source="origin") == 1
    assert value(samples, requests, source="local") == 2
    assert value(samples, requests, source="upstream") == 1
    assert value(samples, sent, source="origin") == len(data)
    assert value(samples, sent, source="local") == len(data) + 10
    assert value(samples, sent, source="upstream") == len(ping.content)

    served = [r.getMessage() for r in caplog.records if "served blob" in r.message]
    task_id = digest.removeprefix("sha256:")
    assert len(served) == 3
    assert served[0].startswith(f"served blob completely task_id={task_id} ")
    assert f"bytes={len(data)}/{len(data)} bytes_local=0 " in served[0]
    assert f"bytes_origin={len(data)} " in served[0]
    assert f"host_id={mirror.host.id} " in served[0]
    assert f"bytes_local={len(data)} " in served[1]
    assert "status=206 bytes=10/10 bytes_local=10 " in served[2]
