"""The contenders dragonpy is measured against besides direct pulls: a central
pull-through cache (nginx ``proxy_cache``) and a BitTorrent swarm (libtorrent);
and the lab that holds them all."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Final

from tests.netlab import Host, Lab

from _cluster import (
    ROOT,
    SYSTEM_PYTHON,
    TOPOLOGIES,
    WORKDIR,
    Contender,
    Direct,
    Dragonpy,
    measured_efficiency,
    shape_hosts,
    start_nginx,
    start_origin,
    stop,
)
from _origin import MIB, BenchmarkError

#: libtorrent's port on every host.
TORRENT_PORT: Final = 6881
#: The torrent's piece size: dragonpy's piece length for blobs of 64 MiB and more.
TORRENT_PIECE: Final = 4 * MIB
_CLIENT: Final = [SYSTEM_PYTHON, str(ROOT / "benchmarks" / "_bittorrent.py")]

# Waiting requests for an object being fetched wait for all of it (nginx checks the
# lock every 500 ms); the timeouts are long so that no request goes around the lock
# to the origin, which nginx does, uncached, once they expire (5 s by default).
_CACHE_HTTP: Final = """\
    proxy_cache_path {prefix} levels=1:2 keys_zone=blobs:1m max_size=8g
                     inactive=1h use_temp_path=off;"""
_CACHE_SERVER: Final = """\
        location / {{
            proxy_pass {origin};
            proxy_http_version 1.1;
            proxy_cache blobs;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 1h;
            proxy_cache_lock_age 1h;
        }}"""


class CentralCache(Contender):
    """Every peer pulls through one nginx ``proxy_cache`` host in front of the
    origin; concurrent misses share one upstream request (``proxy_cache_lock``).

    The cache host's link is shaped by the caller. A central cache is a server in
    the data center, so it gets the fastest link in the topology for its uplink
    (the peers' download rate, or the origin's when that is faster) and an
    unshaped downlink: it is never slower than one peer, and its uplink is shared
    by all of them.
    """

    name = "central cache"

    def __init__(self, origin: Host, cache: Host, url: str) -> None:
        self.source = origin
        self.cache = cache
        self.relays = [cache]
        self.origin_url = url
        self.url = ""

    @contextmanager
    def _serving(self) -> Iterator[None]:
        base, _, path = self.origin_url.partition("//")[2].partition("/")
        cache_dir = WORKDIR / "cache-store"
        subprocess.run(["rm", "-rf", str(cache_dir)], check=True)
        cache_dir.mkdir(parents=True)
        started = start_nginx(
            self.cache,
            "cache",
            http=_CACHE_HTTP.format(prefix=cache_dir),
            server=_CACHE_SERVER.format(origin=f"http://{base}"),
        )
        self.url = f"{started}/{path}"
        try:
            yield
        finally:
            # Waited for here, so its CPU counts for this contender.
            for process in self.cache.processes:
                stop(process)
            self.cache.processes.clear()

    def running(self, peers: list[Host]) -> AbstractContextManager[None]:
        return self._serving()

    def spawn(self, peer: Host) -> subprocess.Popen[bytes]:
        return peer.spawn(["curl", "-sf", "-o", str(self.output(peer)), self.url])


def make_torrent(blob: Path, torrent: Path, piece_size: int = TORRENT_PIECE) -> None:
    """A v1 .torrent of ``blob``, made by libtorrent."""
    argv = [*_CLIENT, "create", str(blob), str(torrent), f"--piece-size={piece_size}"]
    made = subprocess.run(argv, capture_output=True, text=True)
    if made.returncode != 0:
        raise BenchmarkError(f"making the torrent failed: {made.stderr}")


class BitTorrent(Contender):
    """A libtorrent swarm of the same peers, seeded by ``seeder`` (a host with the
    origin's uplink) that holds the blob, with libtorrent's high-performance seed
    settings, optionally super-seeding. Each leecher is told every other peer's
    address, so no tracker is needed."""

    def __init__(self, seeder: Host, blob: Path, *, super_seed: bool) -> None:
        self.name = "bittorrent super-seed" if super_seed else "bittorrent"
        self.source = seeder
        self.blob = blob
        self.super_seed = super_seed
        self.folder = WORKDIR / "bittorrent"
        self.torrent = self.folder / "blob.torrent"
        self.peers: list[Host] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @contextmanager
    def _seeding(self, peers: list[Host]) -> Iterator[None]:
        subprocess.run(["rm", "-rf", str(self.folder)], check=True)
        self.folder.mkdir(parents=True)
        make_torrent(self.blob, self.torrent)
        self.peers = peers
        ready = self.folder / "seeder.ready"
        argv = [
            *_CLIENT, "seed", str(self.torrent), str(self.blob.parent),
            f"--listen={self.source.ip}:{TORRENT_PORT}", f"--ready={ready}",
        ]  # fmt: skip
        if self.super_seed:
            argv.append("--super-seed")
        log = WORKDIR / "bittorrent-seeder.log"
        self.processes = [self.source.spawn(argv, log=log)]
        try:
            _wait_for(ready, self.processes[0])
            yield
        finally:
            # Waited for here, so their CPU counts for this contender.
            for process in self.processes:
                stop(process)

    def running(self, peers: list[Host]) -> AbstractContextManager[None]:
        return self._seeding(peers)

    def spawn(self, peer: Host) -> subprocess.Popen[bytes]:
        others = [p for p in [self.source, *self.peers] if p is not peer]
        argv = [
            *_CLIENT, "leech", str(self.torrent), str(self.folder / peer.name),
            f"--listen={peer.ip}:{TORRENT_PORT}", f"--done={self._marker(peer)}",
            *(f"--peer={other.ip}:{TORRENT_PORT}" for other in others),
        ]  # fmt: skip
        process = peer.spawn(argv, log=WORKDIR / f"bittorrent-{peer.name}.log")
        self.processes.append(process)
        return process

    def done(self, peer: Host, process: subprocess.Popen[bytes]) -> bool:
        if self._marker(peer).exists():
            return True
        if process.poll() is not None:
            raise BenchmarkError(f"{self.name} on {peer.name}: exited early")
        return False

    def output(self, peer: Host) -> Path:
        return self.folder / peer.name / self.blob.name

    def _marker(self, peer: Host) -> Path:
        return self.folder / f"{peer.name}.done"


def _wait_for(marker: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchmarkError("the seeder did not start: see bittorrent-seeder.log")
        time.sleep(0.02)


#: Contender names, as the scripts' ``--contenders`` take them.
CONTENDERS: Final = (
    "dragonpy",
    "dragonpy-seed",
    "direct",
    "cache",
    "bittorrent",
    "bittorrent-super",
)


class FanOutLab:
    """An origin (nginx serving the blob), a scheduler, a cache host, a BitTorrent
    seeder and ``peers`` peers, shaped for ``topology``; every contender, by name.

    ``efficiency`` is the goodput of a tbf-shaped link over its nominal rate,
    measured on this lab before the shaping.
    """

    def __init__(
        self,
        lab: Lab,
        topology: str,
        peers: int,
        blob: Path,
        cache_uplink: float | None = None,
    ) -> None:
        nominal = TOPOLOGIES[topology]
        self.origin = lab.add_host("origin")
        scheduler = lab.add_host("sched")
        cache = lab.add_host("cache")
        seeder = lab.add_host("seeder")
        self.peers = [lab.add_host(f"peer{n}") for n in range(peers)]
        self.efficiency = measured_efficiency(self.peers[0], self.peers[1])
        # Shaping is set after the probe: the probe replaced peer0's uplink.
        shape_hosts(topology, self.origin, self.peers)
        seeder.shape(up_mbit=nominal[0], down_mbit=None)
        cache.shape(up_mbit=cache_uplink or max(nominal), down_mbit=None)
        self.url = start_origin(self.origin, blob)
        self.contenders: dict[str, Contender] = {
            "dragonpy": Dragonpy(self.origin, scheduler, self.url),
            "dragonpy-seed": Dragonpy(self.origin, scheduler, self.url, seeder),
            "direct": Direct(self.origin, self.url),
            "cache": CentralCache(self.origin, cache, self.url),
            "bittorrent": BitTorrent(seeder, blob, super_seed=False),
            "bittorrent-super": BitTorrent(seeder, blob, super_seed=True),
        }

    def goodput(self, topology: str) -> Sequence[float]:
        """(origin up, peer up, peer down) in Mbit/s of TCP goodput."""
        return [rate * self.efficiency for rate in TOPOLOGIES[topology]]
