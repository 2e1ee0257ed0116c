"""The conformance suite every origin backend passes, run against real origins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dragonpy import (
    Backend,
    BackendOptions,
    Backends,
    OriginStatusError,
    RangeNotSupported,
    UnsupportedURL,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["http", "file"])
async def served(
    request: pytest.FixtureRequest, nginx: str, origin_root: Path
) -> AsyncIterator[tuple[Backend, str]]:
    """A backend and the base URL under which it serves ``origin_root``."""
    base = nginx if request.param == "http" else f"file://{origin_root}"
    backends = Backends(BackendOptions(retries=0))
    yield backends.for_url(base), base
    await backends.aclose()


async def test_stat_tells_the_length(
    served: tuple[Backend, str], origin_root: Path
) -> None:
    backend, base = served
    for name in ("empty.bin", "small.bin", "pieces.bin"):
        stat = await backend.stat(f"{base}/{name}")
        assert stat.content_length == (origin_root / name).stat().st_size
        assert stat.accepts_ranges or stat.content_length == 0
        assert stat.validator


async def test_open_range_streams_exactly_the_range(
    served: tuple[Backend, str], origin_root: Path
) -> None:
    backend, base = served
    data = (origin_root / "pieces.bin").read_bytes()
    stat = await backend.stat(f"{base}/pieces.bin")
    for offset, length in [(0, 1), (5, 4_200_000), (len(data) - 7, 7)]:
        async with backend.open_range(stat, offset, length) as chunks:
            received = b"".join([chunk async for chunk in chunks])
        assert received == data[offset : offset + length]


async def test_read_into_fills_the_buffer(
    served: tuple[Backend, str], origin_root: Path
) -> None:
    backend, base = served
    data = (origin_root / "pieces.bin").read_bytes()
    stat = await backend.stat(f"{base}/pieces.bin")
    for offset, length in [(0, 4 * 1024 * 1024), (123, 10), (len(data) - 99, 99)]:
        buffer = bytearray(length)
        await backend.read_into(stat, offset, memoryview(buffer))
        assert buffer == data[offset : offset + length]


async def test_missing_content_is_a_404(served: tuple[Backend, str]) -> None:
    backend, base = served
    with pytest.raises(OriginStatusError) as caught:
        await backend.stat(f"{base}/no-such-file")
    assert caught.value.status == 404


async def test_unknown_schemes_are_rejected() -> None:
    backends = Backends()
    with pytest.raises(UnsupportedURL, match=r"no backend for ftp://"):
        backends.for_url("ftp://example.com/file")
    with pytest.raises(UnsupportedURL, match="without a scheme"):
        backends.for_url("example.com/file")


async def test_http_origin_that_ignores_range_is_detected(tricky: object) -> None:
    from .origin import TrickyOrigin

    assert isinstance(tricky, TrickyOrigin)
    tricky.content["/f"] = b"x" * 1000
    tricky.behaviour["/f"] = "ignore-range"
    backends = Backends(BackendOptions(retries=0))
    backend = backends.for_url(tricky.url)
    try:
        stat = await backend.stat(f"{tricky.url}/f")
        assert stat.content_length == 1000
        assert not stat.accepts_ranges
        with pytest.raises(RangeNotSupported):
            await backend.read_into(stat, 10, memoryview(bytearray(10)))
    finally:
        await backends.aclose()
