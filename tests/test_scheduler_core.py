"""The scheduler's core: elections, parents, failures and time, on a fake clock."""

from __future__ import annotations

import contextlib
import math
from random import Random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from dragonpy._scheduler._core import (
    Scheduler,
    SchedulerConfig,
    SchedulerError,
    UnknownHost,
    UnknownPeer,
)
from dragonpy._scheduler._evaluator import (
    Evaluator,
    free_upload,
    idc_affinity,
    location_affinity,
    reliability,
    speed,
)
from dragonpy._scheduler._messages import (
    FailureKind,
    HostAnnounce,
    ParentFailure,
    PeerFinished,
    PeerRegister,
    PeerView,
    PieceInfo,
    PieceReport,
    Priority,
    ReportedPiece,
    Role,
    SeedTrigger,
)
from dragonpy._scheduler._model import Host, Peer, Task

PIECE: int = 4 * 1024 * 1024
URL = "http://origin.test/blob"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Calls:
    """What the scheduler told its callbacks."""

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.triggers: list[str] = []


def digest(number: int) -> str:
    return f"blake3:{number:064x}"


def announcement(host_id: str, **fields: Any) -> HostAnnounce:
    fields.setdefault("ip", "192.0.2.1")
    return HostAnnounce(id=host_id, hostname=host_id, piece_port=4000, **fields)


def registration(
    peer_id: str, host_id: str, task_id: str = "t1", **fields: Any
) -> PeerRegister:
    return PeerRegister(
        peer_id=peer_id, host_id=host_id, task_id=task_id, url=URL, **fields
    )


def lengths(pieces: int = 4) -> dict[str, Any]:
    """Content and piece lengths of a task of ``pieces`` pieces, the last one short."""
    return {"content_length": (pieces - 1) * PIECE + 1, "piece_length": PIECE}


def held(*numbers: int) -> list[PieceInfo]:
    return [PieceInfo(number, digest(number)) for number in numbers]


def pieces(*numbers: int, parent: str | None = None, cost: float = 0.5) -> PieceReport:
    reported = [ReportedPiece(n, digest(n), parent, cost) for n in numbers]
    return PieceReport(pieces=reported)


def parents_of(view: PeerView) -> list[str]:
    return [parent.peer_id for parent in view.parents]


def announce(scheduler: Scheduler, *host_ids: str, seed: bool = False) -> None:
    for host_id in host_ids:
        scheduler.announce_host(announcement(host_id, seed=seed))


def start_task(
    scheduler: Scheduler, *children: str, origin_pieces: tuple[int, ...] = ()
) -> None:
    """Fetcher ``p0`` on ``h0`` (it fetched ``origin_pieces``), then the children
    ``pN`` on ``hN``, each registered and shown its parents."""
    announce(scheduler, "h0", *(f"h{name[1:]}" for name in children))
    scheduler.register_peer(registration("p0", "h0"))
    scheduler.report("p0", PieceReport(pieces(*origin_pieces).pieces, **lengths()))
    for name in children:
        scheduler.register_peer(registration(name, f"h{name[1:]}"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def scheduler(clock: Clock, calls: Calls) -> Scheduler:
    return Scheduler(
        clock=clock,
        random=Random(7),
        on_change=calls.changes.append,
        on_trigger=calls.triggers.append,
    )


# Configuration


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keepalive": 0}, "keepalive must be positive"),
        ({"host_ttl": -1}, "host_ttl must be positive"),
        ({"host_ttl": 5.0}, r"host_ttl \(5.0\) must be longer than keepalive"),
        ({"parent_limit": 0}, "parent_limit must be at least 1"),
        ({"seed_timeout": math.nan}, "seed_timeout must be positive"),
        ({"restart_grace": -1}, "restart_grace must not be negative"),
        ({"peer_ttl": 0}, "peer_ttl must be positive"),
    ],
)
def test_config_names_the_bad_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerConfig(**fields)


def test_announce_replies_with_the_keepalive() -> None:
    scheduler = Scheduler(SchedulerConfig(keepalive=2, host_ttl=7))
    assert scheduler.announce_host(announcement("h1")).keepalive == 2


# Electing the one fetcher


def test_the_first_peer_without_seeds_fetches(scheduler: Scheduler) -> None:
    announce(scheduler, "h1")
    view = scheduler.register_peer(registration("p1", "h1"))
    assert view.role is Role.FETCHER
    assert view.parents == []
    assert scheduler.statistics()["fetchers"] == 1


def test_children_registering_at_once_all_get_the_fetcher(
    scheduler: Scheduler,
) -> None:
    hosts = [f"h{n}" for n in range(30)]
    announce(scheduler, *hosts)
    views = [
        scheduler.register_peer(registration(f"p{n}", host))
        for n, host in enumerate(hosts)
    ]

    assert views[0].role is Role.FETCHER
    assert all(view.role is Role.CHILD for view in views[1:])
    assert all(parents_of(view)[0] == "p0" for view in views[1:])

    again = [scheduler.view(f"p{n}") for n in range(30)]
    assert [view.role for view in again].count(Role.FETCHER) == 1
    assert all(parents_of(view)[0] == "p0" for view in again[1:])
    limit = SchedulerConfig().parent_limit
    assert all(len(view.parents) <= limit for view in again)
    # Later children also take from earlier ones, which already have parents.
    assert len(again[-1].parents) == limit


def test_a_seed_host_fetches_what_it_registers(scheduler: Scheduler) -> None:
    announce(scheduler, "s1", seed=True)
    assert scheduler.register_peer(registration("p1", "s1")).role is Role.FETCHER


def test_a_seed_is_asked_to_fetch_and_becomes_the_fetcher(
    scheduler: Scheduler, calls: Calls
) -> None:
    announce(scheduler, "h1", "h2")
    announce(scheduler, "s1", "s2", seed=True)
    first = scheduler.register_peer(
        registration(
            "p1",
            "h1",
            headers={"Authorization": "Bearer x"},
            tag="v1",
            application="ci",
            digest="sha256:" + "a" * 64,
        )
    )
    assert first.role is Role.CHILD
    assert first.parents == []
    (seed,) = calls.triggers
    assert scheduler.take_triggers(seed) == [
        SeedTrigger(
            "t1", URL, {"Authorization": "Bearer x"}, "v1", "ci", "sha256:" + "a" * 64
        )
    ]
    assert scheduler.take_triggers(seed) == []
    assert scheduler.take_triggers("s2" if seed == "s1" else "s1") == []

    second = scheduler.register_peer(registration("p2", "h2"))
    assert second.role is Role.CHILD
    assert calls.triggers == [seed]  # asked once per task

    before = scheduler.version("p1")
    assert scheduler.register_peer(registration("ps", seed)).role is Role.FETCHER
    assert scheduler.version("p1") > before
    assert parents_of(scheduler.view("p1")) == ["ps"]
    assert parents_of(scheduler.view("p2"))[0] == "ps"


def test_the_same_seed_is_asked_for_a_task_by_every_scheduler() -> None:
    chosen: list[dict[str, str]] = []
    for _ in range(2):
        calls = Calls()
        scheduler = Scheduler(on_trigger=calls.triggers.append)
        announce(scheduler, "s1", "s2", "s3", "s4", seed=True)
        announce(scheduler, "h1")
        for n in range(20):
            scheduler.register_peer(registration(f"p{n}", "h1", task_id=f"t{n}"))
        chosen.append({f"t{n}": seed for n, seed in enumerate(calls.triggers)})
    assert chosen[0] == chosen[1]
    assert len(set(chosen[0].values())) > 1  # tasks spread over the seeds


def test_a_seed_that_does_not_register_in_time_is_given_up_on(
    scheduler: Scheduler, clock: Clock, calls: Calls
) -> None:
    announce(scheduler, "h1", "h2")
    announce(scheduler, "s1", seed=True)
    scheduler.register_peer(registration("p1", "h1"))
    scheduler.register_peer(registration("p2", "h2"))

    clock.advance(4.9)
    scheduler.tick()
    assert scheduler.view("p1").role is Role.CHILD
    assert scheduler.statistics()["fetchers"] == 0

    clock.advance(0.2)
    scheduler.tick()
    assert scheduler.view("p1").role is Role.FETCHER  # registered first
    assert parents_of(scheduler.view("p2")) == ["p1"]
    assert scheduler.take_triggers("s1") == []  # the late trigger is withdrawn
    assert calls.triggers == ["s1"]

    # A seed that comes late anyway is a child like any other.
    assert scheduler.register_peer(registration("ps", "s1")).role is Role.CHILD


def test_a_seed_host_that_dies_is_not_waited_for(scheduler: Scheduler) -> None:
    announce(scheduler, "h1")
    announce(scheduler, "s1", seed=True)
    scheduler.register_peer(registration("p1", "h1"))
    scheduler.leave_host("s1")
    assert scheduler.view("p1").role is Role.FETCHER


def test_a_task_the_swarm_holds_entirely_needs_no_fetcher(
    scheduler: Scheduler, calls: Calls
) -> None:
    announce(scheduler, "h1", "h2")
    announce(scheduler, "s1", seed=True)
    whole = scheduler.register_peer(
        registration("p1", "h1", held=held(0, 1, 2, 3), **lengths())
    )
    late = scheduler.register_peer(registration("p2", "h2"))
    assert (whole.role, late.role) == (Role.CHILD, Role.CHILD)
    assert parents_of(late) == ["p1"]
    assert calls.triggers == []
    assert scheduler.statistics()["fetchers"] == 0


def test_a_fetcher_that_finished_leaves_a_complete_task(
    scheduler: Scheduler, calls: Calls
) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1, 2, 3))
    scheduler.finish("p0", PeerFinished(True))
    assert scheduler.view("p1").role is Role.CHILD
    assert scheduler.statistics()["fetchers"] == 0

    announce(scheduler, "h2")
    announce(scheduler, "s1", seed=True)
    view = scheduler.register_peer(registration("p2", "h2"))
    assert view.role is Role.CHILD
    assert parents_of(view)[0] == "p0"
    assert calls.triggers == []


# Taking over


def test_fetcher_host_expiry_promotes_the_peer_with_most_pieces(
    scheduler: Scheduler, clock: Clock
) -> None:
    start_task(scheduler, origin_pieces=(1, 2))
    announce(scheduler, "h1", "h2", "h3")
    scheduler.register_peer(registration("p2", "h2", wanted=[0]))
    scheduler.report("p2", pieces(1, 2, parent="p0"))
    # p1 resumes with a piece nobody else holds and takes pieces from p2.
    view = scheduler.register_peer(registration("p1", "h1", held=held(3)))
    assert set(parents_of(view)) == {"p0", "p2"}
    scheduler.register_peer(registration("p3", "h3"))

    clock.advance(10)
    announce(scheduler, "h1", "h2", "h3")
    clock.advance(5.5)
    scheduler.tick()

    with pytest.raises(UnknownPeer):
        scheduler.view("p0")
    fetcher = scheduler.view("p2")
    assert fetcher.role is Role.FETCHER
    # The new fetcher takes piece 3 from p1 rather than fetching it again from the
    # origin, while p1 goes on taking pieces from it: they feed each other.
    assert [(p.peer_id, p.pieces) for p in fetcher.parents] == [("p1", [3])]
    assert fetcher.demanded == [0]
    assert "p2" in parents_of(scheduler.view("p1"))

    # Once it holds everything p1 has, p1 is no longer its parent.
    scheduler.report("p2", pieces(3, parent="p1"))
    assert scheduler.view("p2").parents == []
    assert "p2" in parents_of(scheduler.view("p1"))
    assert parents_of(scheduler.view("p3"))[0] == "p2"


def test_a_fetcher_leaving_promotes_a_seed_first(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1))
    scheduler.report("p1", pieces(0, 1, parent="p0"))
    announce(scheduler, "s1", seed=True)
    assert scheduler.register_peer(registration("ps", "s1")).role is Role.CHILD

    scheduler.leave_peer("p0")
    assert scheduler.view("ps").role is Role.FETCHER
    assert scheduler.view("p1").role is Role.CHILD


def test_a_fetcher_failing_for_itself_is_replaced(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", "p2", origin_pieces=(0,))
    scheduler.report("p2", pieces(0, parent="p0"))
    scheduler.finish("p0", PeerFinished(False, "peer: disk full"))
    with pytest.raises(UnknownPeer):
        scheduler.view("p0")
    assert scheduler.view("p2").role is Role.FETCHER
    assert parents_of(scheduler.view("p1")) == ["p2"]


def test_an_origin_failure_fails_the_task_for_everyone(
    scheduler: Scheduler, calls: Calls
) -> None:
    start_task(scheduler, "p1", "p2")
    calls.changes.clear()
    scheduler.finish("p0", PeerFinished(False, "origin: 404 Not Found"))
    assert calls.changes == ["t1"]
    for name in ("p0", "p1", "p2"):
        view = scheduler.view(name)
        assert view.role is Role.FAILED
        assert view.failure == "origin: 404 Not Found"
        assert view.parents == []

    # A later registration starts over, with a version that keeps growing.
    failed_version = scheduler.version("p1")
    announce(scheduler, "h3")
    view = scheduler.register_peer(registration("p3", "h3"))
    assert view.role is Role.FETCHER
    assert view.failure is None
    assert view.version > failed_version
    assert scheduler.view("p1").role is Role.FAILED
    assert scheduler.statistics()["tasks"] == 1


def test_a_child_failing_at_the_origin_fails_only_itself(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", "p2")
    scheduler.finish("p1", PeerFinished(False, "origin: 404 Not Found"))
    with pytest.raises(UnknownPeer):
        scheduler.view("p1")
    assert scheduler.view("p2").role is Role.CHILD
    assert scheduler.view("p0").role is Role.FETCHER


def test_a_finished_child_holds_everything_and_keeps_serving(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1, 2, 3))
    scheduler.finish("p1", PeerFinished(True))
    assert scheduler.view("p1").parents == []

    announce(scheduler, "h2")
    view = scheduler.register_peer(registration("p2", "h2"))
    info = {parent.peer_id: parent.pieces for parent in view.parents}
    assert info == {"p0": [0, 1, 2, 3], "p1": [0, 1, 2, 3]}


def test_a_range_reader_done_serves_its_pieces_and_a_peer_takes_over(
    scheduler: Scheduler,
) -> None:
    announce(scheduler, "h0", "h1", "h2")
    scheduler.register_peer(registration("p0", "h0", wanted=[1], **lengths()))
    scheduler.register_peer(registration("p1", "h1"))
    scheduler.report("p0", pieces(1))

    scheduler.finish("p0", PeerFinished(True, partial=True))

    assert scheduler.view("p1").role is Role.FETCHER  # p1 still wants it all
    view = scheduler.register_peer(registration("p2", "h2"))
    info = {parent.peer_id: parent.pieces for parent in view.parents}
    assert info["p0"] == [1]  # a parent of what it holds, not of everything
    assert scheduler.view("p0").role is Role.CHILD


def test_a_range_read_joining_tells_the_fetcher_in_a_report(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1")
    assert scheduler.view("p0").demanded == []
    before = scheduler.version("p0")

    scheduler.report("p1", PieceReport(wanted=[2, 0]))

    assert scheduler.version("p0") > before
    assert scheduler.view("p0").demanded == [0, 2]
    with pytest.raises(SchedulerError, match="wanted piece 9 is out of range"):
        scheduler.report("p1", PieceReport(wanted=[9]))


def test_a_later_download_on_the_host_replaces_its_done_peer(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1, 2, 3))
    scheduler.finish("p1", PeerFinished(True, partial=True))

    scheduler.register_peer(registration("p1b", "h1", replaces="p1"))

    with pytest.raises(UnknownPeer):
        scheduler.view("p1")
    assert scheduler.view("p1b").role is Role.CHILD


def test_only_the_same_host_may_replace_a_peer(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", origin_pieces=(0,))
    announce(scheduler, "h2")
    scheduler.register_peer(registration("p2", "h2", replaces="p1"))
    assert scheduler.view("p1").role is Role.CHILD


def test_peers_only_is_refused_while_nobody_has_the_task(
    scheduler: Scheduler,
) -> None:
    announce(scheduler, "h1", "h2")
    with pytest.raises(SchedulerError, match="priority 2 takes pieces from peers"):
        scheduler.register_peer(registration("p1", "h1", priority=Priority.PEERS_ONLY))
    scheduler.register_peer(registration("p1", "h1"))

    view = scheduler.register_peer(
        registration("p2", "h2", priority=Priority.PEERS_ONLY)
    )

    assert view.role is Role.CHILD
    assert parents_of(view) == ["p1"]


def test_a_peers_only_peer_is_never_made_the_fetcher(scheduler: Scheduler) -> None:
    announce(scheduler, "h0", "h1")
    scheduler.register_peer(registration("p0", "h0", **lengths()))
    scheduler.register_peer(registration("p1", "h1", priority=Priority.PEERS_ONLY))
    scheduler.leave_peer("p0")
    assert scheduler.view("p1").role is Role.CHILD
    assert scheduler.statistics()["fetchers"] == 0


def test_own_origin_fetches_without_asking_a_seed(
    scheduler: Scheduler, calls: Calls
) -> None:
    announce(scheduler, "h1")
    announce(scheduler, "s1", seed=True)
    view = scheduler.register_peer(
        registration("p1", "h1", priority=Priority.OWN_ORIGIN)
    )
    assert view.role is Role.FETCHER
    assert calls.triggers == []


# Parents


def test_parent_info_says_where_and_what(scheduler: Scheduler) -> None:
    scheduler.announce_host(
        HostAnnounce("s1", "s1", "198.51.100.7", 4100, transport="http", seed=True)
    )
    scheduler.announce_host(HostAnnounce("h1", "h1", "198.51.100.8", 4100))
    scheduler.register_peer(registration("ps", "s1", **lengths()))
    scheduler.report("ps", pieces(3, 1))
    view = scheduler.register_peer(registration("p1", "h1"))
    (parent,) = view.parents
    assert parent.peer_id == "ps"
    assert parent.host_id == "s1"
    assert parent.address == "198.51.100.7:4100"
    assert parent.transport == "http"
    assert parent.seed is True
    assert parent.pieces == [1, 3]
    assert [piece.number for piece in view.pieces] == [1, 3]
    assert view.content_length == lengths()["content_length"]


def test_children_stay_within_the_parent_limit(clock: Clock) -> None:
    scheduler = Scheduler(SchedulerConfig(parent_limit=2), clock=clock)
    hosts = [f"h{n}" for n in range(8)]
    announce(scheduler, *hosts)
    for n, host in enumerate(hosts):
        scheduler.register_peer(registration(f"p{n}", host))
    for n in range(1, 8):
        view = scheduler.view(f"p{n}")
        assert parents_of(view)[0] == "p0"
        assert len(view.parents) == 2


def test_two_children_may_feed_each_other(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", "p2", origin_pieces=(0, 1))
    scheduler.report("p1", pieces(0, parent="p0"))
    scheduler.report("p2", pieces(1, parent="p0"))

    one, two = scheduler.view("p1"), scheduler.view("p2")

    assert {p.peer_id: p.pieces for p in one.parents}["p2"] == [1]
    assert {p.peer_id: p.pieces for p in two.parents}["p1"] == [0]


def sole_pieces_seen(
    scheduler: Scheduler, holder: str, *children: str
) -> dict[str, list[int]]:
    """Which of ``holder``'s pieces each child sees there (none: not a parent)."""
    seen = {}
    for child in children:
        parents = {p.peer_id: p.pieces for p in scheduler.view(child).parents}
        seen[child] = parents.get(holder, [])
    return seen


def test_sole_pieces_go_to_one_child_each_two_at_a_time(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", "p2", "p3", origin_pieces=(0, 1, 2, 3))

    seen = sole_pieces_seen(scheduler, "p0", "p1", "p2", "p3")

    # The fetcher's upload goes to two pieces at once, each to one child.
    assert sorted(map(len, seen.values())) == [0, 1, 1]
    offered = [numbers[0] for numbers in seen.values() if numbers]
    assert sorted(offered) == [0, 1]

    # A piece one child took is everybody's to take from it; the next sole piece
    # goes to a child with no offer open.
    (taker,) = [child for child, numbers in seen.items() if numbers == [0]]
    scheduler.report(taker, pieces(0, parent="p0"))
    for child in ("p1", "p2", "p3"):
        if child != taker:
            at_taker = {p.peer_id: p.pieces for p in scheduler.view(child).parents}
            assert at_taker[taker] == [0]
    after = sole_pieces_seen(scheduler, "p0", "p1", "p2", "p3")
    assert sorted(n for numbers in after.values() for n in numbers) == [1, 2]


def test_a_holder_serves_pieces_others_hold_once_it_holds_none_alone(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", "p2", "p3", origin_pieces=(0, 1, 2))
    seen = sole_pieces_seen(scheduler, "p0", "p1", "p2", "p3")
    (waiting,) = [child for child, numbers in seen.items() if not numbers]
    for child in ("p1", "p2", "p3"):
        scheduler.report(child, pieces(*seen[child], parent="p0"))

    # 0 and 1 have a second holder each, and 2, still p0's alone, went to the child
    # that had none: p0's upload is for 2 only.
    during = sole_pieces_seen(scheduler, "p0", "p1", "p2", "p3")
    assert during == {child: [2] if child == waiting else [] for child in during}

    scheduler.report(waiting, pieces(2, parent="p0"))
    after = sole_pieces_seen(scheduler, "p0", "p1", "p2", "p3")
    assert after == {child: [0, 1, 2] for child in after}


def test_a_single_child_sees_every_sole_piece(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1, 2, 3))
    assert sole_pieces_seen(scheduler, "p0", "p1") == {"p1": [0, 1, 2, 3]}


def test_pieces_wanted_first_are_seen_wherever_they_are(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", "p2", origin_pieces=(0, 1, 2, 3))
    scheduler.report("p2", PieceReport(wanted=[3]))
    seen = sole_pieces_seen(scheduler, "p0", "p1", "p2")
    assert 3 in seen["p2"]
    assert 3 not in seen["p1"]


def test_an_offer_not_taken_in_time_goes_to_another_child(
    clock: Clock,
) -> None:
    config = SchedulerConfig(offers_per_holder=1, offer_timeout=5.0)
    scheduler = Scheduler(config, clock=clock, random=Random(1))
    start_task(scheduler, "p1", "p2", origin_pieces=(0,))
    before = sole_pieces_seen(scheduler, "p0", "p1", "p2")
    (first,) = [child for child, numbers in before.items() if numbers == [0]]

    clock.advance(6)
    announce(scheduler, "h0", "h1", "h2")
    scheduler.tick()

    after = sole_pieces_seen(scheduler, "p0", "p1", "p2")
    assert after[first] == []
    assert [numbers for child, numbers in after.items() if child != first] == [[0]]


def test_the_fetcher_sees_every_piece_of_its_parents(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", "p2", "p3", "p4", origin_pieces=(0, 1, 2))
    scheduler.report("p1", pieces(0, parent="p0"))
    scheduler.report("p2", pieces(1, 2, parent="p0"))
    scheduler.leave_host("h0")

    fetcher = scheduler.view("p2")

    assert fetcher.role is Role.FETCHER
    assert {p.peer_id: p.pieces for p in fetcher.parents}["p1"] == [0]
    seen = sole_pieces_seen(scheduler, "p2", "p1", "p3", "p4")
    offered = [n for numbers in seen.values() for n in numbers]
    assert sorted(offered) == [1, 2]  # the others take turns, one piece each


def test_no_parent_on_the_same_host(scheduler: Scheduler) -> None:
    announce(scheduler, "h1")
    scheduler.register_peer(registration("p1", "h1"))
    view = scheduler.register_peer(registration("p2", "h1"))
    assert view.parents == []


def test_a_view_keeps_its_parents_while_nothing_changes(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", "p2", "p3", "p4", "p5", origin_pieces=(0,))
    first = scheduler.view("p5")
    assert scheduler.view("p5") == first


def test_a_corrupt_piece_blocks_that_parent_for_that_child_only(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", "p2", origin_pieces=(0,))
    corrupt = ParentFailure("p0", 0, FailureKind.CORRUPT, "digest mismatch")
    scheduler.report("p1", PieceReport(failures=[corrupt]))
    assert "p0" not in parents_of(scheduler.view("p1"))
    scheduler.report("p0", pieces(1))
    assert "p0" not in parents_of(scheduler.view("p1"))  # for the rest of the task
    assert parents_of(scheduler.view("p2"))[0] == "p0"
    assert scheduler.view("p0").role is Role.FETCHER


def test_a_missing_piece_does_not_block_but_costs_score(clock: Clock) -> None:
    scheduler = Scheduler(SchedulerConfig(parent_limit=2), clock=clock)
    start_task(scheduler, "p1", "p2", origin_pieces=(0, 1))
    scheduler.report("p1", pieces(0, 1, parent="p0"))
    scheduler.report("p2", pieces(0, parent="p1"))
    announce(scheduler, "h3", "h4", "h5")
    # p1 holds more than p2, so it wins the second place.
    assert parents_of(scheduler.register_peer(registration("p3", "h3"))) == [
        "p0",
        "p1",
    ]

    missing = ParentFailure("p1", 2, FailureKind.MISSING)
    scheduler.report("p3", PieceReport(failures=[missing, missing]))
    assert parents_of(scheduler.view("p3")) == ["p0", "p1"]
    assert parents_of(scheduler.register_peer(registration("p4", "h4"))) == [
        "p0",
        "p2",
    ]

    # Failures are forgotten over time.
    clock.advance(300)
    assert parents_of(scheduler.register_peer(registration("p5", "h5"))) == [
        "p0",
        "p1",
    ]


def test_unreachable_from_two_hosts_removes_the_host(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", "p2", "p3", origin_pieces=(0,))
    unreachable = PieceReport(
        failures=[ParentFailure("p0", 1, FailureKind.UNREACHABLE, "refused")]
    )
    scheduler.report("p1", unreachable)
    scheduler.report("p1", unreachable)
    assert "p0" not in parents_of(scheduler.view("p1"))
    assert scheduler.view("p0").role is Role.FETCHER
    assert scheduler.statistics()["hosts"] == 4

    scheduler.report("p2", unreachable)
    assert scheduler.statistics()["hosts"] == 3
    with pytest.raises(UnknownPeer):
        scheduler.view("p0")
    roles = [scheduler.view(name).role for name in ("p1", "p2", "p3")]
    assert roles.count(Role.FETCHER) == 1


def test_old_unreachable_reports_do_not_count(
    scheduler: Scheduler, clock: Clock
) -> None:
    start_task(scheduler, "p1", "p2")
    unreachable = PieceReport(
        failures=[ParentFailure("p0", 1, FailureKind.UNREACHABLE)]
    )
    scheduler.report("p1", unreachable)
    clock.advance(16)
    announce(scheduler, "h0", "h1", "h2")
    scheduler.report("p2", unreachable)
    assert scheduler.view("p0").role is Role.FETCHER


def test_the_fetcher_is_told_what_peers_wait_for(scheduler: Scheduler) -> None:
    announce(scheduler, "h0", "h1", "h2")
    scheduler.register_peer(registration("p0", "h0", **lengths()))
    scheduler.register_peer(registration("p1", "h1", wanted=[3]))
    scheduler.register_peer(registration("p2", "h2", wanted=[2, 1]))
    scheduler.report("p0", pieces(2))
    assert scheduler.view("p0").demanded == [1, 3]
    assert scheduler.view("p1").demanded == []

    scheduler.leave_peer("p2")
    assert scheduler.view("p0").demanded == [3]


# Restarts


def test_resumed_peers_wait_for_their_fetcher_during_the_grace(
    clock: Clock,
) -> None:
    scheduler = Scheduler(clock=clock)
    announce(scheduler, "h0", "h1", "h2", "h3")
    first = scheduler.register_peer(
        registration("p1", "h1", resumed=True, held=held(0), **lengths())
    )
    fresh = scheduler.register_peer(registration("p3", "h3"))
    assert (first.role, fresh.role) == (Role.CHILD, Role.CHILD)
    assert scheduler.statistics()["fetchers"] == 0

    view = scheduler.register_peer(
        registration("p0", "h0", resumed=True, was_fetcher=True, held=held(0, 1))
    )
    assert view.role is Role.FETCHER
    assert parents_of(scheduler.view("p1"))[0] == "p0"


def test_without_the_old_fetcher_the_grace_end_elects_one(clock: Clock) -> None:
    scheduler = Scheduler(clock=clock)
    announce(scheduler, "h1", "h2")
    scheduler.register_peer(
        registration("p1", "h1", resumed=True, held=held(0), **lengths())
    )
    scheduler.register_peer(registration("p2", "h2", resumed=True, held=held(1, 2)))
    clock.advance(9.9)
    scheduler.tick()
    assert scheduler.statistics()["fetchers"] == 0

    clock.advance(0.1)
    scheduler.tick()
    assert scheduler.view("p2").role is Role.FETCHER  # holds the most
    assert parents_of(scheduler.view("p2")) == ["p1"]


def test_after_the_grace_resumed_peers_are_like_any_other(clock: Clock) -> None:
    scheduler = Scheduler(clock=clock)
    clock.advance(10)
    announce(scheduler, "h1", "h2")
    view = scheduler.register_peer(registration("p1", "h1", resumed=True))
    assert view.role is Role.FETCHER
    late = scheduler.register_peer(
        registration("p2", "h2", resumed=True, was_fetcher=True)
    )
    assert late.role is Role.CHILD


def test_registering_again_keeps_held_pieces_and_the_role(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1))
    scheduler.report("p1", pieces(0, parent="p0"))
    scheduler.register_peer(registration("p1", "h1", held=held(1), resumed=True))
    assert scheduler.register_peer(registration("p0", "h0")).role is Role.FETCHER

    announce(scheduler, "h2")
    view = scheduler.register_peer(registration("p2", "h2"))
    assert {parent.peer_id: parent.pieces for parent in view.parents} == {
        "p0": [0, 1],
        "p1": [0, 1],
    }
    assert scheduler.statistics()["peers"] == 3


# Time


def test_a_silent_host_goes_with_its_peers_and_empty_tasks(
    scheduler: Scheduler, clock: Clock
) -> None:
    announce(scheduler, "h1", "h2")
    scheduler.register_peer(registration("p1", "h1"))
    clock.advance(10)
    announce(scheduler, "h2")
    clock.advance(4.9)
    scheduler.tick()
    assert scheduler.view("p1").role is Role.FETCHER

    clock.advance(0.2)
    scheduler.tick()
    with pytest.raises(UnknownPeer):
        scheduler.view("p1")
    assert scheduler.statistics() == {
        "hosts": 1,
        "seeds": 0,
        "tasks": 0,
        "peers": 0,
        "fetchers": 0,
        "pieces_from_origin": 0,
        "pieces_from_peers": 0,
        "origin_repeats": 0,
        "fetchers_chosen": 1,
        "seed_triggers": 0,
        "promotions": 0,
    }


def test_serving_pieces_keeps_a_host_alive(scheduler: Scheduler, clock: Clock) -> None:
    start_task(scheduler, "p1", origin_pieces=(0,))
    clock.advance(10)
    announce(scheduler, "h1")
    scheduler.report("p1", pieces(0, parent="p0"))
    clock.advance(10)
    announce(scheduler, "h1")
    scheduler.tick()
    assert scheduler.view("p0").role is Role.FETCHER
    clock.advance(6)
    announce(scheduler, "h1")
    scheduler.tick()
    with pytest.raises(UnknownPeer):
        scheduler.view("p0")


def test_a_peer_silent_for_its_ttl_leaves(clock: Clock) -> None:
    config = SchedulerConfig(peer_ttl=60)
    scheduler = Scheduler(config, clock=clock)
    announce(scheduler, "h1", "h2")
    scheduler.register_peer(registration("p1", "h1"))
    scheduler.register_peer(registration("p2", "h2"))
    for _ in range(7):
        clock.advance(10)
        announce(scheduler, "h1", "h2")
        scheduler.view("p2")
        scheduler.tick()
    with pytest.raises(UnknownPeer):
        scheduler.version("p1")
    assert scheduler.view("p2").role is Role.FETCHER  # took over


def test_a_finished_peer_stays_while_its_host_announces(clock: Clock) -> None:
    scheduler = Scheduler(SchedulerConfig(peer_ttl=60), clock=clock)
    announce(scheduler, "h1", "h2")
    scheduler.register_peer(registration("p1", "h1", **lengths()))
    scheduler.finish("p1", PeerFinished(True))
    for _ in range(12):
        clock.advance(10)
        announce(scheduler, "h1", "h2")
        scheduler.tick()
    view = scheduler.register_peer(registration("p2", "h2", **lengths()))
    assert [parent.peer_id for parent in view.parents] == ["p1"]
    assert view.role is Role.CHILD


# Versions and statistics


def test_versions_grow_and_are_announced_when_a_view_may_change(
    scheduler: Scheduler, calls: Calls
) -> None:
    announce(scheduler, "h1", "h2")
    view = scheduler.register_peer(registration("p1", "h1", **lengths()))
    assert calls.changes == ["t1"]
    assert scheduler.version("p1") == view.version

    scheduler.view("p1")
    scheduler.report("p1", PieceReport())
    assert calls.changes == ["t1"]

    scheduler.report("p1", pieces(0))
    assert calls.changes == ["t1", "t1"]
    assert scheduler.version("p1") > view.version
    scheduler.report("p1", pieces(0))
    assert len(calls.changes) == 2

    scheduler.register_peer(registration("p2", "h2", task_id="t2"))
    assert calls.changes[-1] == "t2"
    scheduler.leave_peer("p2")
    assert calls.changes[-1] == "t2"


def test_statistics_count_the_decisions_that_go_to_the_origin(
    scheduler: Scheduler, clock: Clock
) -> None:
    announce(scheduler, "s1", seed=True)
    announce(scheduler, "h1")
    scheduler.register_peer(registration("p1", "h1"))
    clock.advance(SchedulerConfig().seed_timeout + 0.1)
    announce(scheduler, "s1", "h1")
    scheduler.tick()  # the seed never registered: p1 takes over

    statistics = scheduler.statistics()
    assert scheduler.view("p1").role is Role.FETCHER
    assert statistics["seed_triggers"] == 1
    assert statistics["promotions"] == 1
    assert statistics["fetchers_chosen"] == 1


def test_statistics_count_pieces_by_source(scheduler: Scheduler) -> None:
    start_task(scheduler, "p1", origin_pieces=(0, 1))
    announce(scheduler, "s1", seed=True)
    scheduler.report("p1", pieces(0, 1, parent="p0"))
    scheduler.report("p1", pieces(2))  # a peer that fell back to the origin
    scheduler.report("p0", pieces(2))
    assert scheduler.statistics() == {
        "hosts": 3,
        "seeds": 1,
        "tasks": 1,
        "peers": 2,
        "fetchers": 1,
        "pieces_from_origin": 4,
        "pieces_from_peers": 2,
        "origin_repeats": 1,
        "fetchers_chosen": 1,
        "seed_triggers": 0,
        "promotions": 0,
    }


# Bad input


def test_unknown_hosts_are_refused(scheduler: Scheduler) -> None:
    with pytest.raises(UnknownHost, match=r"host 'h9' is not announced.*announce it"):
        scheduler.register_peer(registration("p1", "h9"))
    with pytest.raises(UnknownHost):
        scheduler.leave_host("h9")
    with pytest.raises(UnknownHost):
        scheduler.take_triggers("h9")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.view("p9"),
        lambda s: s.version("p9"),
        lambda s: s.report("p9", PieceReport()),
        lambda s: s.finish("p9", PeerFinished(True)),
        lambda s: s.leave_peer("p9"),
    ],
)
def test_unknown_peers_are_refused(scheduler: Scheduler, call: Any) -> None:
    with pytest.raises(UnknownPeer, match=r"peer 'p9' is not registered.*register it"):
        call(scheduler)


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (pieces(4), "piece 4 is out of range; the task has 4 pieces"),
        (pieces(-1), "piece -1 is out of range"),
        (
            PieceReport([ReportedPiece(0, "blake3:other", None, 0.1)]),
            "piece 0 has digest blake3:other, but the task's is blake3:0+; drop",
        ),
        (
            PieceReport(
                [
                    ReportedPiece(1, digest(1), None, 0.1),
                    ReportedPiece(1, "blake3:other", None, 0.1),
                ]
            ),
            "piece 1 has digest blake3:other",
        ),
        (PieceReport([ReportedPiece(1, "", None, 0.1)]), "piece 1 has no digest"),
        (
            PieceReport(content_length=5),
            "content_length 5 conflicts with the task's 12582913",
        ),
        (PieceReport(piece_length=1024), "piece_length 1024 conflicts"),
        (pieces(1, cost=-1.0), "piece 1 took -1.0 seconds"),
        (pieces(1, cost=math.nan), "piece 1 took nan seconds"),
    ],
)
def test_impossible_reports_are_refused_whole(
    scheduler: Scheduler, calls: Calls, report: PieceReport, message: str
) -> None:
    start_task(scheduler, "p1", origin_pieces=(0,))
    calls.changes.clear()
    before = scheduler.view("p1")
    # A valid piece goes with the impossible content, and must not be taken either.
    whole = PieceReport(
        [*pieces(2).pieces, *report.pieces],
        content_length=report.content_length,
        piece_length=report.piece_length,
    )
    with pytest.raises(SchedulerError, match=message):
        scheduler.report("p1", whole)
    assert scheduler.view("p1") == before
    assert calls.changes == []


def test_pieces_need_the_lengths_first(scheduler: Scheduler) -> None:
    announce(scheduler, "h1")
    scheduler.register_peer(registration("p1", "h1"))
    with pytest.raises(SchedulerError, match="piece 0 came before the task's"):
        scheduler.report("p1", pieces(0))
    scheduler.report("p1", PieceReport(pieces(0).pieces, **lengths()))
    assert scheduler.view("p1").pieces == held(0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"held": held(0)}, "piece 0 came before"),
        ({"held": held(9), **lengths()}, "piece 9 is out of range"),
        ({"wanted": [4], **lengths()}, "wanted piece 4 is out of range"),
        ({"wanted": [-1]}, "wanted piece -1 is out of range"),
        ({"content_length": -1}, "content_length must be at least 0"),
        ({"content_length": 1, "piece_length": 0}, "piece_length must be at least 1"),
        (
            {"content_length": 1 << 40, "piece_length": 1},
            "at most 1048576 are supported",
        ),
    ],
)
def test_impossible_registrations_are_refused(
    scheduler: Scheduler, fields: dict[str, Any], message: str
) -> None:
    announce(scheduler, "h1")
    with pytest.raises(SchedulerError, match=message):
        scheduler.register_peer(registration("p1", "h1", **fields))
    assert scheduler.statistics()["peers"] == 0


def test_a_registration_conflicting_with_the_task_is_refused(
    scheduler: Scheduler,
) -> None:
    start_task(scheduler, origin_pieces=(0,))
    announce(scheduler, "h1")
    with pytest.raises(SchedulerError, match="piece_length 1 conflicts"):
        scheduler.register_peer(registration("p1", "h1", piece_length=1))
    with pytest.raises(SchedulerError, match="piece 0 has digest blake3:x"):
        scheduler.register_peer(
            registration("p1", "h1", held=[PieceInfo(0, "blake3:x")])
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"piece_port": 0}, "piece_port 0 is not a TCP port"),
        ({"piece_port": 65536}, "piece_port 65536"),
        ({"upload_capacity": -1}, "upload_capacity must not be negative"),
    ],
)
def test_impossible_announcements_are_refused(
    scheduler: Scheduler, fields: dict[str, int], message: str
) -> None:
    announce_fields: dict[str, Any] = {"ip": "192.0.2.1", **fields}
    announce_fields.setdefault("piece_port", 4000)
    with pytest.raises(SchedulerError, match=message):
        scheduler.announce_host(HostAnnounce("h1", "h1", **announce_fields))


# The evaluator


def make_host(host_id: str, **fields: Any) -> Host:
    return Host(announcement(host_id, **fields), now=0.0)


def make_peer(peer_id: str, host: Host, task: Task, *numbers: int) -> Peer:
    peer = Peer(peer_id, task, host, seq=len(task.peers), now=0.0)
    peer.hold(sum(1 << number for number in numbers))
    task.peers[peer_id] = peer
    return peer


def test_location_affinity_counts_leading_equal_parts() -> None:
    def affinity(mine: str, theirs: str) -> float:
        return location_affinity(
            make_host("a", location=mine), make_host("b", location=theirs)
        )

    assert affinity("EU|fr|paris|z1|r1", "eu|FR|Paris|z1|r1") == 1.0
    assert affinity("eu|fr|paris|z1|r1|x", "eu|fr|paris|z1|r1|y") == 1.0
    assert affinity("eu|fr|paris", "eu|fr|lyon") == pytest.approx(0.4)
    assert affinity("eu|fr", "us|fr") == 0.0
    assert affinity("", "eu") == 0.0


def test_idc_affinity_needs_an_equal_known_idc() -> None:
    assert idc_affinity(make_host("a", idc="DC1"), make_host("b", idc="dc1")) == 1.0
    assert idc_affinity(make_host("a", idc="dc1"), make_host("b", idc="dc2")) == 0.0
    assert idc_affinity(make_host("a"), make_host("b")) == 0.0


def test_free_upload_is_the_share_of_places_left() -> None:
    host = make_host("a", upload_capacity=4)
    host.children = 1
    assert free_upload(host) == 0.75
    host.children = 6
    assert free_upload(host) == 0.0
    assert free_upload(make_host("b", upload_capacity=0)) == 0.0


def test_speed_is_neutral_until_measured() -> None:
    evaluator = Evaluator(4, Random(0))
    fast, slow = make_host("fast"), make_host("slow")
    assert speed(fast, evaluator.typical_rate) == 0.5
    evaluator.note_transfer(fast, PIECE, 0.1)
    evaluator.note_transfer(slow, PIECE, 10.0)
    evaluator.note_transfer(slow, PIECE, 0.0)  # not measurable: ignored
    assert (
        speed(fast, evaluator.typical_rate) > 0.5 > speed(slow, evaluator.typical_rate)
    )
    assert speed(make_host("new"), evaluator.typical_rate) == 0.5


def test_failures_lower_reliability_then_fade() -> None:
    evaluator = Evaluator(4, Random(0))
    host = make_host("a")
    assert reliability(host, 0.0) == 1.0
    evaluator.note_failure(host, 0.0)
    assert reliability(host, 0.0) == 0.5
    evaluator.note_failure(host, 0.0)
    assert reliability(host, 0.0) == pytest.approx(1 / 3)
    assert reliability(host, 30.0) == pytest.approx(0.5)
    assert reliability(host, 3000.0) == pytest.approx(1.0)


def test_scores_stay_within_bounds_and_prefer_seeds_slightly() -> None:
    evaluator = Evaluator(4, Random(0))
    task = Task(registration("c", "h0"))
    task.set_lengths(4 * PIECE, PIECE)
    child = make_peer("c", make_host("h0", idc="dc", location="a|b"), task)
    best_host = make_host("h1", idc="dc", location="a|b", seed=True)
    best = make_peer("p1", best_host, task, 0, 1, 2, 3)
    normal = make_peer(
        "p2", make_host("h2", idc="dc", location="a|b"), task, 0, 1, 2, 3
    )
    # Everything at its best but the speed, unmeasured, so counted half.
    assert evaluator.score(child, best, 0.0) == pytest.approx(0.925)
    assert evaluator.score(child, normal, 0.0) == pytest.approx(0.875)
    worst_host = make_host("h3", upload_capacity=0)
    evaluator.note_failure(worst_host, 0.0)
    worst = make_peer("p3", worst_host, task)
    assert 0.0 <= evaluator.score(child, worst, 0.0) <= 0.2


# Any sequence of events


HOSTS = ("h0", "h1", "h2", "s0")
PEERS = tuple(f"p{n}" for n in range(8))
TASKS = ("t0", "t1")
PIECE_NUMBERS = st.sets(st.integers(0, 3), max_size=4)
SMALL: dict[str, Any] = {"content_length": 40, "piece_length": 10}


class SchedulerMachine(RuleBasedStateMachine):
    """Random registrations, reports, failures, departures and time."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        config = SchedulerConfig(
            keepalive=2, host_ttl=10, parent_limit=2, seed_timeout=2, restart_grace=3
        )
        self.scheduler = Scheduler(config, clock=self.clock, random=Random(0))
        for host_id in HOSTS:
            self.announce(host_id)

    @rule(host_id=st.sampled_from(HOSTS))
    def announce(self, host_id: str) -> None:
        self.scheduler.announce_host(announcement(host_id, seed=host_id[0] == "s"))

    @rule(
        peer_id=st.sampled_from(PEERS),
        host_id=st.sampled_from(HOSTS),
        task_id=st.sampled_from(TASKS),
        numbers=PIECE_NUMBERS,
        resumed=st.booleans(),
        was_fetcher=st.booleans(),
        known=st.booleans(),
    )
    def register(
        self,
        peer_id: str,
        host_id: str,
        task_id: str,
        numbers: set[int],
        resumed: bool,
        was_fetcher: bool,
        known: bool,
    ) -> None:
        request = registration(
            peer_id,
            host_id,
            task_id,
            held=held(*numbers) if known else [],
            resumed=resumed,
            was_fetcher=was_fetcher,
            **(SMALL if known else {}),
        )
        with contextlib.suppress(UnknownHost):
            self.scheduler.register_peer(request)

    @rule(peer_id=st.sampled_from(PEERS), numbers=PIECE_NUMBERS)
    def take_pieces(self, peer_id: str, numbers: set[int]) -> None:
        try:
            view = self.scheduler.view(peer_id)
        except UnknownPeer:
            return
        reported = []
        for number in sorted(numbers):
            holders = [p.peer_id for p in view.parents if number in p.pieces]
            parent = holders[0] if holders else None
            reported.append(ReportedPiece(number, digest(number), parent, 0.01))
        self.scheduler.report(peer_id, PieceReport(reported, **SMALL))

    @rule(
        peer_id=st.sampled_from(PEERS),
        parent_id=st.sampled_from(PEERS),
        kind=st.sampled_from(FailureKind),
    )
    def fail_parent(self, peer_id: str, parent_id: str, kind: FailureKind) -> None:
        failure = ParentFailure(parent_id, 0, kind)
        with contextlib.suppress(UnknownPeer):
            self.scheduler.report(peer_id, PieceReport(failures=[failure]))

    @rule(
        peer_id=st.sampled_from(PEERS),
        success=st.booleans(),
        reason=st.sampled_from(["origin: 404", "peer: disk full"]),
    )
    def finish(self, peer_id: str, success: bool, reason: str) -> None:
        with contextlib.suppress(UnknownPeer):
            self.scheduler.finish(peer_id, PeerFinished(success, reason))

    @rule(peer_id=st.sampled_from(PEERS))
    def leave_peer(self, peer_id: str) -> None:
        with contextlib.suppress(UnknownPeer):
            self.scheduler.leave_peer(peer_id)

    @rule(host_id=st.sampled_from(HOSTS))
    def leave_host(self, host_id: str) -> None:
        with contextlib.suppress(UnknownHost):
            self.scheduler.leave_host(host_id)

    @rule(seconds=st.floats(0, 12))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.scheduler.tick()

    @invariant()
    def graph_is_sound(self) -> None:
        check_graph(self.scheduler)

    @invariant()
    def one_fetcher_per_task(self) -> None:
        fetchers: dict[str, int] = {}
        for peer_id in PEERS:
            try:
                view = self.scheduler.view(peer_id)
            except UnknownPeer:
                continue
            if view.role is Role.FETCHER:
                task_id = self.scheduler._peers[peer_id].task.id
                fetchers[task_id] = fetchers.get(task_id, 0) + 1
        assert all(count == 1 for count in fetchers.values())
        check_graph(self.scheduler)


def check_graph(scheduler: Scheduler) -> None:
    """The graph and the offers of every task agree with the bookkeeping."""
    peers = scheduler._peers
    tasks = {peer.task for peer in peers.values()} | set(scheduler._tasks.values())
    for task in tasks:
        assert task.fetcher is None or (
            task.peers.get(task.fetcher.id) is task.fetcher
            and not task.fetcher.finished
        )
        for peer in task.peers.values():
            assert peers[peer.id] is peer
            assert not (peer.finished and peer.parents)
            for parent in peer.parents.values():
                assert parent.children[peer.id] is peer
                assert task.peers[parent.id] is parent
                assert parent.host is not peer.host
                assert parent.id not in peer.blocked
            for child in peer.children.values():
                assert child.parents[peer.id] is peer
        holders = [0] * (task.piece_count or 0)
        for peer in task.peers.values():
            for number in peer.held_numbers():
                holders[number] += 1
        assert holders == task.holders
        check_offers(task)
    for host in scheduler._hosts.values():
        edges = sum(len(peer.children) for peer in host.peers.values())
        assert host.children == edges


def check_offers(task: Task) -> None:
    """Each sole piece is offered to one child at most, by its holder, and the
    counts of open offers add up."""
    sole = {n for n, count in enumerate(task.holders) if count == 1}
    assert sole == {n for n in range(task.piece_count or 0) if task.sole >> n & 1}
    assert task.offered == sum(1 << number for number in task.offers)
    out: dict[str, int] = {}
    into: dict[str, int] = {}
    for number, offer in task.offers.items():
        assert offer.number == number
        assert offer.holder.held >> number & 1
        assert offer.child.offered >> number & 1
        out[offer.holder.id] = out.get(offer.holder.id, 0) + 1
        into[offer.child.id] = into.get(offer.child.id, 0) + 1
    for peer in task.peers.values():
        assert peer.offers_out == out.get(peer.id, 0)
        assert peer.offers_in == into.get(peer.id, 0)


def test_any_sequence_keeps_the_bookkeeping_and_one_fetcher() -> None:
    run_state_machine_as_test(
        SchedulerMachine,
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None),
    )
