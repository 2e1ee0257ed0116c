"""A scheduler and two daemons in one process, through the public SDK."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import dragonpy

from .daemons import daemon_config

pytestmark = [pytest.mark.anyio, pytest.mark.nginx]


async def test_a_second_daemon_takes_everything_from_the_first(
    tmp_path: Path, nginx: str, origin_root: Path
) -> None:
    request = dragonpy.Download(f"{nginx}/pieces.bin")
    size = (origin_root / "pieces.bin").stat().st_size
    async with anyio.create_task_group() as group:
        port = await group.start(dragonpy.SchedulerServer().serve, "127.0.0.1", 0)
        first = dragonpy.Daemon(daemon_config(tmp_path / "first", scheduler=port))
        second = dragonpy.Daemon(daemon_config(tmp_path / "second", scheduler=port))
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
