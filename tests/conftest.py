from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from dragonpy import PieceStore, StorePolicy, open_store

from .cluster import Cluster
from .origin import TrickyOrigin, run_nginx, run_tricky_origin
from .registry import Registry, run_registry

# Shared machines are slow at times; hypothesis checks behaviour, not speed.
settings.register_profile("dragonpy", deadline=None)
settings.load_profile("dragonpy")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PieceStore]:
    piece_store = open_store(tmp_path / "store", StorePolicy())
    yield piece_store
    piece_store.close()


@pytest.fixture(scope="session")
def origin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files served by nginx: sizes around piece boundaries, and an empty one."""
    root = tmp_path_factory.mktemp("www")
    for name, size in {
        "empty.bin": 0,
        "small.bin": 1000,
        "pieces.bin": 3 * 4 * 1024 * 1024 + 12345,
        "big.bin": 40 * 1024 * 1024 + 5,
    }.items():
        (root / name).write_bytes(os.urandom(size))
    return root


@pytest.fixture(scope="session")
def nginx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nginx")


@pytest.fixture(scope="session")
def nginx(origin_root: Path, nginx_dir: Path) -> Iterator[str]:
    with run_nginx(origin_root, nginx_dir) as url:
        yield url


@pytest.fixture
def tricky() -> Iterator[TrickyOrigin]:
    with run_tricky_origin() as origin:
        yield origin


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Scheduler and daemon processes of one test, stopped after it."""
    running = Cluster(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A docker-registry without authentication."""
    with run_registry(tmp_path) as running:
        yield running
