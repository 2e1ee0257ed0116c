"""What the scheduler remembers: hosts, tasks, their peers, and who feeds whom.

The peers of a task form a directed graph: an edge from a parent to a child means the
child takes pieces from the parent. Two peers may feed each other, each with the
pieces the other lacks; a piece itself only ever goes from a peer that holds it to
one that does not, so no piece goes round in circles.

A piece held by one peer only is that peer's *sole* piece. Sole pieces are offered
to children one at a time (an ``Offer``), so that the only copy's holder spends its
upload on pieces nobody else can give, each sent once, and children spread them.

Held pieces are bitmasks (bit ``n`` set: piece ``n`` is held), so "which pieces does
this parent hold that the child lacks" is one ``&~`` and a ``bit_count()``, whatever
the size of the task.

Everything here is bookkeeping, and the checks that keep it true to the messages;
the decisions are made in ``_core`` (fetchers) and ``_evaluator`` (parents).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Final

from .._pieces import piece_count
from ._messages import HostAnnounce, PeerRegister, PieceInfo, PieceReport, SeedTrigger

#: The most pieces a task may have: 4 TiB in 4 MiB pieces. It bounds the memory a
#: peer's held pieces take, whatever a message claims.
MAX_PIECE_COUNT: Final = 1 << 20


class SchedulerError(ValueError):
    """A message that cannot be true of its task: nothing of it was applied."""


class UnknownHost(SchedulerError):
    """The host never announced itself, left, or went silent for too long."""


class UnknownPeer(SchedulerError):
    """The peer never registered, left, or went silent for too long."""


class Host:
    """A machine running a daemon, as it last announced itself."""

    __slots__ = (
        "address",
        "children",
        "hostname",
        "id",
        "idc",
        "location",
        "peers",
        "penalty",
        "penalty_at",
        "rate",
        "seed",
        "seen_at",
        "transport",
        "triggers",
        "unreachable_from",
        "upload_capacity",
    )

    def __init__(self, announce: HostAnnounce, now: float) -> None:
        self.id = announce.id
        self.seen_at = now
        self.peers: dict[str, Peer] = {}
        #: Edges from this host's peers, over all tasks: the children it serves now.
        self.children = 0
        #: Seed triggers not yet taken by the host's daemon.
        self.triggers: list[SeedTrigger] = []
        # What children said about this host's piece server (see ``_evaluator``):
        # transfer rate in bytes/s (0 while unknown), a failure penalty that decays
        # from ``penalty_at``, and when other hosts last found it unreachable.
        self.rate = 0.0
        self.penalty = 0.0
        self.penalty_at = now
        self.unreachable_from: dict[str, float] = {}
        self.hostname = ""
        self.address = ""
        self.transport = ""
        self.seed = False
        self.upload_capacity = 0
        self.idc = ""
        self.location: list[str] = []
        self.update(announce)

    def update(self, announce: HostAnnounce) -> bool:
        """Take a new announcement; True when what children see of it changed."""
        address = f"{announce.ip}:{announce.piece_port}"
        changed = (address, announce.transport, announce.seed) != (
            self.address,
            self.transport,
            self.seed,
        )
        self.hostname = announce.hostname
        self.address = address
        self.transport = announce.transport
        self.seed = announce.seed
        self.upload_capacity = announce.upload_capacity
        self.idc = announce.idc.casefold()
        location = announce.location.casefold()
        self.location = location.split("|") if location else []
        return changed


class Task:
    """One content, and the peers downloading or holding it."""

    __slots__ = (
        "_piece_list",
        "application",
        "content_length",
        "digest",
        "failure",
        "fetcher",
        "from_origin",
        "grace_wait",
        "headers",
        "holders",
        "id",
        "lapsed",
        "offered",
        "offers",
        "peers",
        "piece_count",
        "piece_length",
        "pieces",
        "seed_deadline",
        "seed_host_id",
        "seed_triggered",
        "sole",
        "swarm_held",
        "tag",
        "url",
        "version",
    )

    def __init__(self, register: PeerRegister) -> None:
        self.id = register.task_id
        # Kept to ask a seed to fetch the task.
        self.url = register.url
        self.headers = dict(register.headers)
        self.tag = register.tag
        self.application = register.application
        self.digest = register.digest

        self.content_length: int | None = None
        self.piece_length: int | None = None
        self.piece_count: int | None = None
        #: Every piece anyone reported, with the digest its fetcher computed.
        self.pieces: dict[int, PieceInfo] = {}
        self._piece_list: list[PieceInfo] | None = None
        #: How many live peers hold each piece, the pieces held by at least one,
        #: and those held by exactly one.
        self.holders: list[int] = []
        self.swarm_held = 0
        self.sole = 0
        #: Sole pieces offered to a child, by piece number and as a mask, and the
        #: child that last let an offer of the piece lapse (it is not offered it
        #: again first).
        self.offers: dict[int, Offer] = {}
        self.offered = 0
        self.lapsed: dict[int, Peer] = {}
        #: Pieces fetched from the origin at least once, to count repeats.
        self.from_origin = 0

        self.peers: dict[str, Peer] = {}
        self.fetcher: Peer | None = None
        self.version = 0
        #: Why the origin failed the task; set, the task is over for its peers.
        self.failure: str | None = None
        #: The seed host asked to fetch the task, until it registers or time runs out.
        self.seed_host_id: str | None = None
        self.seed_deadline = 0.0
        #: A seed was asked once; it is not asked again for this task.
        self.seed_triggered = False
        #: Resumed peers wait for their old fetcher while the scheduler restarts.
        self.grace_wait = False

    def set_lengths(self, content_length: int | None, piece_length: int | None) -> bool:
        """Record lengths not known before; True when something was learned."""
        learned = False
        if content_length is not None and self.content_length is None:
            self.content_length = content_length
            learned = True
        if piece_length is not None and self.piece_length is None:
            self.piece_length = piece_length
            learned = True
        if learned and self.content_length is not None and self.piece_length:
            self.piece_count = piece_count(self.content_length, self.piece_length)
            self.holders = [0] * self.piece_count
        return learned

    def piece_size(self, number: int) -> int:
        """The length of piece ``number`` (the last one may be short); 0 if unknown."""
        if self.content_length is None or self.piece_length is None:
            return 0
        start = number * self.piece_length
        return max(0, min(self.piece_length, self.content_length - start))

    @property
    def all_pieces(self) -> int:
        """The mask of every piece of the task (0 while the length is unknown)."""
        return 0 if self.piece_count is None else (1 << self.piece_count) - 1

    @property
    def complete_in_swarm(self) -> bool:
        """Every piece is held by a live peer: nothing is left to fetch."""
        return self.piece_count is not None and self.swarm_held == self.all_pieces

    def add_digest(self, number: int, digest: str) -> bool:
        """Remember a piece's digest; True when it was not known."""
        if number in self.pieces:
            return False
        self.pieces[number] = PieceInfo(number, digest)
        self._piece_list = None
        return True

    def piece_list(self) -> list[PieceInfo]:
        """Known digests in piece order, shared by every view until one is added."""
        if self._piece_list is None:
            self._piece_list = [self.pieces[n] for n in sorted(self.pieces)]
        return self._piece_list

    def add_holdings(self, gained: int) -> None:
        for number in numbers_of(gained):
            self.holders[number] += 1
            self._count_changed(number)
        self.swarm_held |= gained

    def remove_holdings(self, lost: int) -> None:
        for number in numbers_of(lost):
            self.holders[number] -= 1
            self._count_changed(number)
            if self.holders[number] == 0:
                self.swarm_held &= ~(1 << number)

    def _count_changed(self, number: int) -> None:
        bit = 1 << number
        if self.holders[number] == 1:
            self.sole |= bit
        else:
            self.sole &= ~bit

    def clear_edges(self) -> None:
        for peer in self.peers.values():
            peer.drop_parents()

    def trigger(self) -> SeedTrigger:
        return SeedTrigger(
            task_id=self.id,
            url=self.url,
            headers=dict(self.headers),
            tag=self.tag,
            application=self.application,
            digest=self.digest,
        )


class Peer:
    """One host's download of one task."""

    __slots__ = (
        "_held_numbers",
        "blocked",
        "children",
        "finished",
        "held",
        "host",
        "id",
        "offered",
        "offers_in",
        "offers_out",
        "parents",
        "peers_only",
        "seen_at",
        "seq",
        "task",
        "wanted",
        "wanted_mask",
    )

    def __init__(
        self, peer_id: str, task: Task, host: Host, seq: int, now: float
    ) -> None:
        self.id = peer_id
        self.task = task
        self.host = host
        #: Registration order, the last tie-breaker wherever peers are ranked.
        self.seq = seq
        self.seen_at = now
        self.held = 0
        self._held_numbers: list[int] | None = None
        self.wanted: list[int] = []
        self.wanted_mask = 0
        self.finished = False
        #: Never the fetcher: its download may take pieces from peers only.
        self.peers_only = False
        #: Parents this peer must not be given again (corrupt or unreachable).
        self.blocked: set[str] = set()
        self.parents: dict[str, Peer] = {}
        self.children: dict[str, Peer] = {}
        #: Pieces offered to this peer (by their sole holders), and how many offers
        #: it has taken and made that are still open.
        self.offered = 0
        self.offers_in = 0
        self.offers_out = 0

    def want(self, numbers: list[int]) -> None:
        """The pieces to fetch first (a range read's)."""
        self.wanted = list(numbers)
        self.wanted_mask = mask_of(numbers)

    def hold(self, pieces: int) -> int:
        """Add pieces to those held; returns the ones that are new."""
        gained = pieces & ~self.held
        if gained:
            self.held |= gained
            self._held_numbers = None
        return gained

    def held_numbers(self) -> list[int]:
        """Numbers of the held pieces, in order (shared until the next ``hold``)."""
        if self._held_numbers is None:
            self._held_numbers = numbers_of(self.held)
        return self._held_numbers

    def add_parent(self, parent: Peer) -> None:
        self.parents[parent.id] = parent
        parent.children[self.id] = self
        parent.host.children += 1

    def remove_parent(self, parent: Peer) -> None:
        del self.parents[parent.id]
        del parent.children[self.id]
        parent.host.children -= 1

    def drop_parents(self) -> None:
        for parent in list(self.parents.values()):
            self.remove_parent(parent)

    def drop_children(self) -> None:
        for child in list(self.children.values()):
            child.remove_parent(self)


class Offer:
    """A sole piece offered to one child: only that child sees it at its holder,
    until the child holds it, leaves, drops the holder, or ``deadline`` passes.
    Making one opens it in the holder's task; ``withdraw`` closes it."""

    __slots__ = ("child", "deadline", "holder", "number")

    def __init__(self, number: int, holder: Peer, child: Peer, deadline: float) -> None:
        self.number = number
        self.holder = holder
        self.child = child
        self.deadline = deadline
        bit = 1 << number
        task = holder.task
        task.offers[number] = self
        task.offered |= bit
        holder.offers_out += 1
        child.offers_in += 1
        child.offered |= bit

    def withdraw(self) -> None:
        bit = 1 << self.number
        task = self.holder.task
        del task.offers[self.number]
        task.offered &= ~bit
        self.holder.offers_out -= 1
        self.child.offers_in -= 1
        self.child.offered &= ~bit


def numbers_of(mask: int) -> list[int]:
    """The numbers of the bits set in ``mask``, in order."""
    bits = format(mask, "b")[::-1]
    return [number for number, bit in enumerate(bits) if bit == "1"]


def mask_of(numbers: Collection[int]) -> int:
    mask = 0
    for number in numbers:
        mask |= 1 << number
    return mask


# Checks: a message is refused whole, before anything of it is applied.


def check_announce(announce: HostAnnounce) -> None:
    if not announce.id:
        raise SchedulerError("a host announced itself without an id")
    if not 0 < announce.piece_port < 65536:
        raise SchedulerError(
            f"host {announce.id}: piece_port {announce.piece_port} is not a TCP port"
        )
    if announce.upload_capacity < 0:
        raise SchedulerError(
            f"host {announce.id}: upload_capacity must not be negative, "
            f"got {announce.upload_capacity}"
        )


def check_registration(task: Task, request: PeerRegister) -> None:
    count = _check_lengths(task, request.content_length, request.piece_length)
    _check_pieces(task, [(piece.number, piece.digest) for piece in request.held], count)
    _check_wanted(task, request.wanted, count)


def check_report(task: Task, report: PieceReport) -> None:
    count = _check_lengths(task, report.content_length, report.piece_length)
    _check_pieces(
        task, [(piece.number, piece.digest) for piece in report.pieces], count
    )
    _check_wanted(task, report.wanted or [], count)
    for piece in report.pieces:
        if not (math.isfinite(piece.cost) and piece.cost >= 0):
            raise SchedulerError(
                f"task {task.id}: piece {piece.number} took {piece.cost} seconds, "
                "which cannot be; send the transfer time, 0 or more"
            )


def _check_lengths(
    task: Task, content_length: int | None, piece_length: int | None
) -> int | None:
    """Check lengths against the task's; return the piece count (None if unknown)."""
    _check_length(task, "content_length", content_length, task.content_length, 0)
    _check_length(task, "piece_length", piece_length, task.piece_length, 1)
    if task.content_length is not None:
        content_length = task.content_length
    if task.piece_length is not None:
        piece_length = task.piece_length
    if content_length is None or piece_length is None:
        return None
    count = piece_count(content_length, piece_length)
    if count > MAX_PIECE_COUNT:
        raise SchedulerError(
            f"task {task.id}: {count} pieces of {piece_length} bytes; at most "
            f"{MAX_PIECE_COUNT} are supported, so cut longer pieces"
        )
    return count


def _check_length(
    task: Task, name: str, value: int | None, known: int | None, least: int
) -> None:
    if value is None:
        return
    if value < least:
        raise SchedulerError(f"task {task.id}: {name} must be at least {least}")
    if known is not None and value != known:
        raise SchedulerError(
            f"task {task.id}: {name} {value} conflicts with the task's {known}; "
            "the content changed at the origin, or the peer mixed up two tasks"
        )


def _check_pieces(task: Task, pieces: list[tuple[int, str]], count: int | None) -> None:
    seen: dict[int, str] = {}
    for number, digest in pieces:
        if count is None:
            raise SchedulerError(
                f"task {task.id}: piece {number} came before the task's "
                "content_length and piece_length; send them first, or with it"
            )
        if not 0 <= number < count:
            raise SchedulerError(
                f"task {task.id}: piece {number} is out of range; the task has "
                f"{count} pieces, numbered from 0"
            )
        if not digest:
            raise SchedulerError(f"task {task.id}: piece {number} has no digest")
        known = task.pieces.get(number)
        known_digest = seen.get(number) if known is None else known.digest
        if known_digest is not None and digest != known_digest:
            raise SchedulerError(
                f"task {task.id}: piece {number} has digest {digest}, but the task's "
                f"is {known_digest}; drop this copy of the piece and fetch it again"
            )
        seen[number] = digest


def _check_wanted(task: Task, wanted: list[int], count: int | None) -> None:
    for number in wanted:
        if number < 0 or (count is not None and number >= count):
            raise SchedulerError(
                f"task {task.id}: wanted piece {number} is out of range"
                + ("" if count is None else f" (the task has {count} pieces)")
            )
