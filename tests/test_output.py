"""The output file: whole blocks written past the page cache, the rest through it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dragonpy import _output
from dragonpy._output import BLOCK, OutputFile, aligned_buffer

from .test_get import get

LENGTH = 3 * 1024 * 1024 + 12345


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A file system that refuses direct I/O (tmpfs accepts it on recent kernels)."""
    mount = tmp_path / "ramfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


async def write_in_pieces(path: Path, content: bytes) -> None:
    """Write ``content`` as 1 MiB pieces in random order, some from views that
    do not start on a page, and a short last piece."""
    output = OutputFile(path)
    await output.open(len(content))
    offsets = list(range(0, len(content), 1024 * 1024))
    random.Random(7).shuffle(offsets)
    for number, offset in enumerate(offsets):
        piece: bytes | memoryview = content[offset : offset + 1024 * 1024]
        if number % 2:
            # One byte in: the source is not aligned the way direct I/O needs.
            piece = memoryview(b"x" + piece)[1:]
        output.write(offset, piece)
    await output.commit()


@pytest.mark.anyio
async def test_pieces_in_any_order_make_the_whole_file(tmp_path: Path) -> None:
    content = random.Random(1).randbytes(LENGTH)
    assert LENGTH % BLOCK

    await write_in_pieces(tmp_path / "f", content)

    assert (tmp_path / "f").read_bytes() == content
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.anyio
async def test_an_aligned_buffer_goes_to_the_disk_uncopied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = random.Random(3).randbytes(LENGTH)
    buffer = aligned_buffer(LENGTH)
    buffer[:] = content

    def no_copy(self: object) -> memoryview:
        raise AssertionError("an aligned buffer was copied")

    monkeypatch.setattr(_output._DirectWriter, "_buffer", no_copy)
    output = OutputFile(tmp_path / "f")
    await output.open(LENGTH)
    # Two writes, both from the buffer's start: whole blocks past the page
    # cache, the rest of each through it.
    output.write(0, buffer[: 2 * 1024 * 1024])
    output.write(2 * 1024 * 1024, aligned_buffer(LENGTH - 2 * 1024 * 1024))
    await output.commit()

    written = (tmp_path / "f").read_bytes()
    assert written[: 2 * 1024 * 1024] == content[: 2 * 1024 * 1024]
    assert written[2 * 1024 * 1024 :] == bytes(LENGTH - 2 * 1024 * 1024)


@pytest.mark.anyio
async def test_a_file_system_without_direct_io_gets_buffered_writes(
    ramfs: Path,
) -> None:
    content = random.Random(2).randbytes(LENGTH)

    await write_in_pieces(ramfs / "f", content)

    assert (ramfs / "f").read_bytes() == content


def test_download_onto_a_file_system_without_direct_io(
    nginx: str, origin_root: Path, ramfs: Path, tmp_path: Path
) -> None:
    code, _, stderr = get(
        f"{nginx}/pieces.bin", "-O", str(ramfs / "f"), "--store", str(tmp_path / "s")
    )

    assert code == 0, stderr
    assert (ramfs / "f").read_bytes() == (origin_root / "pieces.bin").read_bytes()


#: Modules a download has no use for: the daemon, the scheduler, YAML, metrics, and
#: httpx's own command-line client, which drags in rich and pygments.
NOT_FOR_A_DOWNLOAD = frozenset(
    {"dragonpy._daemon", "dragonpy._scheduler", "yaml", "prometheus_client"}
    | {"httpx._main", "rich", "pygments"}
)


def modules_loaded_by_get(*argv: str) -> set[str]:
    """The modules a ``dragonpy get`` process had loaded when it ended (what every
    run of it waits for); it must succeed."""
    script = (
        "import atexit, sys\n"
        "from dragonpy_cli._app import main\n"
        "loaded = lambda: [name for name, m in sys.modules.items() if m is not None]\n"
        "atexit.register(lambda: print(' '.join(loaded()), file=sys.stderr))\n"
        f"sys.argv = ['dragonpy', 'get', *{list(argv)!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(done.stderr.split())


def test_get_imports_only_what_a_download_needs(nginx: str, tmp_path: Path) -> None:
    output, store = tmp_path / "f", tmp_path / "s"

    loaded = modules_loaded_by_get(
        f"{nginx}/small.bin", "-O", str(output), "--store", str(store), "--quiet"
    )

    assert output.stat().st_size == 1000
    assert "dragonpy._download" in loaded
    assert loaded & NOT_FOR_A_DOWNLOAD == set()
