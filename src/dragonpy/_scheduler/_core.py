"""The scheduler's core: who fetches each task from the origin, and who feeds whom.

It is pure and synchronous: no I/O, no sleeping, time read from an injected clock.
The HTTP server around it calls ``tick()`` a few times a second for what depends on
time, and turns ``on_change`` and ``on_trigger`` into wake-ups for its long polls.
``docs/scheduler.md`` describes the rules. The errors (defined in ``_model``)::

    SchedulerError (ValueError)   a message that cannot be true of its task
    ├── UnknownHost               the host is not announced, or is gone
    └── UnknownPeer               the peer is not registered, or is gone
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from random import Random
from typing import Final, TypeVar

import attrs

from ._evaluator import Evaluator
from ._messages import (
    AnnounceReply,
    FailureKind,
    HostAnnounce,
    ParentFailure,
    ParentInfo,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceReport,
    Priority,
    ReportedPiece,
    Role,
    SeedTrigger,
)
from ._model import (
    Host,
    Offer,
    Peer,
    SchedulerError,
    Task,
    UnknownHost,
    UnknownPeer,
    check_announce,
    check_registration,
    check_report,
    mask_of,
    numbers_of,
)

__all__ = [
    "Scheduler",
    "SchedulerConfig",
    "SchedulerError",
    "UnknownHost",
    "UnknownPeer",
]

logger = logging.getLogger("dragonpy.scheduler")

#: Distinct hosts that must find a host unreachable before it counts as gone.
UNREACHABLE_QUORUM: Final = 2

Living = TypeVar("Living", Host, Peer)


def _positive(name: str, value: float) -> None:
    if not value > 0:  # refuses NaN too
        raise ValueError(f"SchedulerConfig.{name} must be positive, got {value!r}")


@attrs.frozen
class SchedulerConfig:
    """Timings (in seconds) and limits of a scheduler."""

    #: Hosts announce themselves again this often (``AnnounceReply.keepalive``).
    keepalive: float = 5.0
    #: A host silent this long is gone, and its peers with it.
    host_ttl: float = 15.0
    #: Parents given to each child.
    parent_limit: int = 8
    #: A seed asked to fetch a task that has not registered by then is given up on,
    #: and one of the task's peers fetches instead.
    seed_timeout: float = 5.0
    #: After the scheduler starts, resumed peers wait this long for their old
    #: fetcher to register again before another one is chosen.
    restart_grace: float = 10.0
    #: A peer that has said nothing for this long is gone.
    peer_ttl: float = 3600.0
    #: Sole pieces a holder sends at once, each to one child.
    offers_per_holder: int = 2
    #: A child that has not taken an offered piece by then loses the offer to
    #: another child.
    offer_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        _positive("keepalive", self.keepalive)
        _positive("host_ttl", self.host_ttl)
        _positive("seed_timeout", self.seed_timeout)
        _positive("peer_ttl", self.peer_ttl)
        _positive("offer_timeout", self.offer_timeout)
        if not self.restart_grace >= 0:
            raise ValueError(
                "SchedulerConfig.restart_grace must not be negative, "
                f"got {self.restart_grace!r}"
            )
        if self.host_ttl <= self.keepalive:
            raise ValueError(
                f"SchedulerConfig.host_ttl ({self.host_ttl}) must be longer than "
                f"keepalive ({self.keepalive}), or hosts expire between announcements"
            )
        for name in ("parent_limit", "offers_per_holder"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"SchedulerConfig.{name} must be at least 1, "
                    f"got {getattr(self, name)!r}"
                )


DEFAULT_CONFIG: Final = SchedulerConfig()


def _ignore(key: str) -> None:
    """The default ``on_change`` and ``on_trigger``."""


class Scheduler:
    """Hosts, tasks and peers of one scheduler, and every decision about them.

    ``on_change(task_id)`` is called once a task's version has grown: some view of
    its peers may have changed. ``on_trigger(host_id)`` is called once a seed host
    has a trigger to take. ``random`` samples parent candidates in large swarms.
    """

    def __init__(
        self,
        config: SchedulerConfig = DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.monotonic,
        random: Random | None = None,
        on_change: Callable[[str], None] = _ignore,
        on_trigger: Callable[[str], None] = _ignore,
    ) -> None:
        self._config = config
        self._clock = clock
        self._random = random if random is not None else Random()
        self._on_change = on_change
        self._on_trigger = on_trigger
        self._evaluator = Evaluator(config.parent_limit, self._random)
        # Hosts and peers are kept in the order of their last sign of life, so that
        # expiry looks only at the head of each dict.
        self._hosts: dict[str, Host] = {}
        self._peers: dict[str, Peer] = {}
        self._seeds: dict[str, Host] = {}
        self._tasks: dict[str, Task] = {}
        # Tasks waiting for a triggered seed, and for resumed peers' old fetcher.
        self._awaiting_seed: dict[Task, None] = {}
        self._awaiting_grace: dict[Task, None] = {}
        self._grace_ends = clock() + config.restart_grace
        self._last_seq = 0
        self._last_version = 0
        # What the current call changed, published as it returns.
        self._changed: dict[Task, None] = {}
        self._triggered: list[str] = []
        self._from_origin = 0
        self._from_peers = 0
        self._origin_repeats = 0
        # Decisions that send someone to the origin, for metrics.
        self._fetchers_chosen = 0
        self._seed_triggers = 0
        self._promotions = 0

    # Hosts

    def announce_host(self, announce: HostAnnounce) -> AnnounceReply:
        """Add or refresh a host; it must announce again within ``keepalive``."""
        check_announce(announce)
        host = self._hosts.get(announce.id)
        if host is None:
            host = Host(announce, self._clock())
            self._hosts[host.id] = host
        elif host.update(announce):
            for peer in host.peers.values():
                self._change(peer.task)
        self._touch_host(host)
        # A finished peer says nothing more, but serves for as long as its host
        # lives: the host's announce keeps it.
        for peer in host.peers.values():
            if peer.finished:
                self._touch_peer(peer)
        if host.seed:
            self._seeds[host.id] = host
        else:
            self._seeds.pop(host.id, None)
        self._publish()
        return AnnounceReply(self._config.keepalive)

    def leave_host(self, host_id: str) -> None:
        """The host's daemon stops: its peers leave with it."""
        self._remove_hosts([self._host(host_id)], "it left")
        self._publish()

    def take_triggers(self, host_id: str) -> list[SeedTrigger]:
        """The triggers queued for a seed host, which are now its to act on."""
        host = self._host(host_id)
        triggers, host.triggers = host.triggers, []
        return triggers

    # Peers

    def register_peer(self, request: PeerRegister) -> PeerView:
        """Add a peer (or replace its previous registration) and return its view."""
        host = self._host(request.host_id)
        task = self._tasks.get(request.task_id)
        if task is None:
            task = Task(request)
        check_registration(task, request)

        if request.priority is Priority.PEERS_ONLY and self._needs_fetcher(task):
            raise SchedulerError(
                f"task {task.id}: no peer holds, fetches or seeds it, and priority 2 "
                "takes pieces from peers only"
            )

        replaced = self._peers.get(request.replaces or "")
        if replaced is not None and replaced.host is host and replaced.task is task:
            self._drop_peer(replaced)

        held = mask_of([piece.number for piece in request.held])
        previous = self._peers.get(request.peer_id)
        kept_fetcher = False
        if previous is not None:
            if previous.task is task:
                held |= previous.held
                kept_fetcher = previous is task.fetcher
            self._drop_peer(previous)
            if previous.task is not task:
                self._settle(previous.task)

        peer = self._add_peer(request, task, host, held)
        if kept_fetcher:
            self._set_fetcher(task, peer)
        else:
            self._elect_on_register(task, peer, request)
        self._publish()
        view = self._view_of(peer)
        self._publish()
        return view

    def view(self, peer_id: str) -> PeerView:
        """What the peer should do now; choosing its parents keeps them as edges."""
        peer = self._peer(peer_id)
        self._touch_peer(peer)
        view = self._view_of(peer)
        self._publish()
        return view

    def version(self, peer_id: str) -> int:
        """The version ``view(peer_id)`` would carry, without computing the view."""
        return self._peer(peer_id).task.version

    def report(self, peer_id: str, report: PieceReport) -> None:
        """Pieces the peer now holds, and parents that failed it."""
        peer = self._peer(peer_id)
        task = peer.task
        check_report(task, report)
        self._touch_peer(peer)
        if task.set_lengths(report.content_length, report.piece_length):
            self._change(task)
        if report.wanted is not None:
            peer.want(report.wanted)
            self._change(task)
        self._take_pieces(peer, report.pieces)
        gone = [
            host
            for failure in report.failures
            if (host := self._parent_failed(peer, failure)) is not None
        ]
        if gone:
            self._remove_hosts(gone, f"{UNREACHABLE_QUORUM} hosts could not reach it")
        self._publish()

    def finish(self, peer_id: str, finished: PeerFinished) -> None:
        """The peer's download ended.

        A success leaves the peer as a parent holding the whole task; a partial one
        (a range read) as a parent of the pieces it holds. The fetcher's
        failure at the origin (a reason starting with ``origin:``) fails the task for
        every peer; any other failure concerns the peer alone, which leaves.
        """
        peer = self._peer(peer_id)
        task = peer.task
        self._touch_peer(peer)
        if finished.success and finished.partial:
            self._retire(peer)
        elif finished.success:
            self._complete(peer)
        elif peer is task.fetcher and finished.reason.startswith("origin:"):
            self._fail(task, finished.reason)
        else:
            self._drop_peer(peer)
        self._settle(task)
        self._publish()

    def leave_peer(self, peer_id: str) -> None:
        """The peer is done with the task; it is no longer anyone's parent."""
        peer = self._peer(peer_id)
        self._drop_peer(peer)
        self._settle(peer.task)
        self._publish()

    # Time

    def tick(self) -> None:
        """Act on time: silent hosts and peers, late seeds, the end of the grace."""
        now = self._clock()
        silent_hosts = _silent(self._hosts.values(), now - self._config.host_ttl)
        self._remove_hosts(silent_hosts, "it went silent")
        self._expire_peers(_silent(self._peers.values(), now - self._config.peer_ttl))
        self._expire_seed_waits(now)
        if now >= self._grace_ends:
            self._end_grace()
        for task in self._tasks.values():
            if any(offer.deadline <= now for offer in task.offers.values()):
                self._change(task)
        self._publish()

    def statistics(self) -> dict[str, int]:
        fetchers = sum(task.fetcher is not None for task in self._tasks.values())
        return {
            "hosts": len(self._hosts),
            "seeds": len(self._seeds),
            "tasks": len(self._tasks),
            "peers": len(self._peers),
            "fetchers": fetchers,
            "pieces_from_origin": self._from_origin,
            "pieces_from_peers": self._from_peers,
            # Pieces fetched from the origin for a task that had already had them
            # from it: what a single fetcher per task is there to keep at zero.
            "origin_repeats": self._origin_repeats,
            # Peers made fetchers (promotions included), seeds asked to fetch, and
            # peers that took over from a fetcher or seed that went away.
            "fetchers_chosen": self._fetchers_chosen,
            "seed_triggers": self._seed_triggers,
            "promotions": self._promotions,
        }

    # Lookups and liveness

    def _host(self, host_id: str) -> Host:
        host = self._hosts.get(host_id)
        if host is None:
            raise UnknownHost(
                f"host {host_id!r} is not announced (or went silent); announce it first"
            )
        return host

    def _peer(self, peer_id: str) -> Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise UnknownPeer(
                f"peer {peer_id!r} is not registered (it left, went silent, or the "
                "scheduler restarted); register it again"
            )
        return peer

    def _touch_host(self, host: Host) -> None:
        host.seen_at = self._clock()
        del self._hosts[host.id]
        self._hosts[host.id] = host

    def _touch_peer(self, peer: Peer) -> None:
        peer.seen_at = self._clock()
        del self._peers[peer.id]
        self._peers[peer.id] = peer

    # Changes

    def _change(self, task: Task) -> None:
        self._changed[task] = None

    def _publish(self) -> None:
        """Give each changed task a new version, then tell the callbacks."""
        for task in self._changed:
            self._offer_sole_pieces(task)
        changed, self._changed = self._changed, {}
        triggered, self._triggered = self._triggered, []
        for task in changed:
            # One counter for every task: a task that fails and starts over (a new
            # ``Task`` under the same ID) never goes back to an older version.
            self._last_version += 1
            task.version = self._last_version
        for task in changed:
            self._on_change(task.id)
        for host_id in triggered:
            self._on_trigger(host_id)

    # Joining and leaving

    def _add_peer(
        self, request: PeerRegister, task: Task, host: Host, held: int
    ) -> Peer:
        if self._tasks.get(task.id) is not task:
            self._tasks[task.id] = task
        task.set_lengths(request.content_length, request.piece_length)
        for piece in request.held:
            task.add_digest(piece.number, piece.digest)

        self._last_seq += 1
        peer = Peer(request.peer_id, task, host, self._last_seq, self._clock())
        peer.want(request.wanted)
        peer.peers_only = request.priority is Priority.PEERS_ONLY
        task.add_holdings(peer.hold(held))
        task.peers[peer.id] = peer
        host.peers[peer.id] = peer
        self._peers[peer.id] = peer
        self._change(task)
        return peer

    def _drop_peer(self, peer: Peer) -> None:
        """Forget a peer and its edges; the caller then settles its task."""
        task = peer.task
        peer.drop_parents()
        peer.drop_children()
        task.remove_holdings(peer.held)
        del task.peers[peer.id]
        del peer.host.peers[peer.id]
        del self._peers[peer.id]
        if task.fetcher is peer:
            task.fetcher = None
        self._change(task)

    def _remove_hosts(self, hosts: Iterable[Host], why: str) -> None:
        """Remove hosts and their peers, then find fetchers for the tasks that lost
        theirs (after all of them are gone, so that none is chosen on a dead host)."""
        touched: dict[Task, None] = {}
        for host in hosts:
            if self._hosts.get(host.id) is not host:
                continue  # already removed by this call
            del self._hosts[host.id]
            self._seeds.pop(host.id, None)
            logger.info(
                "host %s is gone (%s); %d peers leave with it",
                host.id,
                why,
                len(host.peers),
            )
            for peer in list(host.peers.values()):
                touched[peer.task] = None
                self._drop_peer(peer)
            for task in list(self._awaiting_seed):
                if task.seed_host_id == host.id:
                    self._stop_waiting(task)
                    touched[task] = None
        for task in touched:
            self._settle(task)

    def _expire_peers(self, peers: list[Peer]) -> None:
        touched: dict[Task, None] = {}
        for peer in peers:
            touched[peer.task] = None
            self._drop_peer(peer)
        for task in touched:
            self._settle(task)

    def _settle(self, task: Task) -> None:
        """After peers left or finished: forget an empty task, or find a fetcher."""
        if not task.peers:
            self._forget(task)
        elif self._needs_fetcher(task):
            self._promote(task)

    def _forget(self, task: Task) -> None:
        self._stop_waiting(task)
        if self._tasks.get(task.id) is task:
            del self._tasks[task.id]

    # Fetchers

    def _needs_fetcher(self, task: Task) -> bool:
        return (
            task.fetcher is None
            and task.failure is None
            and not task.complete_in_swarm
            and task.seed_host_id is None
            and not task.grace_wait
        )

    def _elect_on_register(self, task: Task, peer: Peer, request: PeerRegister) -> None:
        if task.fetcher is not None or task.complete_in_swarm:
            return
        if request.resumed and self._clock() < self._grace_ends:
            self._elect_in_grace(task, peer, request.was_fetcher)
        elif peer.host.seed:
            self._set_fetcher(task, peer)
        elif task.seed_host_id is not None or task.grace_wait:
            pass  # a seed, or the fetcher from before a restart, is expected
        elif (
            not task.seed_triggered
            and self._seeds
            and request.priority is not Priority.OWN_ORIGIN
        ):
            self._trigger(task, self._seed_for(task))
        else:
            self._set_fetcher(task, peer)

    def _elect_in_grace(self, task: Task, peer: Peer, was_fetcher: bool) -> None:
        """Just after a restart the peer that was fetching goes on fetching, and the
        others wait for it to register again, until the grace ends."""
        if was_fetcher:
            self._set_fetcher(task, peer)
        elif task.seed_host_id is None:
            task.grace_wait = True
            self._awaiting_grace[task] = None

    def _seed_for(self, task: Task) -> Host:
        return max(self._seeds.values(), key=lambda host: _rendezvous(host.id, task.id))

    def _trigger(self, task: Task, seed: Host) -> None:
        self._seed_triggers += 1
        task.seed_triggered = True
        task.seed_host_id = seed.id
        task.seed_deadline = self._clock() + self._config.seed_timeout
        self._awaiting_seed[task] = None
        seed.triggers.append(task.trigger())
        self._triggered.append(seed.id)
        logger.debug("task %s: asked seed host %s to fetch it", task.id, seed.id)

    def _stop_waiting(self, task: Task) -> None:
        """Stop waiting for a seed or an old fetcher; withdraw an untaken trigger."""
        seed = None if task.seed_host_id is None else self._hosts.get(task.seed_host_id)
        if seed is not None:
            seed.triggers = [t for t in seed.triggers if t.task_id != task.id]
        task.seed_host_id = None
        task.grace_wait = False
        self._awaiting_seed.pop(task, None)
        self._awaiting_grace.pop(task, None)

    def _expire_seed_waits(self, now: float) -> None:
        for task in list(self._awaiting_seed):
            if task.seed_deadline <= now:
                logger.info(
                    "task %s: seed host %s did not register in time; a peer fetches",
                    task.id,
                    task.seed_host_id,
                )
                self._stop_waiting(task)
                self._settle(task)

    def _end_grace(self) -> None:
        for task in list(self._awaiting_grace):
            self._stop_waiting(task)
            self._settle(task)

    def _promote(self, task: Task) -> None:
        """Make the best unfinished peer that may go to the origin the fetcher: a
        seed first, then the one holding the most pieces, then the first registered."""
        unfinished = [
            peer
            for peer in task.peers.values()
            if not peer.finished and not peer.peers_only
        ]
        if unfinished:
            best = max(unfinished, key=_fetcher_rank)
            logger.info("task %s: peer %s takes over as fetcher", task.id, best.id)
            self._promotions += 1
            self._set_fetcher(task, best)

    def _set_fetcher(self, task: Task, peer: Peer) -> None:
        """Make ``peer`` the fetcher: it takes what the swarm holds from its peers,
        and the others take it as a parent on their next view."""
        self._fetchers_chosen += 1
        task.fetcher = peer
        self._stop_waiting(task)
        self._evaluator.choose_parents(peer, self._clock())
        self._change(task)

    def _complete(self, peer: Peer) -> None:
        peer.task.add_holdings(peer.hold(peer.task.all_pieces))
        self._retire(peer)

    def _retire(self, peer: Peer) -> None:
        """The peer downloads no more: it serves what it holds for as long as its
        host lives, and its place as the fetcher, if it was, goes to another."""
        task = peer.task
        peer.finished = True
        peer.drop_parents()
        if task.fetcher is peer:
            task.fetcher = None
        self._change(task)

    def _fail(self, task: Task, reason: str) -> None:
        """The origin failed the task: every peer is told, and the next registration
        starts a new task under the same ID."""
        logger.info("task %s failed at the origin: %s", task.id, reason)
        task.failure = reason
        task.fetcher = None
        task.clear_edges()
        self._forget(task)
        self._change(task)

    # Reports

    def _take_pieces(self, peer: Peer, pieces: list[ReportedPiece]) -> None:
        task = peer.task
        received = 0
        for piece in pieces:
            received |= 1 << piece.number
            if task.add_digest(piece.number, piece.digest):
                self._change(task)
            if piece.parent_id is None:
                self._count_from_origin(task, piece.number)
            else:
                self._count_from_parent(task, piece)
        gained = peer.hold(received)
        if gained:
            task.add_holdings(gained)
            self._change(task)

    def _count_from_origin(self, task: Task, number: int) -> None:
        self._from_origin += 1
        bit = 1 << number
        if task.from_origin & bit:
            self._origin_repeats += 1
        task.from_origin |= bit

    def _count_from_parent(self, task: Task, piece: ReportedPiece) -> None:
        self._from_peers += 1
        parent = self._peers.get(piece.parent_id or "")
        if parent is None or parent.task is not task:
            return  # it left meanwhile
        size = task.piece_size(piece.number)
        self._evaluator.note_transfer(parent.host, size, piece.cost)
        self._touch_host(parent.host)

    def _parent_failed(self, peer: Peer, failure: ParentFailure) -> Host | None:
        """Record a failure; returns the parent's host when it counts as gone."""
        parent = self._peers.get(failure.parent_id)
        if parent is None or parent.task is not peer.task or parent.host is peer.host:
            return None  # it left meanwhile, or was never a parent
        now = self._clock()
        self._evaluator.note_failure(parent.host, now)
        if failure.kind is FailureKind.MISSING:
            return None
        peer.blocked.add(parent.id)
        if parent.id in peer.parents:
            peer.remove_parent(parent)
        self._change(peer.task)
        if failure.kind is not FailureKind.UNREACHABLE:
            return None
        if self._unreachable_count(parent.host, peer.host, now) < UNREACHABLE_QUORUM:
            return None
        return parent.host

    def _unreachable_count(self, host: Host, reporter: Host, now: float) -> int:
        """Distinct hosts that could not reach ``host`` within the last host TTL."""
        host.unreachable_from[reporter.id] = now
        horizon = now - self._config.host_ttl
        host.unreachable_from = {
            reporter_id: at
            for reporter_id, at in host.unreachable_from.items()
            if at > horizon
        }
        return len(host.unreachable_from)

    # Sole pieces

    def _offer_sole_pieces(self, task: Task) -> None:
        """Withdraw the offers that are over, then offer each holder's sole pieces
        to its children, lowest numbers first, while it has room for more."""
        now = self._clock()
        for offer in list(task.offers.values()):
            if not self._offer_stands(task, offer, now):
                offer.withdraw()
                if offer.deadline <= now:
                    task.lapsed[offer.number] = offer.child
                self._change(task)
        if task.failure is not None or not task.sole & ~task.offered:
            return

        limit = self._config.offers_per_holder
        deadline = now + self._config.offer_timeout
        for holder in task.peers.values():
            room = limit - holder.offers_out
            waiting = holder.held & task.sole & ~task.offered
            if room <= 0 or not waiting:
                continue
            for number in numbers_of(waiting)[:room]:
                child = _taker(holder, task.lapsed.pop(number, None))
                if child is None:
                    break
                Offer(number, holder, child, deadline)
                self._change(task)

    def _offer_stands(self, task: Task, offer: Offer, now: float) -> bool:
        child, holder = offer.child, offer.holder
        return (
            offer.deadline > now
            and task.sole >> offer.number & 1 == 1
            and task.peers.get(holder.id) is holder
            and task.peers.get(child.id) is child
            and not child.finished
            and holder.id in child.parents
        )

    # Views and parents

    def _view_of(self, peer: Peer) -> PeerView:
        task = peer.task
        if task.failure is not None:
            return PeerView(
                version=task.version,
                role=Role.FAILED,
                content_length=task.content_length,
                piece_length=task.piece_length,
                pieces=list(task.piece_list()),
                parents=[],
                failure=task.failure,
            )
        self._evaluator.choose_parents(peer, self._clock())
        # The peer may have taken a holder of sole pieces as a parent just now.
        self._offer_sole_pieces(task)
        is_fetcher = peer is task.fetcher
        return PeerView(
            version=task.version,
            role=Role.FETCHER if is_fetcher else Role.CHILD,
            content_length=task.content_length,
            piece_length=task.piece_length,
            pieces=list(task.piece_list()),
            parents=[_parent_info(parent, peer) for parent in peer.parents.values()],
            demanded=_demanded(task) if is_fetcher else [],
        )


def _fetcher_rank(peer: Peer) -> tuple[bool, int, int]:
    return (peer.host.seed, peer.held.bit_count(), -peer.seq)


def _rendezvous(host_id: str, task_id: str) -> int:
    """The weight of a seed host for a task (rendezvous hashing). It depends on
    nothing else, so a task is asked of the same seed, whose cache may hold it,
    before and after restarts and from every scheduler."""
    key = f"{host_id}\n{task_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _silent(things: Iterable[Living], horizon: float) -> list[Living]:
    """Those at the head of ``things`` (oldest sign of life first) that have said
    nothing since ``horizon``."""
    silent: list[Living] = []
    for thing in things:
        if thing.seen_at > horizon:
            break
        silent.append(thing)
    return silent


def _parent_info(parent: Peer, child: Peer) -> ParentInfo:
    host = parent.host
    return ParentInfo(
        peer_id=parent.id,
        host_id=host.id,
        address=host.address,
        transport=host.transport,
        seed=host.seed,
        pieces=_visible_pieces(parent, child),
    )


def _visible_pieces(parent: Peer, child: Peer) -> list[int]:
    """The pieces ``child`` may take from ``parent``.

    While the parent is the sole holder of some pieces, its upload goes to those,
    each to the one child it is offered to, and a child sees there only the pieces
    offered to it and those it wants first (range reads): a piece sent there that
    others hold too would hold up the next fresh one behind it. Once the parent
    holds no piece alone, it serves everything it has. The fetcher sees everything:
    it must never fetch from the origin what a peer holds.
    """
    task = parent.task
    sole = parent.held & task.sole
    if child is task.fetcher or not sole or len(_takers(parent)) <= 1:
        return list(parent.held_numbers())
    return numbers_of(parent.held & (child.offered | child.wanted_mask))


def _takers(holder: Peer) -> list[Peer]:
    """The children that sole pieces of ``holder`` may be offered to (the fetcher
    sees every piece anyway)."""
    fetcher = holder.task.fetcher
    return [
        child
        for child in holder.children.values()
        if not child.finished and child is not fetcher
    ]


def _taker(holder: Peer, lapsed: Peer | None) -> Peer | None:
    """The child to offer one of ``holder``'s sole pieces to: one with no offer
    open, holding the fewest pieces (it has least to trade), registered first; the
    child that let the piece's last offer lapse only when nobody else can."""
    takers = [child for child in _takers(holder) if child.offers_in == 0]
    return min(
        takers,
        key=lambda c: (c is lapsed, c.held.bit_count(), c.seq),
        default=None,
    )


def _demanded(task: Task) -> list[int]:
    """Pieces some unfinished peer wants first that nobody holds yet."""
    wanted: set[int] = set()
    for peer in task.peers.values():
        if not peer.finished:
            wanted.update(peer.wanted)
    count = task.piece_count
    return sorted(
        number
        for number in wanted
        if (count is None or number < count) and not task.swarm_held >> number & 1
    )
