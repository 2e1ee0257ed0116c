"""Whole clusters on loopback: a scheduler, seeds and peers as real processes, nginx
as the origin, ``dragonpy get`` as the client. The origin's access log says how
many bytes it served; the rule under test is that it serves each byte once."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dragonpy import Piece, PieceStore, open_store
from dragonpy._handoff import control_socket_path

from .cluster import Cluster, Daemon, Scheduler, abandon, finish, origin_bytes, wait_for
from .origin import nginx_requests
from .test_output import NOT_FOR_A_DOWNLOAD, modules_loaded_by_get

pytestmark = pytest.mark.nginx

MIB = 1024 * 1024
PIECE = 4 * MIB


@pytest.fixture
def blob(origin_root: Path) -> Iterator[tuple[str, bytes]]:
    """A fresh 40 MiB + 5 file (11 pieces) under a name no other test uses."""
    name = f"cluster-{os.getpid()}-{time.monotonic_ns()}.bin"
    content = os.urandom(10 * PIECE + 5)
    (origin_root / name).write_bytes(content)
    yield name, content
    (origin_root / name).unlink()


def _get_all(
    daemons: list[Daemon], url: str, outputs: Path, *extra: str
) -> list[tuple[int, str]]:
    outputs.mkdir(exist_ok=True)
    started = [daemon.get(url, outputs / daemon.name, *extra) for daemon in daemons]
    return [finish(process) for process in started]


def _two_holders(
    cluster: Cluster, url: str, first: str, second: str
) -> tuple[Daemon, Daemon]:
    """A scheduler and two daemons that both hold ``url`` whole."""
    cluster.start_scheduler()
    daemons = [cluster.start_daemon(first), cluster.start_daemon(second)]
    results = _get_all(daemons, url, cluster.workdir / "holders")
    assert [code for code, _ in results] == [0, 0], results
    return daemons[0], daemons[1]


def _check_outputs(daemons: list[Daemon], outputs: Path, content: bytes) -> None:
    for daemon in daemons:
        assert (outputs / daemon.name).read_bytes() == content, daemon.name


@pytest.mark.parametrize("seeds", [0, 1])
def test_peers_at_once_fetch_the_origin_once(
    cluster: Cluster,
    nginx: str,
    nginx_dir: Path,
    blob: tuple[str, bytes],
    seeds: int,
) -> None:
    name, content = blob
    cluster.start_scheduler()
    seed_daemons = [cluster.start_daemon(f"seed{i}", seed=True) for i in range(seeds)]
    peers = [cluster.start_daemon(f"peer{i}") for i in range(4)]

    results = _get_all(peers, f"{nginx}/{name}", cluster.workdir / "out")

    assert all(code == 0 for code, _ in results), (results, cluster.logs())
    _check_outputs(peers, cluster.workdir / "out", content)
    # One 1-byte probe (Range: bytes=0-0) and every piece once.
    assert origin_bytes(nginx_dir, f"/{name}") == len(content) + 1, cluster.logs()
    from_origin = sum(
        daemon.metric("dragonpy_download_bytes_total", source="origin")
        for daemon in [*seed_daemons, *peers]
    )
    assert from_origin == len(content)
    if seeds:
        assert seed_daemons[0].metric("dragonpy_download_bytes_total", source="origin")
        from_seed = sum(
            peer.metric("dragonpy_download_bytes_total", source="seed")
            for peer in peers
        )
        assert from_seed > 0


def test_a_peer_joining_late_gets_everything_from_peers(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    cluster.start_scheduler()
    first = cluster.start_daemon("first")
    late = cluster.start_daemon("late")
    url = f"{nginx}/{name}"

    assert _get_all([first], url, cluster.workdir / "out")[0][0] == 0
    code, stderr = finish(late.get(url, cluster.workdir / "late.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "late.bin").read_bytes() == content
    assert late.metric("dragonpy_download_bytes_total", source="peer") == len(content)
    assert late.metric("dragonpy_download_bytes_total", source="origin") == 0
    assert first.metric("dragonpy_upload_pieces_total") == 11
    assert first.metric("dragonpy_upload_bytes_total") > len(content)  # + headers
    assert origin_bytes(nginx_dir, f"/{name}") == len(content) + 1


def test_busy_holders_send_children_elsewhere_not_to_the_origin(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/{name}"
    cluster.start_scheduler()
    # One piece sent at a time, slowly, and one waiting: four children's requests
    # at once are more than two holders admit, so some are answered busy.
    limits = ("--upload-capacity", "1", "--upload-rate", "16MiB")
    holders = [cluster.start_daemon(f"holder{n}", *limits) for n in (1, 2)]
    codes = [code for code, _ in _get_all(holders, url, cluster.workdir / "h")]
    assert codes == [0, 0]
    children = [cluster.start_daemon(f"child{n}") for n in range(4)]

    results = _get_all(children, url, cluster.workdir / "out")

    assert [code for code, _ in results] == [0] * 4, results
    _check_outputs(children, cluster.workdir / "out", content)
    assert sum(holder.metric("dragonpy_upload_busy_total") for holder in holders) > 0
    for child in children:
        assert child.metric("dragonpy_download_bytes_total", source="origin") == 0
    assert origin_bytes(nginx_dir, f"/{name}") == len(content) + 1


def test_get_reports_the_swarm_and_logs_one_line(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    cluster.start_scheduler()
    daemon = cluster.start_daemon("solo")

    process = daemon.get(f"{nginx}/{name}", cluster.workdir / "solo.bin")
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["bytes_from_origin"] == 0  # copied out of the daemon's store
    assert result["bytes_from_store"] == len(content)
    lines = [
        line
        for line in daemon.log_text().splitlines()
        if "download task succeeded" in line
    ]
    assert len(lines) == 1
    for field in ("task_id=", "peer_id=", "host_id=", f"bytes_origin={len(content)}"):
        assert field in lines[0]


def test_origin_failure_fails_every_peer_quickly(cluster: Cluster, nginx: str) -> None:
    cluster.start_scheduler()
    peers = [cluster.start_daemon(f"peer{i}") for i in range(3)]

    results = _get_all(peers, f"{nginx}/no-such-file.bin", cluster.workdir / "out")

    for code, stderr in results:
        assert code != 0
        assert "404" in stderr, stderr
    for peer in peers:
        assert not (cluster.workdir / "out" / peer.name).exists()


def test_a_parent_killed_mid_transfer(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    cluster.start_scheduler()
    fetcher = cluster.start_daemon("fetcher")
    doomed = cluster.start_daemon("doomed")
    child = cluster.start_daemon("child")
    url = f"{nginx}/slow/{name}"

    first = fetcher.get(url, cluster.workdir / "fetcher.bin")
    wait_for(lambda: _stored(fetcher) >= 1, "the fetcher's first piece")
    second = doomed.get(url, cluster.workdir / "doomed.bin")
    third = child.get(url, cluster.workdir / "child.bin")
    wait_for(lambda: _stored(child) >= 2, "the child's first pieces")
    doomed.kill()

    assert finish(first)[0] == 0
    code, stderr = finish(third)
    assert code == 0, stderr
    assert (cluster.workdir / "child.bin").read_bytes() == content
    abandon(second)


def test_a_parent_that_hangs_is_dropped(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/{name}"
    _, hung = _two_holders(cluster, url, "fetcher", "hung")
    child = cluster.start_daemon("child", "--piece-timeout=1")
    hung.freeze()  # the scheduler notices after its host TTL; the child before
    code, stderr = finish(child.get(url, cluster.workdir / "child.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "child.bin").read_bytes() == content
    assert child.metric("dragonpy_failures_total", kind="parent_unreachable") >= 1


def test_a_parent_serving_corrupt_bytes_is_blocked(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/{name}"
    _, liar = _two_holders(cluster, url, "honest", "liar")
    _corrupt_every_piece(liar.store)

    victim = cluster.start_daemon("victim")
    code, stderr = finish(victim.get(url, cluster.workdir / "victim.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "victim.bin").read_bytes() == content
    assert victim.metric("dragonpy_failures_total", kind="parent_corrupt") >= 1
    assert origin_bytes(nginx_dir, f"/{name}") == len(content) + 1


def test_the_fetcher_killed_hands_over_to_one_peer(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/slow/{name}"
    cluster.start_scheduler()
    # One origin request at a time: a takeover then costs at most the piece that
    # was in flight.
    fetcher = cluster.start_daemon("fetcher", "--origin-concurrency=1")
    peers = [
        cluster.start_daemon(f"peer{i}", "--origin-concurrency=1") for i in range(2)
    ]

    doomed = fetcher.get(url, cluster.workdir / "fetcher.bin")
    wait_for(lambda: _stored(fetcher) >= 2, "the fetcher's first pieces")
    rest = [peer.get(url, cluster.workdir / f"{peer.name}.bin") for peer in peers]
    wait_for(lambda: all(_stored(peer) >= 2 for peer in peers), "the peers' pieces")
    fetcher.kill()
    abandon(doomed)

    for peer, process in zip(peers, rest, strict=True):
        code, stderr = finish(process)
        assert code == 0, (stderr, cluster.logs())
        assert (cluster.workdir / f"{peer.name}.bin").read_bytes() == content
    served = origin_bytes(nginx_dir, f"/slow/{name}")
    # The file, two 1-byte probes (one per fetcher), and for the takeover: the piece
    # that was in flight, and the one the fetcher may have stored just before it
    # died, before any peer copied it. Two fetchers would fetch every piece left.
    assert served <= len(content) + 2 + 2 * PIECE, served


def test_a_range_read_gets_its_pieces_from_the_origin_first(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/slow/{name}"
    cluster.start_scheduler()
    fetcher = cluster.start_daemon("fetcher", "--origin-concurrency=1")
    reader = cluster.start_daemon("reader")
    whole = fetcher.get(url, cluster.workdir / "whole.bin")
    wait_for(lambda: _stored(fetcher) >= 1, "the fetcher's first piece")

    last = 9 * PIECE
    order = {"url": url, "first": [last + 10, last + 20]}
    with _control(reader) as control:
        answer = control.post("/downloads", json=order, timeout=120)

    assert answer.status_code == 200, answer.text
    assert finish(whole)[0] == 0
    assert (cluster.workdir / "whole.bin").read_bytes() == content
    ranges = [
        line.split()[2]
        for line in nginx_requests(nginx_dir, f"/slow/{name}")
        if "bytes=0-0" not in line
    ]
    wanted = f"bytes={last}-{last + PIECE - 1}"
    # Asked for while piece 0 or 1 was on its way: fetched right after it.
    assert wanted in ranges[:3], ranges
    assert len(ranges) == 11  # and still every piece once


def test_the_scheduler_restarts_mid_download(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    url = f"{nginx}/slow/{name}"
    scheduler = cluster.start_scheduler()
    peers = [cluster.start_daemon(f"peer{i}") for i in range(3)]

    started = [peer.get(url, cluster.workdir / f"{peer.name}.bin") for peer in peers]
    wait_for(lambda: all(_stored(peer) >= 1 for peer in peers), "first pieces")
    scheduler.kill()
    time.sleep(1)
    scheduler.start()

    for peer, process in zip(peers, started, strict=True):
        code, stderr = finish(process)
        assert code == 0, (stderr, cluster.logs())
        assert (cluster.workdir / f"{peer.name}.bin").read_bytes() == content
    assert origin_bytes(nginx_dir, f"/slow/{name}") <= len(content) + 2


def test_without_a_scheduler_a_daemon_is_a_cache(
    cluster: Cluster, nginx: str, nginx_dir: Path, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    daemon = cluster.start_daemon("alone")
    url = f"{nginx}/{name}"

    for attempt in range(2):
        code, stderr = finish(daemon.get(url, cluster.workdir / f"{attempt}.bin"))
        assert code == 0, stderr
        assert (cluster.workdir / f"{attempt}.bin").read_bytes() == content
    assert origin_bytes(nginx_dir, f"/{name}") == len(content) + 1


def test_get_finds_a_daemon_whose_store_is_too_deep_for_a_socket_inside(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    daemon = cluster.start_daemon("deep-" + "d" * 120)
    assert not control_socket_path(daemon.store).startswith(str(daemon.store))

    code, stderr = finish(daemon.get(f"{nginx}/{name}", cluster.workdir / "out.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "out.bin").read_bytes() == content
    assert daemon.metric("dragonpy_download_bytes_total", source="origin") == len(
        content
    )


def test_get_hands_over_to_a_daemon_without_loading_it(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    # Every node starts ``dragonpy get`` at once in a fan-out: its start-up is paid
    # on every node, so the hand-off imports neither the daemon's side nor an
    # HTTP client for its one request.
    name, content = blob
    daemon = cluster.start_daemon("handed")
    output = cluster.workdir / "out.bin"

    loaded = modules_loaded_by_get(
        f"{nginx}/{name}", "-O", str(output), f"--store={daemon.store}", "--quiet"
    )

    assert output.read_bytes() == content
    assert "dragonpy._handoff" in loaded
    assert loaded & (NOT_FOR_A_DOWNLOAD | {"httpx", "httpcore"}) == set()
    assert daemon.metric("dragonpy_download_bytes_total", source="origin") == len(
        content
    )


def test_get_goes_on_alone_when_its_daemon_dies(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    daemon = cluster.start_daemon("mortal")
    process = daemon.get(f"{nginx}/slow/{name}", cluster.workdir / "out.bin")
    wait_for(lambda: _stored(daemon) >= 1, "the daemon's first piece")
    daemon.kill()  # its socket file stays behind

    code, stderr = finish(process)
    assert code == 0, stderr
    assert "downloading without it" in stderr
    assert (cluster.workdir / "out.bin").read_bytes() == content

    code, stderr = finish(daemon.get(f"{nginx}/{name}", cluster.workdir / "again.bin"))
    assert code == 0 and stderr == ""  # a stale socket is no daemon


def test_an_unreachable_scheduler_sends_downloads_to_the_origin_loudly(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    cluster.scheduler = Scheduler(cluster.workdir)  # never started
    daemon = cluster.start_daemon("orphan")

    code, stderr = finish(daemon.get(f"{nginx}/{name}", cluster.workdir / "o.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "o.bin").read_bytes() == content
    assert (
        daemon.metric("dragonpy_back_to_source_total", reason="scheduler_unreachable")
        == 1
    )
    assert "WARNING" in daemon.log_text()


def test_a_download_waits_for_no_announce_when_the_scheduler_comes_up_late(
    cluster: Cluster, nginx: str, blob: tuple[str, bytes]
) -> None:
    name, content = blob
    cluster.scheduler = Scheduler(cluster.workdir)
    daemon = cluster.start_daemon("early")  # its first announce finds no scheduler
    cluster.scheduler.start()
    cluster.processes.append(cluster.scheduler)

    # Before the daemon's next announce (a keepalive later): the registration
    # itself tells the scheduler about the host.
    code, stderr = finish(daemon.get(f"{nginx}/{name}", cluster.workdir / "o.bin"))

    assert code == 0, stderr
    assert (cluster.workdir / "o.bin").read_bytes() == content
    fell_back = daemon.metric(
        "dragonpy_back_to_source_total", reason="scheduler_unreachable"
    )
    assert fell_back == 0


def test_bad_input_on_every_port(cluster: Cluster) -> None:
    scheduler = cluster.start_scheduler()
    daemon = cluster.start_daemon("target")
    base = f"http://{scheduler.address}"

    assert httpx.post(f"{base}/hosts", content=b"{not json").status_code == 400
    bad_field = httpx.post(f"{base}/hosts", content=b'{"id": 5}')
    assert bad_field.status_code == 400 and "HostAnnounce" in bad_field.text
    assert (
        httpx.post(
            f"{base}/peers",
            content=json.dumps(
                {
                    "peer_id": "p",
                    "host_id": "nobody",
                    "task_id": "t",
                    "url": "http://x/",
                }
            ),
        ).status_code
        == 404
    )
    assert httpx.get(f"{base}/peers/nobody/view").status_code == 404
    assert httpx.get(f"{base}/peers/p/view?since=x").status_code == 400
    huge = httpx.post(f"{base}/peers", content=b"x" * (5 * MIB))
    assert huge.status_code == 413
    assert httpx.get(f"{base}/nothing").status_code == 404
    assert httpx.delete(f"{base}/healthy").status_code == 405

    mirror = f"http://127.0.0.1:{daemon.proxy_port}"
    assert httpx.get(f"{mirror}/v2/").status_code == 400  # no upstream configured
    refused = httpx.get(f"{mirror}/v2/", headers={"X-Dragonfly-Registry": "http://x"})
    assert refused.status_code == 403

    health = f"http://127.0.0.1:{daemon.health_port}"
    assert httpx.get(f"{health}/elsewhere").status_code == 404
    with _control(daemon) as control:
        assert control.post("/downloads", content=b"[]").status_code == 400
        bad_digest = {"url": "http://x/", "digest": "md5:1"}
        assert control.post("/downloads", json=bad_digest).status_code == 400
        backwards = {"url": "http://x/", "first": [5, 1]}
        assert control.post("/downloads", json=backwards).status_code == 400

    for port in (
        scheduler.port,
        daemon.health_port,
        daemon.metrics_port,
        daemon.piece_port,
        daemon.proxy_port,
    ):
        _send_garbage(port)
    assert scheduler.alive and daemon.alive
    assert httpx.get(f"{health}/healthy").status_code == 200
    assert httpx.get(f"{base}/healthy").status_code == 200


def _control(daemon: Daemon) -> httpx.Client:
    """A client of the daemon's control socket."""
    uds = httpx.HTTPTransport(uds=control_socket_path(daemon.store))
    return httpx.Client(transport=uds, base_url="http://daemon")


def _send_garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\xff" * 4096 + b"\r\n\r\n")
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def _stored(daemon: Daemon) -> int:
    """Pieces held in a daemon's store, over all tasks (read from another process)."""
    if not (daemon.store / "data.mdb").exists():
        return 0
    store = open_store(daemon.store)
    return sum(task.stored_pieces for task in store.list_tasks())


def _corrupt_every_piece(directory: Path) -> None:
    """Flip bytes in every stored piece, keeping the digests: a lying parent."""
    store: PieceStore = open_store(directory)
    for stored in store.list_tasks():
        for number, digest in store.stored_pieces(stored.task.id).items():
            with store.read_piece(stored.task.id, number) as view:
                assert view is not None
                data = bytearray(view)
            data[0] ^= 0xFF
            piece = Piece(number, number * stored.task.piece_length, len(data), digest)
            store.put_pieces(stored.task.id, [(piece, data)])
