"""UpdateNode's rules (registry/node_updates.py) as a table, and the node registry's update on a
real SQLite store and a fake clock: labels, cordon, drain start / new deadline / cancel, the
etag, the errors, and that a cordoned node is never chosen by placement."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from controller.clock import FakeClock
from controller.errors import (
    ConflictError,
    FailedPreconditionError,
    FencedError,
    InvalidArgumentError,
)
from controller.models import (
    Capabilities,
    Drain,
    DrainState,
    Node,
    NodeSpec,
    NodeStatus,
    PlacementConstraints,
    PlacementStrategy,
    Resources,
    frozen_map,
)
from controller.registry.feed import ChangeFeed
from controller.registry.node_updates import (
    DEFAULT_DRAIN_TIMEOUT_S,
    DrainRequest,
    NodeChanges,
    apply_update,
)
from controller.registry.nodes import NodeRegistry
from controller.scheduler.placement import Ask, NodeView, NoFit, Snapshot, place
from controller.store.base import Fence, Store

T0 = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
LATER = T0 + timedelta(minutes=5)
NODE = Node(
    id="0b6f3d4e-1f2a-4c3b-9d8e-7f6a5b4c3d2e",
    provider="render",
    endpoint="https://x",
    region="eu",
    capabilities=Capabilities(4, 8),
    create_time=T0,
    update_time=T0,
    labels=frozen_map({"zone": "a"}),
)
RUNNING_DRAIN = Drain(T0, T0 + timedelta(hours=1), moved=2, remaining=1)
DRAINING = replace(NODE, unschedulable=True, drain=RUNNING_DRAIN)
COMPLETE = replace(DRAINING, drain=replace(RUNNING_DRAIN, state=DrainState.COMPLETE, end_time=T0))


@pytest.mark.parametrize(
    ("name", "node", "changes", "paths", "expect"),
    [
        (
            "labels are replaced whole",
            NODE,
            NodeChanges(labels=frozen_map({"tier": "gpu"})),
            ["labels"],
            replace(NODE, labels=frozen_map({"tier": "gpu"}), update_time=LATER),
        ),
        (
            "cordon",
            NODE,
            NodeChanges(unschedulable=True),
            ["unschedulable"],
            replace(NODE, unschedulable=True, update_time=LATER),
        ),
        (
            "a field outside the mask is ignored",
            NODE,
            NodeChanges(unschedulable=True, labels=frozen_map()),
            ["unschedulable"],
            replace(NODE, unschedulable=True, update_time=LATER),
        ),
        (
            "a drain cordons and has the default deadline",
            NODE,
            NodeChanges(drain=DrainRequest()),
            ["drain"],
            replace(
                NODE,
                unschedulable=True,
                drain=Drain(
                    LATER,
                    LATER + timedelta(seconds=DEFAULT_DRAIN_TIMEOUT_S),
                    message="starting",
                ),
                update_time=LATER,
            ),
        ),
        (
            "a drain sent again sets a new deadline and keeps its counts",
            DRAINING,
            NodeChanges(drain=DrainRequest(60)),
            ["drain"],
            replace(
                DRAINING,
                drain=replace(RUNNING_DRAIN, deadline=LATER + timedelta(seconds=60)),
                update_time=LATER,
            ),
        ),
        (
            "cancelling a drain leaves the node cordoned",
            DRAINING,
            NodeChanges(),
            ["drain"],
            replace(DRAINING, drain=None, update_time=LATER),
        ),
        (
            "cancel and uncordon together",
            DRAINING,
            NodeChanges(unschedulable=False),
            ["drain", "unschedulable"],
            replace(DRAINING, drain=None, unschedulable=False, update_time=LATER),
        ),
        (
            "uncordoning a drained node clears its completed drain",
            COMPLETE,
            NodeChanges(unschedulable=False),
            ["unschedulable"],
            replace(COMPLETE, drain=None, unschedulable=False, update_time=LATER),
        ),
        (
            "cancelling a completed drain changes nothing",
            COMPLETE,
            NodeChanges(),
            ["drain"],
            COMPLETE,
        ),
        ("the same values change nothing", NODE, NodeChanges(labels=NODE.labels), ["labels"], NODE),
    ],
)
def test_an_update(
    name: str, node: Node, changes: NodeChanges, paths: list[str], expect: Node
) -> None:
    assert apply_update(node, changes, paths, LATER) == expect, name


@pytest.mark.parametrize(
    ("node", "changes", "paths", "error", "field"),
    [
        (NODE, NodeChanges(), [], InvalidArgumentError, "update_mask"),
        (NODE, NodeChanges(), ["provider"], InvalidArgumentError, "update_mask"),
        (
            NODE,
            NodeChanges(labels=frozen_map({"bad key!": "x"})),
            ["labels"],
            InvalidArgumentError,
            "node.labels['bad key!']",
        ),
        (
            NODE,
            NodeChanges(drain=DrainRequest(-1)),
            ["drain"],
            InvalidArgumentError,
            "node.drain.timeout",
        ),
        (
            NODE,
            NodeChanges(drain=DrainRequest(1e12)),
            ["drain"],
            InvalidArgumentError,
            "node.drain.timeout",
        ),
        (
            DRAINING,
            NodeChanges(unschedulable=False),
            ["unschedulable"],
            FailedPreconditionError,
            "",
        ),
    ],
)
def test_a_bad_update_names_its_field(
    node: Node, changes: NodeChanges, paths: list[str], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as raised:
        apply_update(node, changes, paths, LATER)
    if isinstance(raised.value, InvalidArgumentError):
        assert [v.field for v in raised.value.violations] == [field]
    else:
        assert getattr(raised.value, "reason", "") == "NODE_DRAINING"


async def test_the_registry_persists_an_update_and_checks_the_etag(
    store: Store, clock: FakeClock
) -> None:
    registry = NodeRegistry(store, clock)
    await registry.load()
    node = await registry.register(
        NodeSpec("render", "https://x", "eu", Capabilities(4, 8), frozen_map({"zone": "a"}))
    )

    cordoned = await registry.update(
        node.id, NodeChanges(unschedulable=True), ["unschedulable"], str(node.revision)
    )

    assert cordoned.unschedulable and cordoned.revision > node.revision
    with pytest.raises(ConflictError):
        await registry.update(node.id, NodeChanges(), ["drain"], str(node.revision))
    same = await registry.update(node.id, NodeChanges(unschedulable=True), ["unschedulable"])
    assert same.revision == cordoned.revision  # nothing changed: no write
    reloaded = NodeRegistry(store, clock)
    await reloaded.load()
    assert reloaded.get(node.id).unschedulable
    clock.advance(10)
    draining = await registry.update(node.id, NodeChanges(drain=DrainRequest(30)), ["drain"])
    await reloaded.settle()
    again = NodeRegistry(store, clock)
    await again.load()
    assert again.get(node.id).drain == draining.drain
    assert draining.drain is not None and draining.drain.deadline == clock.now() + timedelta(
        seconds=30
    )


def _view(node_id: str, schedulable: bool) -> NodeView:
    return NodeView(
        node_id, NodeStatus.READY, "p", "r", frozen_map(), Resources(4, 8, 0), schedulable
    )


def test_placement_never_chooses_a_cordoned_node() -> None:
    nodes = [_view(f"n{i}", schedulable=i == 7) for i in range(10)]
    ask = Ask(Resources(1, 1), PlacementConstraints(), PlacementStrategy.SPREAD)
    snapshot = Snapshot(nodes, {})
    chosen = {place(ask, snapshot, Counter(), random.Random(seed)) for seed in range(30)}
    assert chosen == {"n7"}
    only_cordoned = Snapshot([_view("a", False), _view("b", False)], {})
    none = place(ask, only_cordoned, Counter(), random.Random(1))
    assert isinstance(none, NoFit) and "2 are cordoned" in none.reason


async def test_a_drain_report_is_fenced_by_the_leaders_epoch(
    store: Store, clock: FakeClock
) -> None:
    registry = NodeRegistry(store, clock)
    await registry.load()
    node = await registry.register(NodeSpec("render", "https://x", "eu", Capabilities(4, 8)))
    draining = await registry.update(node.id, NodeChanges(drain=DrainRequest(60)), ["drain"])
    assert draining.drain is not None
    lease = await store.campaign("leader", "r1", 30.0)

    def report(current: Node) -> Node:
        assert current.drain is not None
        return replace(current, drain=replace(current.drain, remaining=3, message="moving"))

    with pytest.raises(FencedError):  # a deposed leader's epoch
        await registry.record_drain(node.id, report, Fence("leader", "r1", lease.epoch - 1))
    assert registry.get(node.id) == draining
    await registry.record_drain(node.id, report, Fence("leader", "r1", lease.epoch))
    recorded = registry.get(node.id).drain
    assert recorded is not None and (recorded.remaining, recorded.message) == (3, "moving")


async def test_a_drain_report_refused_for_another_replicas_change_says_so(
    store: Store, clock: FakeClock
) -> None:
    feed = ChangeFeed(store)  # the leader's, not running: caught up by its writes or by hand
    leader = NodeRegistry(store, clock, feed=feed)
    await leader.load()
    node = await leader.register(NodeSpec("render", "https://x", "eu", Capabilities(4, 8)))
    await leader.update(node.id, NodeChanges(drain=DrainRequest(60)), ["drain"])
    other = NodeRegistry(store, clock)  # another replica, on the same store
    await other.load()
    await other.update(node.id, NodeChanges(labels=frozen_map({"tier": "gpu"})), ["labels"])

    def report(current: Node) -> Node:
        assert current.drain is not None
        return replace(current, drain=replace(current.drain, moved=1, message="moving"))

    # The leader has not seen the other change yet: the store refuses its write.
    assert not await leader.record_drain(node.id, report, None)
    await feed.caught_up()  # as its feed does on its own in a server
    assert await leader.record_drain(node.id, report, None)  # on the node as it is now
    recorded = leader.get(node.id)
    assert recorded.labels == {"tier": "gpu"}
    assert recorded.drain is not None and (recorded.drain.moved, recorded.drain.message) == (
        1,
        "moving",
    )
    assert await leader.record_drain(node.id, lambda _: None, None)  # nothing to write
