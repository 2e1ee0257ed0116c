"""The multi-host lab: hosts that reach each other, shaped links, clean teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netlab import Host, Lab, can_build_labs

pytestmark = pytest.mark.skipif(
    can_build_labs() is not None, reason=str(can_build_labs())
)

ROOT = Path(__file__).resolve().parents[1]
PORT = 5201


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab.open("dpt") as built:
        yield built


def goodput(sender: Host, receiver: Host, count: int) -> float:
    """Bits per second of ``count`` bytes from ``sender`` to ``receiver``."""
    python = [sys.executable, "-m", "tests._goodput"]
    listening = subprocess.Popen(
        ["ip", "netns", "exec", receiver.namespace, *python, "receive", str(PORT)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert listening.stdout is not None
    assert listening.stdout.readline().strip() == "listening"
    sent = sender.run(
        [*python, "send", receiver.ip, str(PORT), str(count)], timeout=120
    )
    assert sent.returncode == 0, sent.stderr
    received, seconds = listening.communicate(timeout=60)[0].split()
    assert int(received) == count
    return count * 8 / float(seconds)


def test_hosts_reach_each_other_and_count_their_traffic(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    count = 8 * 1024 * 1024

    goodput(a, b, count)

    assert a.traffic()[1] >= count  # sent, headers on top
    assert b.traffic()[0] >= count
    assert b.traffic()[1] < count // 10  # only acknowledgements went back


def test_a_shaped_uplink_limits_goodput(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    free = goodput(a, b, 8 * 1024 * 1024)

    a.shape(up_mbit=20, down_mbit=None)
    shaped = goodput(a, b, 4 * 1024 * 1024)

    # TCP through tbf gets about 0.8-0.95 of the rate; it can never beat it.
    assert shaped <= 20e6 * 1.05
    assert free > 2 * shaped


def test_a_shaped_downlink_limits_goodput(lab: Lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    b.shape(up_mbit=None, down_mbit=20)
    assert goodput(a, b, 4 * 1024 * 1024) <= 20e6 * 1.05


def start_lab_run(prefix: str) -> tuple[subprocess.Popen[str], list[str]]:
    """A process that opens lab ``prefix`` with hosts ``a`` (running ``sleep``) and
    ``b``, then waits; returned once ready, with the pids inside ``a``."""
    script = (
        "import time\n"
        "from tests.netlab import Lab\n"
        f"with Lab.open({prefix!r}) as lab:\n"
        "    lab.add_host('a').spawn(['sleep', '600'])\n"
        "    lab.add_host('b')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert run.stdout is not None
    assert run.stdout.readline().strip() == "ready"
    run.stdout.close()
    pids = subprocess.run(
        ["ip", "netns", "pids", f"{prefix}-a"], capture_output=True, text=True
    ).stdout.split()
    assert pids
    return run, pids


def test_a_killed_run_is_cleaned_up_by_the_next() -> None:
    run, sleeping = start_lab_run("dpk")

    run.kill()

    run.wait()
    assert sorted(Lab("dpk").leftovers()) == ["dpk-a", "dpk-b"]
    with Lab.open("dpk") as lab:
        assert lab.leftovers() == []
        lab.add_host("a")

    assert Lab("dpk").leftovers() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True)
    assert " dpk" not in links.stdout
    assert not any(Path(f"/proc/{pid}").exists() for pid in sleeping)


def test_a_terminated_run_cleans_up_after_itself() -> None:
    run, sleeping = start_lab_run("dps")

    run.terminate()

    assert run.wait(timeout=30) == 143
    assert Lab("dps").leftovers() == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in sleeping)


SYSTEM_PYTHON = "/usr/bin/python3"
TORRENT_CLIENT = [SYSTEM_PYTHON, str(ROOT / "benchmarks" / "_bittorrent.py")]


def has_libtorrent() -> bool:
    probe = [SYSTEM_PYTHON, "-c", "import libtorrent"]
    return Path(SYSTEM_PYTHON).exists() and subprocess.run(probe).returncode == 0


def wait_for(marker: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until ``marker`` exists (the client's readiness signal) or the client ends."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {marker.name} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.skipif(not has_libtorrent(), reason="python3-libtorrent is not installed")
def test_a_torrent_seeded_on_one_host_is_downloaded_on_another(
    lab: Lab, tmp_path: Path
) -> None:
    """The benchmark's BitTorrent contender: a v1 torrent with 1 MiB pieces, a
    seeder, and a leecher given the seeder's address."""
    seeder, leecher = lab.add_host("seeder"), lab.add_host("leecher")
    data = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "blob.bin").write_bytes(data)
    torrent, ready, done = tmp_path / "t.torrent", tmp_path / "ready", tmp_path / "done"
    created = subprocess.run(
        [*TORRENT_CLIENT, "create", str(tmp_path / "blob.bin"), str(torrent),
         "--piece-size=1048576"],
    )  # fmt: skip
    assert created.returncode == 0

    seeding = seeder.spawn(
        [*TORRENT_CLIENT, "seed", str(torrent), str(tmp_path),
         f"--listen={seeder.ip}:6881", f"--ready={ready}"],
    )  # fmt: skip
    wait_for(ready, seeding, timeout=30)
    leeching = leecher.spawn(
        [*TORRENT_CLIENT, "leech", str(torrent), str(tmp_path / "got"),
         f"--listen={leecher.ip}:6881", f"--done={done}",
         f"--peer={seeder.ip}:6881"],
    )  # fmt: skip
    wait_for(done, leeching, timeout=60)

    assert (tmp_path / "got" / "blob.bin").read_bytes() == data
    assert seeder.traffic()[1] >= len(data)
    leecher.stop_processes()
    assert leeching.returncode == 0  # stopped by SIGTERM, cleanly
