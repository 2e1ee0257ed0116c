"""In-process daemons for tests: their configuration on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

import dragonpy


def daemon_config(
    store: Path, *, scheduler: int | None = None, **changes: Any
) -> dragonpy.DaemonConfig:
    """A daemon on 127.0.0.1 with every port chosen by the kernel, named after its
    store directory, in the swarm of the scheduler on port ``scheduler`` (if any);
    ``changes`` replace other fields."""
    config = dragonpy.DaemonConfig(
        store_dir=store,
        scheduler=None if scheduler is None else f"127.0.0.1:{scheduler}",
        hostname=store.name,
        listen="127.0.0.1",
        piece_port=0,
        health_port=0,
        metrics_port=0,
        proxy=dragonpy.ProxyConfig(port=0),
    )
    return attrs.evolve(config, **changes)
