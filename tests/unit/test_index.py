"""The in-memory index: postings follow every put, replace and remove; queries intersect terms
and walk ids in order after a cursor."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.models import Capabilities, Node, NodeStatus, frozen_map
from controller.registry.index import Index, Term

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def terms_of(node: Node) -> Iterable[Term]:
    yield ("status", node.status.value)
    yield ("provider", node.provider)
    for key, value in node.labels.items():
        yield (f"labels.{key}", value)


def node(
    node_id: str,
    provider: str = "aws",
    status: NodeStatus = NodeStatus.PENDING,
    **labels: str,
) -> Node:
    return Node(
        id=node_id,
        provider=provider,
        endpoint="10.0.0.1:7070",
        region="",
        capabilities=Capabilities(1.0, 1.0),
        create_time=T0,
        update_time=T0,
        labels=frozen_map(labels),
        status=status,
    )


def ids(nodes: Iterable[Node]) -> list[str]:
    return [n.id for n in nodes]


# Put out of id order on purpose: queries must still come back in id order.
FLEET = [
    node("e", "gcp", NodeStatus.READY, zone="b"),
    node("a", "aws", NodeStatus.READY, zone="a"),
    node("c", "aws", NodeStatus.PENDING, zone="b"),
    node("b", "aws", NodeStatus.READY, zone="b"),
    node("d", "gcp", NodeStatus.OFFLINE),
]


@pytest.fixture(params=["put", "load"])
def fleet(request: pytest.FixtureRequest) -> Index[Node]:
    """The fleet put one by one, or loaded at once (a start-up): every test holds for both."""
    index = Index(terms_of)
    if request.param == "load":
        index.load(FLEET)
    else:
        for n in FLEET:
            index.put(n)
    return index


QUERIES: dict[str, tuple[list[Term], str, list[str]]] = {
    "no terms lists everything in id order": ([], "", ["a", "b", "c", "d", "e"]),
    "no terms after a cursor": ([], "b", ["c", "d", "e"]),
    "no terms after a cursor that is not an id": ([], "bb", ["c", "d", "e"]),
    "no terms after the last id": ([], "e", []),
    "no terms after a cursor before every id": ([], "0", ["a", "b", "c", "d", "e"]),
    "one term": ([("provider", "aws")], "", ["a", "b", "c"]),
    "one term after a cursor": ([("provider", "aws")], "a", ["b", "c"]),
    "one label term": ([("labels.zone", "b")], "", ["b", "c", "e"]),
    "one term nobody has": ([("provider", "azure")], "", []),
    "a field nobody has": ([("colour", "red")], "", []),
    "two terms intersect": ([("provider", "aws"), ("status", "READY")], "", ["a", "b"]),
    "two terms intersect after a cursor": (
        [("provider", "aws"), ("status", "READY")],
        "a",
        ["b"],
    ),
    "three terms intersect": (
        [("provider", "aws"), ("status", "READY"), ("labels.zone", "b")],
        "",
        ["b"],
    ),
    "a term nobody has empties the intersection": (
        [("provider", "aws"), ("provider", "azure")],
        "",
        [],
    ),
    "two values of one field match nothing": (
        [("status", "READY"), ("status", "PENDING")],
        "",
        [],
    ),
    "a repeated term is the same as once": (
        [("provider", "gcp"), ("provider", "gcp")],
        "",
        ["d", "e"],
    ),
    "the smaller posting list is filtered by the larger term": (
        [("status", "READY"), ("provider", "gcp")],
        "",
        ["e"],
    ),
}


@pytest.mark.parametrize(("terms", "after", "expected"), QUERIES.values(), ids=list(QUERIES))
def test_query(fleet: Index[Node], terms: list[Term], after: str, expected: list[str]) -> None:
    assert ids(fleet.query(terms, after)) == expected


def test_an_empty_index_has_nothing() -> None:
    index: Index[Node] = Index(terms_of)
    assert len(index) == 0
    assert index.get("a") is None
    assert list(index.values()) == []
    assert list(index.query([])) == []
    assert list(index.query([("provider", "aws")])) == []


def test_put_makes_a_resource_gettable_and_counted(fleet: Index[Node]) -> None:
    assert len(fleet) == len(FLEET)
    assert fleet.get("c") == FLEET[2]
    assert sorted(ids(fleet.values())) == ["a", "b", "c", "d", "e"]


def test_replacing_a_resource_moves_it_between_postings(fleet: Index[Node]) -> None:
    moved = replace(FLEET[2], provider="gcp", status=NodeStatus.READY, labels=frozen_map())
    fleet.put(moved)

    assert len(fleet) == len(FLEET)
    assert fleet.get("c") == moved
    assert ids(fleet.query([("provider", "aws")])) == ["a", "b"]
    assert ids(fleet.query([("provider", "gcp")])) == ["c", "d", "e"]
    assert ids(fleet.query([("status", "PENDING")])) == []
    assert ids(fleet.query([("status", "READY")])) == ["a", "b", "c", "e"]
    assert ids(fleet.query([("labels.zone", "b")])) == ["b", "e"]
    assert ids(fleet.query([])) == ["a", "b", "c", "d", "e"]


def test_putting_the_same_resource_twice_files_it_once(fleet: Index[Node]) -> None:
    fleet.put(FLEET[0])
    fleet.put(FLEET[0])
    assert len(fleet) == len(FLEET)
    assert ids(fleet.query([("provider", "gcp")])) == ["d", "e"]
    assert ids(fleet.query([])) == ["a", "b", "c", "d", "e"]


def test_removing_a_resource_takes_it_out_of_every_posting(fleet: Index[Node]) -> None:
    fleet.remove("b")

    assert len(fleet) == len(FLEET) - 1
    assert fleet.get("b") is None
    assert ids(fleet.query([])) == ["a", "c", "d", "e"]
    assert ids(fleet.query([("provider", "aws")])) == ["a", "c"]
    assert ids(fleet.query([("status", "READY")])) == ["a", "e"]
    assert ids(fleet.query([("labels.zone", "b")])) == ["c", "e"]


def test_removing_the_last_holder_of_a_term_leaves_no_match(fleet: Index[Node]) -> None:
    fleet.remove("d")
    assert ids(fleet.query([("status", "OFFLINE")])) == []
    fleet.put(node("f", "gcp", NodeStatus.OFFLINE))
    assert ids(fleet.query([("status", "OFFLINE")])) == ["f"]


def test_removing_an_unknown_id_changes_nothing(fleet: Index[Node]) -> None:
    fleet.remove("zzz")
    fleet.remove("")
    assert len(fleet) == len(FLEET)
    assert ids(fleet.query([])) == ["a", "b", "c", "d", "e"]


def test_removing_twice_is_harmless(fleet: Index[Node]) -> None:
    fleet.remove("a")
    fleet.remove("a")
    assert ids(fleet.query([("provider", "aws")])) == ["b", "c"]


def test_removing_everything_empties_the_index(fleet: Index[Node]) -> None:
    for n in FLEET:
        fleet.remove(n.id)
    assert len(fleet) == 0
    assert list(fleet.query([])) == []
    assert list(fleet.query([("provider", "aws")])) == []


def test_a_put_back_after_removal_is_found_again(fleet: Index[Node]) -> None:
    fleet.remove("a")
    fleet.put(FLEET[1])
    assert ids(fleet.query([("labels.zone", "a")])) == ["a"]


def test_many_resources_come_back_in_id_order() -> None:
    index: Index[Node] = Index(terms_of)
    names = [f"{(i * 7919) % 1000:04d}" for i in range(1000)]
    for name in names:
        index.put(node(name, "aws" if int(name) % 3 else "gcp"))
    assert ids(index.query([])) == sorted(names)
    assert ids(index.query([("provider", "gcp")])) == sorted(n for n in names if int(n) % 3 == 0)
    assert ids(index.query([("provider", "gcp")], "0500")) == sorted(
        n for n in names if int(n) % 3 == 0 and n > "0500"
    )


class Maker:
    """A derived value that counts how often it was made."""

    def __init__(self) -> None:
        self.made: list[tuple[str, int]] = []

    def __call__(self, n: Node) -> str:
        self.made.append((n.id, n.revision))
        return f"{n.id}@{n.revision}:{n.status.value}"


def test_a_derived_value_is_made_once_per_revision(fleet: Index[Node]) -> None:
    make = Maker()
    a = replace(FLEET[1], revision=7)
    fleet.put(a)
    assert fleet.derived(a, make) == "a@7:READY"
    assert fleet.derived(a, make) == "a@7:READY"
    # The same revision with a live heartbeat time (which the revision does not fix) hits too.
    assert fleet.derived(replace(a, last_heartbeat_time=T0), make) == "a@7:READY"
    assert make.made == [("a", 7)]


def test_a_change_makes_the_derived_value_again(fleet: Index[Node]) -> None:
    make = Maker()
    a = replace(FLEET[1], revision=7)
    fleet.put(a)
    fleet.derived(a, make)
    changed = replace(a, status=NodeStatus.SUSPECT, revision=8)
    fleet.put(changed)
    assert fleet.derived(changed, make) == "a@8:SUSPECT"
    # A reader may still be shown the last persisted version (a staged change keeps its
    # revision): its own value, not the newer one's.
    assert fleet.derived(a, make) == "a@7:READY"
    assert make.made == [("a", 7), ("a", 8), ("a", 7)]


def test_a_put_drops_the_derived_value_even_at_the_same_revision(fleet: Index[Node]) -> None:
    make = Maker()
    a = replace(FLEET[1], revision=7)
    fleet.put(a)
    fleet.derived(a, make)
    fleet.put(a)
    fleet.derived(a, make)
    assert make.made == [("a", 7), ("a", 7)]


def test_removed_and_unknown_resources_keep_no_derived_value(fleet: Index[Node]) -> None:
    make = Maker()
    a = FLEET[1]
    fleet.derived(a, make)
    fleet.remove("a")
    assert fleet.derived(a, make) == "a@0:READY"  # made, but not kept for a gone id
    assert fleet.derived(a, make) == "a@0:READY"
    assert make.made == [("a", 0), ("a", 0), ("a", 0)]
    stranger = node("zzz")
    fleet.derived(stranger, make)
    fleet.derived(stranger, make)
    assert make.made[-2:] == [("zzz", 0), ("zzz", 0)]


def test_load_then_changes_keep_the_postings_in_order() -> None:
    index = Index(terms_of)
    index.load(FLEET)
    index.put(node("aa", "gcp", NodeStatus.READY, zone="b"))
    index.put(replace(FLEET[0], provider="aws"))  # "e" moves from gcp to aws
    index.remove("b")

    assert ids(index.query([("provider", "aws")])) == ["a", "c", "e"]
    assert ids(index.query([("labels.zone", "b"), ("status", "READY")])) == ["aa", "e"]
    assert ids(index.query([])) == ["a", "aa", "c", "d", "e"]


def test_load_tells_on_change_of_every_resource() -> None:
    seen: list[tuple[Node | None, Node | None]] = []
    index = Index(terms_of, lambda old, new: seen.append((old, new)))
    index.load(FLEET)

    assert sorted(seen, key=lambda change: str(change[1] and change[1].id)) == [
        (None, n) for n in sorted(FLEET, key=lambda n: n.id)
    ]


def test_load_fills_only_an_empty_index(fleet: Index[Node]) -> None:
    with pytest.raises(RuntimeError):
        fleet.load([node("z")])
    with pytest.raises(ValueError, match="twice"):
        Index(terms_of).load([node("z"), node("z")])


@pytest.mark.parametrize("seed", range(5))
def test_intersections_follow_changes_made_between_queries(seed: int) -> None:
    """Queries keep sets beside the postings they check membership in; puts, moves and removals
    made after (and between) queries must reach them: every query matches a brute-force scan."""
    rng = random.Random(seed)
    index: Index[Node] = Index(terms_of)
    live: dict[str, Node] = {}
    statuses = [NodeStatus.READY, NodeStatus.PENDING, NodeStatus.OFFLINE]

    def term() -> Term:
        field = rng.choice(["status", "provider", "labels.zone"])
        if field == "status":
            return (field, rng.choice(statuses).value)
        return (field, rng.choice(["aws", "gcp"]) if field == "provider" else rng.choice("ab"))

    for _ in range(600):
        if rng.random() < 0.6 or not live:
            made = node(
                f"n{rng.randrange(40):02d}",
                rng.choice(["aws", "gcp"]),
                rng.choice(statuses),
                **({"zone": rng.choice("ab")} if rng.random() < 0.7 else {}),
            )
            index.put(made)
            live[made.id] = made
        else:
            gone = rng.choice(sorted(live))
            index.remove(gone)
            del live[gone]
        terms = [term() for _ in range(rng.randrange(4))]
        after = rng.choice(["", "n10", "n25", "n39"])
        expected = sorted(
            n.id for n in live.values() if n.id > after and set(terms) <= set(terms_of(n))
        )
        assert ids(index.query(terms, after)) == expected
