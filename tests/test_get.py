"""``dragonpy get`` and the download SDK, end to end against real origins."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from click.testing import CliRunner

import dragonpy
from dragonpy._storage import PieceStore
from dragonpy_cli._app import cli

from .origin import (
    TrickyOrigin,
    free_port,
    nginx_requests,
    run_nginx,
    self_signed_certificate,
)

MIB = 1024 * 1024
PIECES_BIN = 3 * 4 * MIB + 12345
BIG_BIN = 40 * MIB + 5


def get(*args: str) -> tuple[int, str, str]:
    """Run ``dragonpy get`` in-process; returns exit code, stdout and stderr."""
    result = CliRunner().invoke(cli, ["get", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "dragonpy-partial" in p.name)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def test_cold_download_fetches_pieces_in_parallel_ranges(
    nginx: str, nginx_dir: Path, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    before = len(nginx_requests(nginx_dir, "/big.bin"))
    code, stdout, _ = get(
        f"{nginx}/big.bin",
        "-O",
        str(out / "f"),
        "--store",
        str(tmp_path / "s"),
        "--json",
    )

    assert code == 0
    assert (out / "f").read_bytes() == (origin_root / "big.bin").read_bytes()
    result = json.loads(stdout)
    assert result["bytes_from_origin"] == BIG_BIN
    assert result["piece_count"] == 11
    # The stat, then runs of up to four consecutive 4 MiB pieces per request.
    ranges = sorted(
        line.split()[2] for line in nginx_requests(nginx_dir, "/big.bin")[before:]
    )
    assert ranges == [
        "bytes=0-0",
        "bytes=0-16777215",
        f"bytes={16 * MIB}-{32 * MIB - 1}",
        f"bytes={32 * MIB}-{BIG_BIN - 1}",
    ]


def test_warm_download_does_not_touch_the_origin(
    nginx: str, nginx_dir: Path, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "s")
    assert get(f"{nginx}/pieces.bin", "-O", str(out / "a"), "--store", store)[0] == 0
    before = len(nginx_requests(nginx_dir, "/pieces.bin"))

    code, stdout, _ = get(
        f"{nginx}/pieces.bin", "-O", str(out / "b"), "--store", store, "--json"
    )

    assert code == 0
    assert json.loads(stdout)["bytes_from_origin"] == 0
    assert len(nginx_requests(nginx_dir, "/pieces.bin")) == before
    assert (out / "b").read_bytes() == (origin_root / "pieces.bin").read_bytes()


@pytest.mark.anyio
async def test_download_resumes_from_stored_pieces(
    nginx: str, nginx_dir: Path, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    url = f"{nginx}/pieces.bin"
    # A read of the second piece stores just that piece, as an interrupted run would.
    chunk = await dragonpy.read_range(url, 5_000_000, 5_000_009, store_dir=store)
    data = (origin_root / "pieces.bin").read_bytes()
    assert chunk == data[5_000_000:5_000_010]
    before = len(nginx_requests(nginx_dir, "/pieces.bin"))

    result = await dragonpy.download(url, out / "f", store_dir=store)

    assert result.bytes_from_store == 4 * MIB
    assert result.bytes_from_origin == PIECES_BIN - 4 * MIB
    # The stat, piece 0 alone, then pieces 2 and 3 together.
    assert len(nginx_requests(nginx_dir, "/pieces.bin")) - before == 1 + 2
    assert (out / "f").read_bytes() == data


@pytest.mark.anyio
async def test_a_stored_piece_gone_while_copied_fails_the_download(
    nginx: str, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s"
    url = f"{nginx}/big.bin"
    await dragonpy.download(url, out / "first", store_dir=store)
    read_piece = PieceStore.read_piece

    def losing_piece_2(
        self: PieceStore, task_id: str, number: int
    ) -> AbstractContextManager[memoryview | None]:
        return nullcontext(None) if number == 2 else read_piece(self, task_id, number)

    monkeypatch.setattr(PieceStore, "read_piece", losing_piece_2)

    # One copy of several fails: that failure, not a group of them, is raised.
    with pytest.raises(dragonpy.StoreError, match=r"piece 2 of \w+ vanished"):
        await dragonpy.download(url, out / "second", store_dir=store)
    assert not (out / "second").exists()


def test_killed_download_resumes_without_refetching(
    nginx: str, nginx_dir: Path, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    url = f"{nginx}/big.bin"
    # The first run dies after its first run of pieces is stored (SIGKILL).
    killer = (
        "import os, signal, dragonpy, dragonpy._download as d\n"
        "keep = d._TaskRun._keep\n"
        "def dying(self, piece, data, output):\n"
        "    keep(self, piece, data, output)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "d._TaskRun._keep = dying\n"
        f"dragonpy.download_sync({url!r}, {str(out / 'f')!r}, store_dir={str(store)!r},"
        " concurrency=1)\n"
    )
    run = subprocess.run([sys.executable, "-c", killer], check=False)
    assert run.returncode == -9
    assert not (out / "f").exists()

    before = len(nginx_requests(nginx_dir, "/big.bin"))
    result = dragonpy.download_sync(url, out / "f", store_dir=store)

    assert result.bytes_from_store == 16 * MIB
    assert result.bytes_from_origin == BIG_BIN - 16 * MIB
    assert len(nginx_requests(nginx_dir, "/big.bin")) - before == 1 + 2
    assert (out / "f").read_bytes() == (origin_root / "big.bin").read_bytes()


def test_digest_is_verified(
    nginx: str, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    good = (
        "sha256:" + hashlib.sha256((origin_root / "small.bin").read_bytes()).hexdigest()
    )
    store = str(tmp_path / "s")
    url = f"{nginx}/small.bin"
    assert get(url, "-O", str(out / "f"), "--store", store, "--digest", good)[0] == 0

    bad = "sha256:" + "0" * 64
    code, _, stderr = get(url, "-O", str(out / "g"), "--store", store, "--digest", bad)

    assert code == dragonpy.DigestMismatch.exit_code
    assert "content digest is sha256:" in stderr
    assert not (out / "g").exists()
    assert leftovers(out) == []


def test_oci_blob_digest_is_verified_automatically(
    tricky: TrickyOrigin, out: Path, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tricky.content[f"/v2/team/app/blobs/{digest}"] = data
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    tricky.content[f"/v2/team/app/blobs/{wrong}"] = data
    store = tmp_path / "s"

    code, _, _ = get(
        f"{tricky.url}/v2/team/app/blobs/{digest}",
        "-O",
        str(out / "ok"),
        "--store",
        str(store),
    )
    assert code == 0
    assert (out / "ok").read_bytes() == data

    code, _, stderr = get(
        f"{tricky.url}/v2/team/app/blobs/{wrong}",
        "-O",
        str(out / "bad"),
        "--store",
        str(store),
    )
    assert code == dragonpy.DigestMismatch.exit_code
    assert wrong in stderr
    assert not (out / "bad").exists()
    # Nothing unverified stays in the store.
    assert dragonpy.open_store(store).get_task(wrong.partition(":")[2]) is None


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.com/f", dragonpy.UnsupportedURL),
        ("http://127.0.0.1:{port}/f", dragonpy.OriginUnreachable),
    ],
)
def test_unreachable_and_unsupported_origins(
    url: str, error: type[dragonpy.DragonpyError], out: Path, tmp_path: Path
) -> None:
    code, _, stderr = get(
        url.format(port=free_port()),
        "-O",
        str(out / "f"),
        "--store",
        str(tmp_path / "s"),
        "--retries",
        "0",
    )
    assert code == error.exit_code
    assert stderr.startswith("dragonpy: error: ")
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("status:404", dragonpy.OriginStatusError),
        ("status:401", dragonpy.OriginAuthError),
        ("truncate", dragonpy.OriginProtocolError),
        ("short", dragonpy.OriginProtocolError),
    ],
)
def test_origin_failures_have_distinct_exit_codes(
    tricky: TrickyOrigin,
    behaviour: str,
    error: type[dragonpy.DragonpyError],
    out: Path,
    tmp_path: Path,
) -> None:
    tricky.content["/f"] = os.urandom(10_000)
    tricky.behaviour["/f"] = behaviour
    code, _, stderr = get(
        f"{tricky.url}/f", "-O", str(out / "f"), "--store", str(tmp_path / "s"),
        "--retries", "1",
    )  # fmt: skip

    assert code == error.exit_code, stderr
    assert not (out / "f").exists()
    assert leftovers(out) == []
    store = dragonpy.open_store(tmp_path / "s")
    assert all(not task.task.complete for task in store.list_tasks())


def test_exit_codes_are_distinct() -> None:
    classes: list[type[dragonpy.DragonpyError]] = [
        dragonpy.UnsupportedURL,
        dragonpy.OriginUnreachable,
        dragonpy.OriginTimeout,
        dragonpy.OriginStatusError,
        dragonpy.OriginAuthError,
        dragonpy.RangeNotSupported,
        dragonpy.OriginProtocolError,
        dragonpy.DigestMismatch,
        dragonpy.OutputError,
        dragonpy.DiskFull,
        dragonpy.StoreError,
        dragonpy.DownloadTimeout,
        dragonpy.TransportError,
        dragonpy.PieceNotFound,
    ]
    codes = [cls.exit_code for cls in classes]
    assert len(set(codes)) == len(codes)
    assert not {0, 1, 2} & set(codes)


def test_credentials_and_headers_reach_the_origin(
    tricky: TrickyOrigin, out: Path, tmp_path: Path
) -> None:
    tricky.content["/private"] = data = os.urandom(3000)
    tricky.behaviour["/private"] = "basic:alice:pw"
    token = base64.b64encode(b"alice:pw").decode()
    store = str(tmp_path / "s")

    assert get(f"{tricky.url}/private", "-O", str(out / "a"), "--store", store,
               "-H", f"Authorization: Basic {token}")[0] == 0  # fmt: skip
    assert (out / "a").read_bytes() == data
    dragonpy.open_store(tmp_path / "s").remove_task(
        dragonpy.task_id(f"{tricky.url}/private")
    )
    assert get(f"{tricky.url}/private", "-O", str(out / "b"), "--store", store,
               "-u", "alice:pw")[0] == 0  # fmt: skip


def test_server_ignoring_range_is_downloaded_in_one_stream(
    tricky: TrickyOrigin, out: Path, tmp_path: Path
) -> None:
    tricky.content["/f"] = data = os.urandom(9 * 1024 * 1024)
    tricky.behaviour["/f"] = "ignore-range"

    code, _, stderr = get(
        f"{tricky.url}/f", "-O", str(out / "f"), "--store", str(tmp_path / "s")
    )

    assert code == 0, stderr
    assert (out / "f").read_bytes() == data
    # The stat and one full-body GET.
    assert tricky.count("/f") == 2


def test_transient_server_errors_are_retried(
    tricky: TrickyOrigin, out: Path, tmp_path: Path
) -> None:
    tricky.content["/f"] = data = os.urandom(1000)
    tricky.behaviour["/f"] = "fail-once"
    assert (
        get(f"{tricky.url}/f", "-O", str(out / "f"), "--store", str(tmp_path / "s"))[0]
        == 0
    )
    assert (out / "f").read_bytes() == data


def test_redirects_are_followed_and_signed_urls_stay_out_of_the_task_id(
    tricky: TrickyOrigin, out: Path, tmp_path: Path
) -> None:
    tricky.content["/real"] = data = os.urandom(2000)
    tricky.behaviour["/start"] = "redirect:/real"
    code, stdout, _ = get(
        f"{tricky.url}/start",
        "-O",
        str(out / "f"),
        "--store",
        str(tmp_path / "s"),
        "--json",
    )
    assert code == 0
    assert (out / "f").read_bytes() == data
    assert json.loads(stdout)["task_id"] == dragonpy.task_id(f"{tricky.url}/start")


def test_unwritable_output_path(nginx: str, tmp_path: Path) -> None:
    code, _, stderr = get(
        f"{nginx}/small.bin", "-O", str(tmp_path / "missing-dir" / "f"),
        "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == dragonpy.OutputError.exit_code
    assert "missing-dir" in stderr


def test_output_path_that_is_a_directory(nginx: str, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    code, _, _ = get(
        f"{nginx}/small.bin", "-O", str(tmp_path / "d"), "--store", str(tmp_path / "s")
    )
    assert code in (dragonpy.OutputError.exit_code, 2)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk(nginx: str, tmp_path: Path) -> None:
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True
    )
    try:
        code, _, stderr = get(
            f"{nginx}/pieces.bin",
            "-O",
            str(small / "f"),
            "--store",
            str(tmp_path / "s"),
        )
        assert code == dragonpy.DiskFull.exit_code
        assert "no space left" in stderr
        assert os.listdir(small) == []

        # The store's disk full: refused before the transfer, nothing left behind.
        code, _, stderr = get(
            f"{nginx}/pieces.bin",
            "-O",
            str(tmp_path / "f"),
            "--store",
            str(small / "store"),
        )
        assert code == dragonpy.DiskFull.exit_code
        assert "no space left for the piece store" in stderr
        assert not (tmp_path / "f").exists()
    finally:
        dragonpy.open_store(small / "store").close()
        subprocess.run(["umount", str(small)], check=True)


def test_overall_timeout(nginx: str, out: Path, tmp_path: Path) -> None:
    code, _, stderr = get(
        f"{nginx}/pieces.bin", "-O", str(out / "f"), "--store", str(tmp_path / "s"),
        "--timeout", "0.000001",
    )  # fmt: skip
    assert code == dragonpy.DownloadTimeout.exit_code
    assert "--timeout" in stderr
    assert leftovers(out) == []


def test_bad_arguments_are_usage_errors(nginx: str, out: Path) -> None:
    assert (
        get(f"{nginx}/small.bin", "-O", str(out / "f"), "--digest", "md5:abc")[0] == 2
    )
    assert get(f"{nginx}/small.bin", "-O", str(out / "f"), "-H", "no-colon")[0] == 2
    assert get(f"{nginx}/small.bin")[0] == 2


def test_empty_file(nginx: str, out: Path, tmp_path: Path) -> None:
    assert (
        get(f"{nginx}/empty.bin", "-O", str(out / "e"), "--store", str(tmp_path / "s"))[
            0
        ]
        == 0
    )
    assert (out / "e").read_bytes() == b""


def test_sync_api_and_file_urls(origin_root: Path, out: Path, tmp_path: Path) -> None:
    result = dragonpy.download_sync(
        f"file://{origin_root}/pieces.bin", out / "f", store_dir=tmp_path / "s"
    )
    assert result.content_length == PIECES_BIN
    assert (out / "f").read_bytes() == (origin_root / "pieces.bin").read_bytes()


def test_progress_bar_keeps_stdout_clean(nginx: str, out: Path, tmp_path: Path) -> None:
    code, stdout, _ = get(
        f"{nginx}/pieces.bin", "-O", str(out / "f"), "--store", str(tmp_path / "s"),
        "--progress", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(stdout)["content_length"] == PIECES_BIN


def test_two_processes_share_one_store(
    nginx: str, origin_root: Path, out: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "s")
    command = [sys.executable, "-m", "dragonpy_cli", "get", f"{nginx}/big.bin"]
    first = subprocess.Popen([*command, "-O", str(out / "a"), "--store", store])
    second = subprocess.Popen([*command, "-O", str(out / "b"), "--store", store])

    assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0
    data = (origin_root / "big.bin").read_bytes()
    assert (out / "a").read_bytes() == data
    assert (out / "b").read_bytes() == data
    (task,) = dragonpy.open_store(store).list_tasks()
    assert task.task.complete
    assert task.stored_bytes == BIG_BIN


def test_one_log_line_per_download(
    nginx: str, out: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="dragonpy.download")
    store = tmp_path / "s"
    dragonpy.download_sync(f"{nginx}/small.bin", out / "a", store_dir=store)
    secret = nginx.replace("http://", "http://alice:secret-pw@")
    with pytest.raises(dragonpy.OriginStatusError):
        dragonpy.download_sync(f"{secret}/missing.bin", out / "b", store_dir=store)

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("download task succeeded task_id=")
    assert lines[1].startswith("download task failed task_id=")
    assert "404" in lines[1]
    assert "secret-pw" not in lines[1]


@pytest.fixture
def tls_nginx(origin_root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx over HTTPS with a certificate no system trusts; yields its URL and
    the certificate, to pass as ``--cacert``."""
    certificate = self_signed_certificate(tmp_path)
    with run_nginx(origin_root, tmp_path / "tls-nginx", certificate) as url:
        yield url, certificate[0]


def test_tls_is_verified_unless_told_otherwise(
    tls_nginx: tuple[str, Path], origin_root: Path, out: Path, tmp_path: Path
) -> None:
    url, ca_file = tls_nginx
    store = ["--store", str(tmp_path / "s")]
    expected = (origin_root / "pieces.bin").read_bytes()

    code, _, stderr = get(f"{url}/pieces.bin", "-O", str(out / "f"), *store)
    assert code == dragonpy.OriginUnreachable.exit_code
    assert "certificate verify failed" in stderr and "--cacert" in stderr
    assert leftovers(out) == [] and not (out / "f").exists()

    code, _, stderr = get(
        f"{url}/pieces.bin", "-O", str(out / "f"), *store, "--cacert", str(ca_file)
    )
    assert code == 0, stderr
    assert (out / "f").read_bytes() == expected

    # A new task (another tag), so the origin is asked again, without verification.
    code, _, stderr = get(
        f"{url}/pieces.bin", "-O", str(out / "g"), *store, "--insecure", "--tag", "v2"
    )
    assert code == 0, stderr
    assert (out / "g").read_bytes() == expected
