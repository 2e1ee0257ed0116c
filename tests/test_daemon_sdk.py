"""A scheduler and two daemons in one process, through the public SDK."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import dragonpy

pytestmark = [pytest.mark.anyio, pytest.mark.nginx]


def config(store: Path, scheduler_port: int, name: str) -> dragonpy.DaemonConfig:
    return dragonpy.DaemonConfig(
        store_dir=store,
        scheduler=f"127.0.0.1:{scheduler_port}",
        hostname=name,
        listen="127.0.0.1",
        piece_port=0,
        health_port=0,
        metrics_port=0,
        proxy=dragonpy.ProxyConfig(port=0),
    )


async def test_a_second_daemon_takes_everything_from_the_first(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    request = dragonpy.Download(f"{nginx}/pieces.bin")
    size = (origin_root / "pieces.bin").stat().st_size
    async with anyio.create_task_group() as group:
        port = await group.start(dragonpy.SchedulerServer().serve, "127.0.0.1", 0)
        first = dragonpy.Daemon(config(tmp_path / "first", port, "first"))
        second = dragonpy.Daemon(config(tmp_path / "second", port, "second"))
        await group.start(first.run)
        await group.start(second.run)

        fetched = await first.download(request)
        taken = await second.download(request)
        again = await second.download(request)
        group.cancel_scope.cancel()

    assert fetched.bytes == {"local": 0, "peer": 0, "seed": 0, "origin": size}
    assert taken.bytes == {"local": 0, "peer": size, "seed": 0, "origin": 0}
    assert again.bytes["local"] == size
    with second.store.read_piece(request.task_id, 0) as view:
        assert view is not None
        assert bytes(view) == (origin_root / "pieces.bin").read_bytes()[: len(view)]
