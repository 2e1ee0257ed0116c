"""Scheduling decisions per second, and their latency, in one process on one core.

A swarm is simulated against the scheduler's core on a fake clock: tasks of 4 to 64
pieces, peers spread over them unevenly (a few hot tasks, a long tail), on hosts
some of which are seeds. Peers register in a random order, seeds answer their
triggers, then every quarter of a simulated second (one ``tick``) each peer whose
task changed asks for its view, takes a few pieces from its parents (the fetcher
from the origin) and reports them. Some parents fail, some hosts leave and some go
silent. A *decision* is one ``register_peer()`` or ``view()``; each is timed alone.

    PYTHONPATH=src python benchmarks/scheduler_sim.py [--tasks 1000] [--peers 10000]

Prints a Markdown table. The design's targets (>= 5000 decisions/s, p99 <= 10 ms)
are reported, not asserted.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from _origin import markdown_table
from dragonpy._scheduler import (
    FailureKind,
    HostAnnounce,
    ParentFailure,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceInfo,
    PieceReport,
    ReportedPiece,
    Role,
    Scheduler,
    SchedulerConfig,
    UnknownPeer,
)

T = TypeVar("T")

PIECE_LENGTH: Final = 4 * 1024 * 1024
TICK: Final = 0.25
KEEPALIVE_TICKS: Final = 20
#: A host dies this often, until ``--host-deaths`` have.
DEATH_TICKS: Final = 8
#: Registrations arrive this fast at the start: 2000 a second.
REGISTERED_PER_TICK: Final = 500
#: Pieces a peer takes per tick (32 MiB/s), so a task takes a few seconds.
BATCH: Final = 2
#: Chance that a report also says a parent did not hold a piece.
MISSING_RATE: Final = 0.01
TARGET_RATE: Final = 5000.0
TARGET_P99_MS: Final = 10.0
MAX_TICKS: Final = 2000


@dataclass
class SimPeer:
    id: str
    host_id: str
    task_id: str
    held: set[int] = field(default_factory=set)
    version: int = -1
    # What it keeps of its last view. Views themselves are dropped, as a server
    # drops them once sent, so that they do not weigh on the garbage collector.
    role: Role | None = None
    content_length: int | None = None
    parents: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    demanded: tuple[int, ...] = ()
    done: bool = False


@dataclass
class Timings:
    """Nanoseconds per call, by kind."""

    calls: dict[str, list[int]] = field(default_factory=dict)

    def timed(self, kind: str, call: Callable[[], T]) -> T:
        started = time.perf_counter_ns()
        try:
            return call()
        finally:
            elapsed = time.perf_counter_ns() - started
            self.calls.setdefault(kind, []).append(elapsed)


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.random_seed)
        self.now = 0.0
        self.scheduler = Scheduler(
            SchedulerConfig(), clock=self.clock, random=random.Random(args.random_seed)
        )
        self.timings = Timings()
        self.seeds = [f"s{n}" for n in range(args.seeds)]
        self.normal_hosts = [f"h{n}" for n in range(args.hosts - args.seeds)]
        self.hosts = self.normal_hosts + self.seeds
        self.dead: set[str] = set()
        self.piece_counts = {
            f"t{n}": self.rng.randint(4, 64) for n in range(args.tasks)
        }
        self.peers = self._place_peers(args.peers)
        self.host_deaths = args.host_deaths
        self.ticks = 0

    def clock(self) -> float:
        return self.now

    def run(self) -> None:
        """Everything, in simulated time."""
        for host_id in self.hosts:
            self._announce(host_id)
        order = list(self.peers.values())
        self.rng.shuffle(order)
        for n, peer in enumerate(order):
            if not peer.done:  # its host died before it could start
                self._register(peer)
            if n % REGISTERED_PER_TICK == REGISTERED_PER_TICK - 1:
                self._tick()
        while self.ticks < MAX_TICKS and any(not p.done for p in self.peers.values()):
            self._tick()

    # Set-up

    def _place_peers(self, count: int) -> dict[str, SimPeer]:
        """Peers over tasks by a Zipf-like law, never two of a task on one host."""
        tasks = list(self.piece_counts)
        weights = [1 / (rank + 1) ** 0.9 for rank in range(len(tasks))]
        taken: set[tuple[str, str]] = set()
        peers: dict[str, SimPeer] = {}
        for task_id in self.rng.choices(tasks, weights, k=count):
            host_id = self.rng.choice(self.normal_hosts)
            while (host_id, task_id) in taken:
                host_id = self.rng.choice(self.normal_hosts)
            taken.add((host_id, task_id))
            peer = SimPeer(f"p{len(peers)}", host_id, task_id)
            peers[peer.id] = peer
        return peers

    def _announce(self, host_id: str) -> None:
        n = self.hosts.index(host_id)
        self.scheduler.announce_host(
            HostAnnounce(
                id=host_id,
                hostname=host_id,
                ip=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                piece_port=4000,
                seed=host_id in self.seeds,
                idc=f"idc{n % 4}",
                location=f"cn|r{n % 4}|c{n % 16}|z{n % 64}|k{n}",
            )
        )

    def _register(self, peer: SimPeer, *, resumed: bool = False) -> None:
        count = self.piece_counts[peer.task_id]
        request = PeerRegister(
            peer_id=peer.id,
            host_id=peer.host_id,
            task_id=peer.task_id,
            url=f"https://registry.test/v2/app/blobs/{peer.task_id}",
            content_length=self._content_length(count) if peer.held else None,
            piece_length=PIECE_LENGTH if peer.held else None,
            wanted=[self.rng.randrange(count)] if self.rng.random() < 0.2 else [],
            held=[PieceInfo(number, _digest(number)) for number in sorted(peer.held)],
            resumed=resumed,
        )
        register = self.scheduler.register_peer
        view = self.timings.timed("register", lambda: register(request))
        self._accept(peer, view)

    # One tick of simulated time

    def _tick(self) -> None:
        self.ticks += 1
        self.now += TICK
        self.timings.timed("tick", self.scheduler.tick)
        if self.ticks % KEEPALIVE_TICKS == 0:
            for host_id in self.hosts:
                if host_id not in self.dead:
                    self._announce(host_id)
        if self.ticks % DEATH_TICKS == 0 and self.host_deaths > 0:
            self._kill_a_host(silently=self.ticks % (2 * DEATH_TICKS) == 0)
        self._answer_triggers()
        active = [p for p in self.peers.values() if p.role and not p.done]
        self.rng.shuffle(active)
        for peer in active:
            self._step(peer)

    def _kill_a_host(self, *, silently: bool) -> None:
        """A normal host dies: told (leave_host) or not (it stops announcing)."""
        self.host_deaths -= 1
        host_id = self.rng.choice(self.normal_hosts)
        if host_id in self.dead:
            return
        self.dead.add(host_id)
        if not silently:
            self.timings.timed("leave_host", lambda: self.scheduler.leave_host(host_id))
        for peer in self.peers.values():
            if peer.host_id == host_id:
                peer.done = True

    def _answer_triggers(self) -> None:
        for seed in self.seeds:
            for trigger in self.scheduler.take_triggers(seed):
                peer_id = f"{seed}-{trigger.task_id}"
                if peer_id not in self.peers:
                    peer = SimPeer(peer_id, seed, trigger.task_id)
                    self.peers[peer_id] = peer
                    self._register(peer)

    def _step(self, peer: SimPeer) -> None:
        try:
            if self.scheduler.version(peer.id) != peer.version:
                view = self.timings.timed("view", lambda: self.scheduler.view(peer.id))
                self._accept(peer, view)
            self._download(peer)
        except UnknownPeer:
            # Its host was declared gone while it still runs: as a daemon does,
            # announce again and register what it holds.
            self._announce(peer.host_id)
            self._register(peer, resumed=True)

    def _accept(self, peer: SimPeer, view: PeerView) -> None:
        peer.version = view.version
        peer.role = view.role
        peer.content_length = view.content_length
        peer.parents = [(p.peer_id, p.host_id, tuple(p.pieces)) for p in view.parents]
        peer.demanded = tuple(view.demanded)
        if view.role is Role.FAILED:
            peer.done = True

    def _download(self, peer: SimPeer) -> None:
        if peer.content_length is None and peer.role is Role.CHILD:
            return
        count = self.piece_counts[peer.task_id]
        report = self._take_pieces(peer, count)
        if report is not None:
            self.timings.timed("report", lambda: self.scheduler.report(peer.id, report))
        if len(peer.held) == count:
            finished = PeerFinished(True)
            self.timings.timed(
                "finish", lambda: self.scheduler.finish(peer.id, finished)
            )
            peer.done = True

    def _take_pieces(self, peer: SimPeer, count: int) -> PieceReport | None:
        """Up to ``BATCH`` pieces: from parents that hold them, else (the fetcher
        only) from the origin."""
        holders: dict[int, list[str]] = {}
        for parent_id, _, numbers in peer.parents:
            for number in numbers:
                if number not in peer.held:
                    holders.setdefault(number, []).append(parent_id)
        fetching = peer.role is Role.FETCHER
        order = [*peer.demanded, *range(count)] if fetching else sorted(holders)
        taken: list[ReportedPiece] = []
        for number in order:
            if len(taken) == BATCH:
                break
            if number in peer.held or any(p.number == number for p in taken):
                continue
            if number in holders:
                parent: str | None = self.rng.choice(holders[number])
            elif fetching:
                parent = None
            else:
                continue
            cost = self.rng.uniform(0.05, 0.5)
            taken.append(ReportedPiece(number, _digest(number), parent, cost))
        failures = self._failures(peer)
        if not taken and not failures:
            return None
        peer.held.update(piece.number for piece in taken)
        lengths = fetching and peer.content_length is None
        return PieceReport(
            pieces=taken,
            failures=failures,
            content_length=self._content_length(count) if lengths else None,
            piece_length=PIECE_LENGTH if lengths else None,
        )

    def _failures(self, peer: SimPeer) -> list[ParentFailure]:
        """Parents on dead hosts cannot be reached; now and then one that is alive
        says it does not hold a piece after all."""
        failures = [
            ParentFailure(parent_id, 0, FailureKind.UNREACHABLE)
            for parent_id, host_id, _ in peer.parents
            if host_id in self.dead
        ]
        if peer.parents and self.rng.random() < MISSING_RATE:
            parent_id = self.rng.choice(peer.parents)[0]
            failures.append(ParentFailure(parent_id, 0, FailureKind.MISSING))
        return failures

    @staticmethod
    def _content_length(count: int) -> int:
        return (count - 1) * PIECE_LENGTH + 1


def _digest(number: int) -> str:
    return f"blake3:{number:064x}"


@dataclass(frozen=True)
class Summary:
    count: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, nanoseconds: list[int]) -> Summary:
        ordered = sorted(nanoseconds)

        def percentile(fraction: float) -> float:
            return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] / 1e6

        seconds = sum(ordered) / 1e9
        return cls(
            count=len(ordered),
            per_second=len(ordered) / seconds if seconds else math.inf,
            p50_ms=percentile(0.5),
            p99_ms=percentile(0.99),
            max_ms=ordered[-1] / 1e6,
        )

    def row(self, name: str) -> list[str]:
        return [
            name,
            str(self.count),
            f"{self.per_second:,.0f}",
            f"{self.p50_ms:.3f}",
            f"{self.p99_ms:.3f}",
            f"{self.max_ms:.2f}",
        ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--host-deaths", type=int, default=10)
    parser.add_argument("--random-seed", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.tasks, args.peers, args.hosts) < 1 or args.seeds >= args.hosts:
        parser.error("--tasks, --peers, --hosts must be positive, --seeds < --hosts")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    simulation = Simulation(args)
    started = time.perf_counter()
    simulation.run()
    wall = time.perf_counter() - started

    calls = simulation.timings.calls
    decisions = Summary.of(calls.get("register", []) + calls.get("view", []))
    headers = ["call", "count", "per second", "p50 ms", "p99 ms", "max ms"]
    rows = [decisions.row("decisions")]
    rows += [Summary.of(values).row(kind) for kind, values in sorted(calls.items())]
    statistics = simulation.scheduler.statistics()
    unfinished = sum(not p.done for p in simulation.peers.values())
    swarmed = {peer.task_id for peer in simulation.peers.values()}
    total_pieces = sum(simulation.piece_counts[task_id] for task_id in swarmed)

    print(
        f"{args.tasks} tasks, {len(simulation.peers)} peers (the seeds' with them) "
        f"on {args.hosts} hosts ({args.seeds} seeds), {simulation.ticks} ticks of "
        f"{TICK} s, {wall:.1f} s of wall time; per second = calls / time in them"
    )
    print(markdown_table(headers, rows))
    print()
    print(
        f"pieces from the origin: {statistics['pieces_from_origin']} for the "
        f"{total_pieces} pieces of the {len(swarmed)} tasks asked for "
        f"({statistics['origin_repeats']} fetched again); from peers: "
        f"{statistics['pieces_from_peers']}; peers unfinished: {unfinished}"
    )
    met = decisions.per_second >= TARGET_RATE and decisions.p99_ms <= TARGET_P99_MS
    print(
        f"target >= {TARGET_RATE:.0f} decisions/s and p99 <= {TARGET_P99_MS} ms: "
        + ("met" if met else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
