"""Placement as table tests: a pure function of a snapshot, an ask and a random generator.

Nodes are tiny and named by letter. A `FixedStart` generator makes the walk start at a known
node; with at most two feasible nodes the sample (`ceil(log2 N)`, at least 2) covers them all,
so the choice is the best score and nothing else."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from controller.models import (
    NodeStatus,
    PlacementConstraints,
    PlacementStrategy,
    Resources,
    frozen_map,
)
from controller.scheduler import placement
from controller.scheduler.placement import (
    Ask,
    NodeView,
    NoFit,
    Snapshot,
    place,
    sample_limit,
)

READY, PENDING, SUSPECT, OFFLINE = (
    NodeStatus.READY,
    NodeStatus.PENDING,
    NodeStatus.SUSPECT,
    NodeStatus.OFFLINE,
)
SPREAD, BINPACK = PlacementStrategy.SPREAD, PlacementStrategy.BINPACK


class FixedStart(random.Random):
    """A generator whose walks over the nodes always start at position `first`."""

    def __init__(self, first: int = 0) -> None:
        super().__init__(0)
        self.first = first

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return self.first


def node(
    node_id: str,
    status: NodeStatus = READY,
    cpu: float = 4,
    mem: float = 8,
    disk: float = 100,
    provider: str = "aws",
    region: str = "us-east-1",
    labels: dict[str, str] | None = None,
) -> NodeView:
    return NodeView(
        node_id, status, provider, region, frozen_map(labels), Resources(cpu, mem, disk)
    )


def ask(
    cpu: float = 1,
    mem: float = 1,
    disk: float = 0,
    strategy: PlacementStrategy = SPREAD,
    provider: str = "",
    region: str = "",
    labels: dict[str, str] | None = None,
    avoid: frozenset[str] = frozenset(),
) -> Ask:
    return Ask(
        Resources(cpu, mem, disk),
        PlacementConstraints(provider, region, frozen_map(labels)),
        strategy,
        avoid,
    )


@dataclass
class Case:
    nodes: list[NodeView]
    ask: Ask
    expected: str  # a node id
    used: dict[str, Resources] = field(default_factory=dict)
    collocated: dict[str, int] = field(default_factory=dict)


def choose(case: Case, rng: random.Random | None = None) -> str | NoFit:
    snapshot = Snapshot(case.nodes, case.used)
    return place(case.ask, snapshot, Counter(case.collocated), rng or FixedStart())


CONSTRAINTS: dict[str, Case] = {
    "a provider constraint picks the node of that provider": Case(
        [node("a", provider="aws"), node("b", provider="gcp")], ask(provider="gcp"), "b"
    ),
    "a region constraint picks the node in that region": Case(
        [node("a", region="us-east-1"), node("b", region="eu-west-1")],
        ask(region="eu-west-1"),
        "b",
    ),
    "a label constraint picks the node with that label": Case(
        [node("a", labels={"zone": "a"}), node("b", labels={"gpu": "yes"})],
        ask(labels={"gpu": "yes"}),
        "b",
    ),
    "every label of the constraint must match": Case(
        [
            node("a", labels={"zone": "a"}),
            node("b", labels={"zone": "a", "gpu": "no"}),
            node("c", labels={"zone": "a", "gpu": "yes", "extra": "ok"}),
        ],
        ask(labels={"zone": "a", "gpu": "yes"}),
        "c",
    ),
    "provider, region and labels together": Case(
        [
            node("a", provider="gcp", region="eu-west-1", labels={"gpu": "yes"}),
            node("b", provider="aws", region="us-east-1", labels={"gpu": "yes"}),
            node("c", provider="aws", region="eu-west-1", labels={"gpu": "no"}),
            node("d", provider="aws", region="eu-west-1", labels={"gpu": "yes"}),
        ],
        ask(provider="aws", region="eu-west-1", labels={"gpu": "yes"}),
        "d",
    ),
    "a node without the cpu free is skipped": Case(
        [node("a", cpu=1), node("b", cpu=4)], ask(cpu=2), "b"
    ),
    "a node without the memory free is skipped": Case(
        [node("a", mem=1), node("b", mem=8)], ask(mem=2), "b"
    ),
    "a node without the disk free is skipped": Case(
        [node("a", disk=10), node("b", disk=100)], ask(disk=20), "b"
    ),
    "what is already placed on a node is not free": Case(
        [node("a", cpu=8), node("b", cpu=2)], ask(cpu=2), "b", used={"a": Resources(7, 0, 0)}
    ),
    "a node with exactly the resources free fits": Case(
        [node("a", cpu=2, mem=2, disk=2)], ask(cpu=2, mem=2, disk=2), "a"
    ),
    "only a READY node is used": Case(
        [node("a", PENDING), node("b", SUSPECT), node("c", OFFLINE), node("d", READY)],
        ask(),
        "d",
    ),
}


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_placement_respects_constraints_capacity_and_status(name: str) -> None:
    case = CONSTRAINTS[name]
    for first in range(len(case.nodes)):  # wherever the walk starts
        assert choose(case, FixedStart(first)) == case.expected


# Node a is mostly used, node b mostly free (both 8 cpu, 16 GiB memory).
BUSY_AND_IDLE = [node("a", cpu=8, mem=16), node("b", cpu=8, mem=16)]
BUSY = {"a": Resources(6, 12, 0), "b": Resources(1, 2, 0)}

STRATEGIES: dict[str, Case] = {
    "spread picks the least allocated node": Case(BUSY_AND_IDLE, ask(), "b", used=BUSY),
    "binpack picks the most allocated node": Case(
        BUSY_AND_IDLE, ask(strategy=BINPACK), "a", used=BUSY
    ),
    "spread judges by the share of capacity left, not the amount": Case(
        # a small empty node keeps 3/4 free; a big half-used one keeps 7/16
        [node("a", cpu=4, mem=8), node("b", cpu=16, mem=32)],
        ask(cpu=1, mem=2),
        "a",
        used={"b": Resources(8, 16, 0)},
    ),
    "binpack fills the node it would leave fullest": Case(
        [node("a", cpu=4, mem=8), node("b", cpu=16, mem=32)],
        ask(cpu=1, mem=2, strategy=BINPACK),
        "b",
        used={"b": Resources(8, 16, 0)},
    ),
    "offline nodes do not count towards the sample": Case(
        [node("x", OFFLINE), node("a", cpu=8, mem=16), node("y", OFFLINE), node("b", cpu=8)],
        ask(),
        "b",
        used=BUSY,
    ),
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategies_pick_by_allocation(name: str) -> None:
    case = STRATEGIES[name]
    for first in range(len(case.nodes)):
        assert choose(case, FixedStart(first)) == case.expected


ANTI_AFFINITY: dict[str, Case] = {
    "spread: a replica avoids a node holding a sibling even if it is emptier": Case(
        BUSY_AND_IDLE, ask(), "a", used=BUSY, collocated={"b": 1}
    ),
    "binpack: a replica avoids a node holding a sibling even if it is fuller": Case(
        BUSY_AND_IDLE, ask(strategy=BINPACK), "b", used=BUSY, collocated={"a": 1}
    ),
    "a replica shares a node with a sibling when no other node fits": Case(
        [node("a"), node("b", cpu=0.5)], ask(), "a", collocated={"a": 1}
    ),
    "when every node holds siblings, the one with the fewest is picked": Case(
        [node("a"), node("b")], ask(), "b", collocated={"a": 2, "b": 1}
    ),
}


@pytest.mark.parametrize("name", ANTI_AFFINITY)
def test_replicas_of_one_deployment_land_on_different_nodes_when_possible(name: str) -> None:
    case = ANTI_AFFINITY[name]
    for first in range(len(case.nodes)):
        assert choose(case, FixedStart(first)) == case.expected


def test_the_third_replica_goes_to_the_third_node_wherever_the_walk_starts() -> None:
    case = Case([node("a"), node("b"), node("c")], ask(), "c", collocated={"a": 1, "b": 1})
    assert [choose(case, FixedStart(first)) for first in range(3)] == ["c", "c", "c"]


AVOID: dict[str, Case] = {
    "a node the replica failed on is avoided when another fits": Case(
        BUSY_AND_IDLE, ask(avoid=frozenset({"b"})), "a", used=BUSY
    ),
    "a node the replica failed on is the last resort": Case(
        [node("a"), node("b", OFFLINE)], ask(avoid=frozenset({"a"})), "a"
    ),
    "a node with a sibling is preferred to a node the replica failed on": Case(
        [node("a"), node("b")], ask(avoid=frozenset({"b"})), "a", collocated={"a": 1}
    ),
    "of several avoided nodes, the best scored is the last resort": Case(
        [node("a", cpu=8, mem=16), node("b", cpu=8, mem=16), node("c", OFFLINE)],
        ask(avoid=frozenset({"a", "b"})),
        "b",
        used=BUSY,
    ),
}


@pytest.mark.parametrize("name", AVOID)
def test_nodes_a_replica_failed_on_are_used_only_as_a_last_resort(name: str) -> None:
    case = AVOID[name]
    for first in range(len(case.nodes)):
        assert choose(case, FixedStart(first)) == case.expected


NO_FIT: dict[str, tuple[list[NodeView], Ask, dict[str, Resources], str]] = {
    # name: (nodes, ask, used, the exact reason)
    "no nodes at all": ([], ask(), {}, "no nodes are registered"),
    "too small and offline, counted": (
        [
            node("a", region="eu-west-1", cpu=2),
            node("b", region="eu-west-1", cpu=2),
            node("c", OFFLINE, region="eu-west-1", cpu=16),
        ],
        ask(cpu=4, mem=8, region="eu-west-1"),
        {},
        "no READY node in region eu-west-1 with 4 cpu, 8 GiB memory, 0 GiB disk free:"
        " 2 lack cpu, 1 are OFFLINE",
    ),
    "every kind of reason": (
        [
            node("p", PENDING),
            node("s", SUSPECT),
            node("g", provider="gcp"),
            node("e", region="eu-west-1"),
            node("l"),
            node("m", labels={"gpu": "yes"}, mem=1),
            node("d", labels={"gpu": "yes"}, disk=1),
            node("d2", labels={"gpu": "yes"}, disk=1),
        ],
        ask(cpu=1, mem=2, disk=5, provider="aws", region="us-east-1", labels={"gpu": "yes"}),
        {},
        "no READY node of provider aws in region us-east-1 with labels gpu=yes with 1 cpu,"
        " 2 GiB memory, 5 GiB disk free: 2 lack disk, 1 are PENDING, 1 are SUSPECT,"
        " 1 have another provider, 1 are in another region, 1 lack the labels, 1 lack memory",
    ),
    "what is already placed counts": (
        [node("a", cpu=4, mem=8)],
        ask(cpu=0.5, mem=4),
        {"a": Resources(1, 6, 0)},
        "no READY node with 0.5 cpu, 4 GiB memory, 0 GiB disk free: 1 lack memory",
    ),
}


@pytest.mark.parametrize("name", NO_FIT)
def test_when_nothing_fits_the_reason_counts_why(name: str) -> None:
    nodes, wanted, used, reason = NO_FIT[name]
    assert place(wanted, Snapshot(nodes, used), Counter(), random.Random(1)) == NoFit(reason)


def test_booked_resources_are_not_free_for_the_next_placement() -> None:
    snapshot = Snapshot([node("a", cpu=2)], {})
    wanted = ask(cpu=1)
    for _ in range(2):
        chosen = place(wanted, snapshot, Counter(), FixedStart())
        assert chosen == "a"
        snapshot.take(chosen, wanted.resources)
    assert place(wanted, snapshot, Counter(), FixedStart()) == NoFit(
        "no READY node with 1 cpu, 1 GiB memory, 0 GiB disk free: 1 lack cpu"
    )


SAMPLE_LIMITS = {
    "no node": (0, 2),
    "one node": (1, 2),
    "two nodes": (2, 2),
    "three nodes": (3, 2),
    "four nodes": (4, 2),
    "five nodes": (5, 3),
    "nine nodes": (9, 4),
    "a thousand nodes": (1000, 10),
    "ten thousand nodes": (10_000, 14),
}


@pytest.mark.parametrize("name", SAMPLE_LIMITS)
def test_the_sample_is_ceil_log2_of_the_nodes_and_at_least_two(name: str) -> None:
    nodes, limit = SAMPLE_LIMITS[name]
    assert sample_limit(nodes) == limit


def fleet(size: int, ready: int = 1) -> list[NodeView]:
    """`size` nodes; every `ready`-th is READY, the others OFFLINE."""
    return [node(f"n{i:05}", READY if i % ready == 0 else OFFLINE) for i in range(size)]


@pytest.fixture
def examined(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the nodes placement checks, in order (a spy on its feasibility check)."""
    seen: list[str] = []
    check = placement._why_not

    def spy(n: NodeView, a: Ask, free: Resources) -> str | None:
        seen.append(n.id)
        return check(n, a, free)

    monkeypatch.setattr(placement, "_why_not", spy)
    return seen


SAMPLING = {
    "every node fits": (1, 14),
    "every other node fits": (2, 2 * 14 - 1),
    "one node in ten fits": (10, 10 * 14 - 9),
}


@pytest.mark.parametrize("name", SAMPLING)
def test_with_ten_thousand_nodes_placement_examines_only_a_sample(
    name: str, examined: list[str]
) -> None:
    ready, most = SAMPLING[name]
    nodes = fleet(10_000, ready)
    chosen = place(ask(), Snapshot(nodes, {}), Counter(), FixedStart(0))
    assert len(examined) == most
    assert chosen in examined
    assert examined == [n.id for n in nodes[:most]]  # a walk from where it started


def test_the_walk_starts_where_the_generator_says_and_wraps_around(examined: list[str]) -> None:
    nodes = fleet(10_000)
    chosen = place(ask(), Snapshot(nodes, {}), Counter(), FixedStart(9_990))
    window = [n.id for n in nodes[9_990:]] + [n.id for n in nodes[:4]]
    assert examined == window
    assert chosen in window


def test_the_best_node_outside_the_sample_is_not_looked_for(examined: list[str]) -> None:
    nodes = fleet(10_000)
    used = {n.id: Resources(3, 6, 0) for n in nodes[:-1]}  # only the last node is idle
    chosen = place(ask(), Snapshot(nodes, used), Counter(), FixedStart(0))
    assert chosen != nodes[-1].id
    assert len(examined) == 14


def test_when_nothing_fits_every_node_is_examined_once_for_the_walk_and_the_reason(
    examined: list[str],
) -> None:
    nodes = [node(f"n{i}", OFFLINE) for i in range(100)]
    chosen = place(ask(), Snapshot(nodes, {}), Counter(), FixedStart(0))
    assert chosen == NoFit(
        "no READY node with 1 cpu, 1 GiB memory, 0 GiB disk free: 100 are OFFLINE"
    )
    assert len(examined) == 100


# Work per pass: a snapshot remembers what a long walk learned (free resources only shrink while
# it lives), so a deployment costs about its nodes plus its replicas, not their product.


def place_all(snapshot: Snapshot, wanted: Ask, count: int, seed: int = 5) -> list[str | NoFit]:
    """Places `count` replicas of one deployment, as reconcile does (booking each)."""
    collocated: Counter[str] = Counter()
    rng = random.Random(seed)
    chosen: list[str | NoFit] = []
    for _ in range(count):
        one = place(wanted, snapshot, collocated, rng)
        if isinstance(one, str):
            snapshot.take(one, wanted.resources)
            collocated[one] += 1
        chosen.append(one)
    return chosen


def test_a_thousand_replicas_that_fit_nowhere_cost_one_scan_of_the_nodes(
    examined: list[str],
) -> None:
    nodes = fleet(2_000)  # every node READY, none with 64 cpu
    chosen = place_all(Snapshot(nodes, {}), ask(cpu=64), 1_000)
    assert set(chosen) == {
        NoFit("no READY node with 64 cpu, 1 GiB memory, 0 GiB disk free: 2000 lack cpu")
    }
    assert len(examined) <= 2 * 2_000  # not 1,000 x 2 x 2,000


def test_another_deployment_with_the_same_ask_costs_no_scan(examined: list[str]) -> None:
    snapshot = Snapshot(fleet(2_000), {})
    place_all(snapshot, ask(cpu=64), 1)
    before = len(examined)
    place_all(snapshot, ask(cpu=64), 1_000)
    assert len(examined) == before


def test_replicas_that_fit_on_a_few_nodes_reuse_one_scan(examined: list[str]) -> None:
    nodes = fleet(4_000, ready=400)  # 10 READY nodes with 4 cpu each, far apart
    chosen = place_all(Snapshot(nodes, {}), ask(cpu=1), 50)
    assert sum(isinstance(c, str) for c in chosen) == 40
    assert chosen[-1] == NoFit(
        "no READY node with 1 cpu, 1 GiB memory, 0 GiB disk free: 3990 are OFFLINE, 10 lack cpu"
    )
    assert len(examined) <= 2 * 4_000  # not 50 walks of ~2,000


def test_the_remembered_walk_chooses_what_a_full_walk_would() -> None:
    # A full walk (no memory) at each step: a fresh snapshot with the same bookings.
    nodes = fleet(3_000, ready=150)
    remembered = Snapshot(nodes, {})
    used: dict[str, Resources] = {}
    collocated: Counter[str] = Counter()
    rng_a, rng_b = random.Random(9), random.Random(9)
    wanted = ask(cpu=1)
    for _ in range(60):
        expected = place(wanted, Snapshot(nodes, used), collocated, rng_b)
        got = place(wanted, remembered, collocated, rng_a)
        assert got == expected
        if isinstance(got, str):
            remembered.take(got, wanted.resources)
            used[got] = used.get(got, Resources()).plus(wanted.resources)
            collocated[got] += 1


def placements(seed: int, count: int) -> list[str | NoFit]:
    nodes = [node(f"n{i}", cpu=64, mem=128) for i in range(200)]
    snapshot = Snapshot(nodes, {})
    collocated: Counter[str] = Counter()
    rng = random.Random(seed)
    chosen: list[str | NoFit] = []
    for _ in range(count):
        one = place(ask(cpu=1, mem=1), snapshot, collocated, rng)
        assert isinstance(one, str)
        snapshot.take(one, Resources(1, 1, 0))
        collocated[one] += 1
        chosen.append(one)
    return chosen


def test_placement_is_deterministic_for_a_seeded_generator() -> None:
    assert placements(42, 50) == placements(42, 50)
    assert placements(42, 50) != placements(43, 50)


def test_fifty_replicas_on_two_hundred_nodes_never_share_a_node() -> None:
    # Anti-affinity on a large fleet: with this seed no sample of 8 nodes holds only siblings.
    assert len(set(placements(7, 50))) == 50
