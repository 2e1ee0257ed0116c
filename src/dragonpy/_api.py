"""One-call helpers over ``Downloader`` for scripts and notebooks."""

from __future__ import annotations

import os
from collections.abc import Mapping

import anyio

from ._backends import BackendOptions
from ._download import Download, Downloader, DownloadResult, ProgressCallback
from ._storage import open_store


async def download(
    url: str,
    path: str | os.PathLike[str],
    *,
    digest: str | None = None,
    headers: Mapping[str, str] | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> DownloadResult:
    """Download ``url`` to ``path`` through the piece store, verified and resumable."""
    store = None if store_dir is None else open_store(store_dir)
    options = BackendOptions(headers=dict(headers or {}))
    async with Downloader(store=store, options=options, concurrency=concurrency) as dl:
        return await dl.download(
            Download(url, digest=digest), path, timeout=timeout, on_progress=on_progress
        )


def download_sync(
    url: str,
    path: str | os.PathLike[str],
    *,
    digest: str | None = None,
    headers: Mapping[str, str] | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    timeout: float | None = None,
) -> DownloadResult:
    """``download`` for code that is not async: runs its own event loop."""

    async def run() -> DownloadResult:
        return await download(
            url,
            path,
            digest=digest,
            headers=headers,
            store_dir=store_dir,
            concurrency=concurrency,
            timeout=timeout,
        )

    return anyio.run(run)


async def read_range(
    url: str,
    start: int,
    end: int,
    *,
    store_dir: str | os.PathLike[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Bytes ``start`` to ``end`` (inclusive) of ``url``, fetching only their pieces."""
    store = None if store_dir is None else open_store(store_dir)
    options = BackendOptions(headers=dict(headers or {}))
    async with (
        Downloader(store=store, options=options) as dl,
        dl.open_range(Download(url), start, end) as chunks,
    ):
        return b"".join([chunk async for chunk in chunks])
