"""Which parents a peer gets: candidates, their scores, and the graph's rules.

A candidate is a peer of the same task on another host, not blocked by the child,
and of use: it holds a piece the child lacks, or it is the fetcher, or it is
downloading from parents of its own. Two peers may be each other's parents, so that
everyone's upload counts, not only that of the peers near the fetcher. A child keeps
the parents still of use and fills the free places, up to the parent limit, best
score first. The fetcher is every child's parent while it can be, so that each piece
it fetches can reach anyone at once.

A score ranges over [0, 1]; so does each factor, and the weights add up to 1::

    0.30  pieces       share of the pieces the child lacks that the parent holds
    0.20  load         free upload places on the parent's host
    0.15  speed        transfer rate children measured from the host
    0.15  reliability  failures children met at the host, forgotten over time
    0.10  idc          same data centre
    0.05  location     leading equal parts of the ``|``-separated location
    0.05  seed         the parent runs on a seed host

``docs/scheduler.md`` says why these weights.
"""

from __future__ import annotations

from random import Random
from typing import Final

from ._model import Host, Peer

PIECES_WEIGHT: Final = 0.30
LOAD_WEIGHT: Final = 0.20
SPEED_WEIGHT: Final = 0.15
RELIABILITY_WEIGHT: Final = 0.15
IDC_WEIGHT: Final = 0.10
LOCATION_WEIGHT: Final = 0.05
SEED_WEIGHT: Final = 0.05

#: Seconds after which a failure weighs half as much.
FAILURE_HALF_LIFE: Final = 30.0
#: Weight of the newest transfer in a host's rate (an exponential moving average).
RATE_SMOOTHING: Final = 0.2
#: Parts of a location compared, as in ``country|region|city|zone|rack``.
LOCATION_DEPTH: Final = 5
#: Peers considered for one choice of parents. A larger swarm is sampled, so that a
#: decision costs the same among ten peers or ten thousand.
CANDIDATE_SAMPLE: Final = 48


class Evaluator:
    """Chooses parents, and learns from what children report about them."""

    def __init__(self, parent_limit: int, random: Random) -> None:
        self.parent_limit = parent_limit
        self.random = random
        #: The moving average of every transfer's rate: what "fast" is measured by.
        self.typical_rate = 0.0

    def choose_parents(self, peer: Peer, now: float) -> None:
        """Keep the peer's parents that are still of use, and fill the free places.

        The choice is kept as edges of the graph, so the next choice starts from it.
        """
        if peer.finished or peer.task.failure is not None:
            return
        for parent in list(peer.parents.values()):
            if not _useful(parent, peer):
                peer.remove_parent(parent)
        if peer is peer.task.fetcher:
            _cover_missing(peer)
        else:
            self._fill_parents(peer, now)

    def score(self, child: Peer, parent: Peer, now: float) -> float:
        """How good ``parent`` is for ``child``, from 0 to 1."""
        host = parent.host
        return (
            PIECES_WEIGHT * piece_share(child, parent)
            + LOAD_WEIGHT * free_upload(host)
            + SPEED_WEIGHT * speed(host, self.typical_rate)
            + RELIABILITY_WEIGHT * reliability(host, now)
            + IDC_WEIGHT * idc_affinity(child.host, host)
            + LOCATION_WEIGHT * location_affinity(child.host, host)
            + SEED_WEIGHT * (1.0 if host.seed else 0.0)
        )

    def note_transfer(self, host: Host, size: int, cost: float) -> None:
        """A child took ``size`` bytes from ``host`` in ``cost`` seconds."""
        if size <= 0 or cost <= 0:
            return  # too fast to measure, or the size is not known
        rate = size / cost
        host.rate = _smoothed(host.rate, rate)
        self.typical_rate = _smoothed(self.typical_rate, rate)

    def note_failure(self, host: Host, now: float) -> None:
        """A child could not have a piece from ``host``."""
        host.penalty = _decayed_penalty(host, now) + 1.0
        host.penalty_at = now

    def _fill_parents(self, child: Peer, now: float) -> None:
        """Up to ``parent_limit`` parents, best first; the fetcher whenever it can."""
        fetcher = child.task.fetcher
        fetcher_missing = fetcher is not None and _may_feed(fetcher, child)
        if len(child.parents) >= self.parent_limit and not fetcher_missing:
            return

        candidates = [
            peer
            for peer in self._sample(child)
            if peer is not fetcher and _may_feed(peer, child) and _useful(peer, child)
        ]
        if fetcher is not None and fetcher_missing:
            candidates.append(fetcher)
        if not candidates:
            return

        ranked = sorted(
            candidates,
            key=lambda peer: (
                peer is not fetcher,
                -self.score(child, peer, now),
                peer.seq,
            ),
        )
        if ranked[0] is fetcher and len(child.parents) >= self.parent_limit:
            self._drop_worst_parent(child, now)
        for parent in ranked[: self.parent_limit - len(child.parents)]:
            child.add_parent(parent)

    def _sample(self, child: Peer) -> list[Peer]:
        peers = list(child.task.peers.values())
        if len(peers) <= CANDIDATE_SAMPLE:
            return peers
        return self.random.sample(peers, CANDIDATE_SAMPLE)

    def _drop_worst_parent(self, child: Peer, now: float) -> None:
        """Make room for the fetcher."""
        worst = min(
            child.parents.values(),
            key=lambda peer: (self.score(child, peer, now), -peer.seq),
        )
        child.remove_parent(worst)


def _cover_missing(fetcher: Peer) -> None:
    """Give the fetcher as parents peers holding every piece it lacks that the swarm
    holds, however many that takes, so that it asks the origin only for pieces
    nobody has. Peers holding more of them come first."""
    covered = fetcher.held
    for parent in fetcher.parents.values():
        covered |= parent.held
    needed = fetcher.task.swarm_held & ~covered
    if not needed:
        return

    candidates = [
        peer
        for peer in fetcher.task.peers.values()
        if peer.held & needed and _may_feed(peer, fetcher)
    ]
    while needed and candidates:
        best = max(
            candidates, key=lambda peer: ((peer.held & needed).bit_count(), -peer.seq)
        )
        if not best.held & needed:
            break
        fetcher.add_parent(best)
        needed &= ~best.held
        candidates.remove(best)


def _useful(parent: Peer, child: Peer) -> bool:
    """Whether ``parent`` holds, or will hold, pieces for ``child``.

    For the fetcher only pieces it lacks count: it keeps no parent it has nothing
    more to take from.
    """
    if parent.held & ~child.held:
        return True
    task = child.task
    if child is task.fetcher:
        return False
    return parent is task.fetcher or (not parent.finished and bool(parent.parents))


def _may_feed(parent: Peer, child: Peer) -> bool:
    """Whether ``parent`` may become a parent of ``child``."""
    return (
        parent.host is not child.host
        and parent.id not in child.parents
        and parent.id not in child.blocked
    )


def piece_share(child: Peer, parent: Peer) -> float:
    task = child.task
    total = len(task.pieces) if task.piece_count is None else task.piece_count
    missing = total - child.held.bit_count()
    if missing <= 0:
        return 0.0
    useful = (parent.held & ~child.held).bit_count()
    return min(1.0, useful / missing)


def free_upload(host: Host) -> float:
    if host.upload_capacity <= 0:
        return 0.0
    return max(0, host.upload_capacity - host.children) / host.upload_capacity


def speed(host: Host, typical_rate: float) -> float:
    """0.5 for a typical (or unmeasured) host, towards 1 when faster, 0 when slower."""
    if host.rate <= 0 or typical_rate <= 0:
        return 0.5
    return host.rate / (host.rate + typical_rate)


def reliability(host: Host, now: float) -> float:
    """1 with no recent failure; each fresh one lowers it (1/2, 1/3, ...)."""
    return 1.0 / (1.0 + _decayed_penalty(host, now))


def idc_affinity(child: Host, parent: Host) -> float:
    return 1.0 if child.idc and child.idc == parent.idc else 0.0


def location_affinity(child: Host, parent: Host) -> float:
    """The share of leading location parts two hosts have in common, as Dragonfly
    scores it: 1 for equal locations, 0 when either is unknown."""
    if not child.location or not parent.location:
        return 0.0
    if child.location == parent.location:
        return 1.0
    common = 0
    pairs = zip(child.location[:LOCATION_DEPTH], parent.location, strict=False)
    for mine, theirs in pairs:
        if mine != theirs:
            break
        common += 1
    return common / LOCATION_DEPTH


def _smoothed(average: float, sample: float) -> float:
    if average <= 0:
        return sample
    return average + RATE_SMOOTHING * (sample - average)


def _decayed_penalty(host: Host, now: float) -> float:
    if host.penalty <= 0:
        return 0.0
    elapsed = max(0.0, now - host.penalty_at)
    return float(host.penalty * 0.5 ** (elapsed / FAILURE_HALF_LIFE))
