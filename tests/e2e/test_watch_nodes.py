"""WatchNodes against a real controller: the opening state, live events, resuming from a
revision, and a watcher that never reads.

The controller runs with steady liveness (no deadline passes during a test), so every status
change a test sees is one it caused, and a test can demand the very next event."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from automator67.v1 import node_service_pb2 as pb
from automator67.v1 import node_service_pb2_grpc
from grpc import aio

from .conftest import StartController
from .controller_process import ControllerProcess
from .heartbeat_helpers import (
    ADDED,
    CHANGED,
    DELETED,
    PENDING,
    READY,
    RESET,
    STATUS_CHANGED,
    STEADY,
    SUSPECT,
    SYNCED,
    WAIT_S,
    Agent,
    Inbox,
    NodeView,
    Watch,
    get_node,
    list_all_nodes,
    register_node,
)
from .rpc_errors import bad_request_fields
from .seed import seed_node

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

# Enough changes to overflow a watcher's server-side buffer (1024 events) after its connection's
# flow-control window (64 KiB, about 16 of these nodes) is full.
MANY_CHANGES = 1200
BIG_LABELS = {f"label-{i}": "v" * 256 for i in range(16)}  # about 4 KiB per node event
PROMPT_S = 3.0  # a registration slower than this, on a loaded machine, was held up


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller(extra_args=STEADY.args)


async def test_a_watch_starts_with_every_node_then_synced(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    watch = Watch(node_stub)
    state, _ = await watch.state()
    assert state == {}  # an empty store: SYNCED alone
    nodes = [await register_node(node_stub) for _ in range(3)]
    await Agent.connect(agent_stub, nodes[0].id)  # one READY node, with a heartbeat time
    latest, _ = await watch.status_change(nodes[0].id, READY)

    opened = Watch(node_stub)
    state, synced = await opened.state()

    added = opened.inbox.items[:-1]
    assert [e.node.id for e in added] == sorted(n.id for n in nodes)  # ordered by id
    assert state == await list_all_nodes(node_stub)
    assert state[nodes[0].id].status == READY
    assert {state[n.id].status for n in nodes[1:]} == {PENDING}
    assert synced.revision == latest.revision
    assert all(e.revision <= synced.revision for e in added)


async def test_a_watch_sees_registrations_status_changes_and_deletions_live(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    watch = Watch(node_stub)
    await watch.state()

    node = await register_node(node_stub)
    added = await watch.next_event()
    agent = await Agent.connect(agent_stub, node.id)
    ready = await watch.next_event()
    await agent.discard()  # the stream breaks
    suspect = await watch.next_event()
    await node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=node.id))
    deleted = await watch.next_event()

    assert (added.type, added.node) == (ADDED, node)
    assert (ready.type, ready.node.id, ready.node.status) == (STATUS_CHANGED, node.id, READY)
    assert ready.previous_status == PENDING
    assert (suspect.type, suspect.node.id, suspect.node.status) == (
        STATUS_CHANGED,
        node.id,
        SUSPECT,
    )
    assert suspect.previous_status == READY
    assert (deleted.type, deleted.node.id) == (DELETED, node.id)
    revisions = [e.revision for e in (added, ready, suspect, deleted)]
    assert revisions == sorted(set(revisions)), revisions


async def test_a_resumed_watch_gets_the_changes_since_its_revision_then_synced(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    kept, removed, connected = [await register_node(node_stub) for _ in range(3)]
    first = Watch(node_stub)
    _, synced = await first.state()
    seen = synced.revision  # the revision of the last event this client saw
    await first.close()

    # Changes while the client is away; a second watcher shows when each has happened.
    live = Watch(node_stub)
    await live.state()
    registered = await register_node(node_stub)
    await live.until(lambda e: e.type == ADDED and e.node.id == registered.id, "ADDED")
    await node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=removed.id))
    await live.until(lambda e: e.type == DELETED and e.node.id == removed.id, "DELETED")
    await Agent.connect(agent_stub, connected.id)
    latest, _ = await live.status_change(connected.id, READY)

    resumed = Watch(node_stub, start_revision=seen)
    synced_again, changes = await resumed.until(lambda e: e.type == SYNCED, "SYNCED")

    assert [(e.type, e.node.id) for e in changes] == [
        (CHANGED, registered.id),
        (DELETED, removed.id),
        (CHANGED, connected.id),
    ]
    # Changes carry the node's current state; nothing older than the revision comes again.
    assert changes[0].node == await get_node(node_stub, registered.id)
    assert changes[2].node == await get_node(node_stub, connected.id)
    assert changes[2].node.status == READY
    assert kept.id not in {e.node.id for e in changes}
    assert all(seen < e.revision <= synced_again.revision for e in changes)
    assert synced_again.revision == latest.revision

    # Then live changes follow on the same stream.
    another = await register_node(node_stub)
    event = await resumed.next_event()
    assert (event.type, event.node.id) == (ADDED, another.id)

    # A client that saw everything resumes with SYNCED alone.
    caught_up = Watch(node_stub, start_revision=event.revision)
    only = await caught_up.next_event()
    assert (only.type, only.revision) == (SYNCED, event.revision)


@pytest.mark.parametrize("past_the_store", [1, 2**62], ids=["one past the store", "far ahead"])
async def test_a_start_revision_ahead_of_the_store_is_invalid_argument(
    past_the_store: int, node_stub: NodeServiceAsyncStub
) -> None:
    await register_node(node_stub)
    _, synced = await Watch(node_stub).state()

    ahead = Watch(node_stub, start_revision=synced.revision + past_the_store)

    assert await ahead.inbox.finished() == grpc.StatusCode.INVALID_ARGUMENT
    assert ahead.inbox.items == []
    assert ahead.inbox.error is not None
    assert bad_request_fields(ahead.inbox.error) == ["start_revision"]


async def test_a_negative_start_revision_is_invalid_argument(
    node_stub: NodeServiceAsyncStub,
) -> None:
    watch = Watch(node_stub, start_revision=-1)

    assert await watch.inbox.finished() == grpc.StatusCode.INVALID_ARGUMENT
    assert watch.inbox.error is not None
    assert bad_request_fields(watch.inbox.error) == ["start_revision"]


async def test_a_watcher_that_never_reads_slows_nobody_and_ends_with_the_true_state(
    controller: ControllerProcess, node_stub: NodeServiceAsyncStub
) -> None:
    # Its own connection, without BDP probing: the flow-control window stays 64 KiB, so the
    # server's writes to it block soon, as they would for a stuck client; with probing, gRPC's
    # client would buffer megabytes on its behalf and the server would never notice.
    async with aio.insecure_channel(
        controller.address, options=[("grpc.http2.bdp_probe", 0)]
    ) as slow_channel:
        slow_call = node_service_pb2_grpc.NodeServiceStub(slow_channel).WatchNodes(
            pb.WatchNodesRequest(), metadata=controller.metadata
        )
        await asyncio.wait_for(slow_call.wait_for_connection(), WAIT_S)
        fast = Watch(node_stub)
        await fast.state()

        latencies = await register_many(node_stub, MANY_CHANGES)

        assert max(latencies) < PROMPT_S, max(latencies)
        # The reading watcher got every change, in order, without a RESET.
        await fast.inbox.wait_until(
            lambda: len(fast.inbox.items) >= 1 + MANY_CHANGES, "every ADDED event", WAIT_S
        )
        live = fast.inbox.items[1:]
        assert {e.type for e in live} == {ADDED}
        assert [e.revision for e in live] == sorted(e.revision for e in live)
        target = live[-1].revision

        # The slow watcher finally reads: every event, or RESET and the full state.
        slow = Inbox(slow_call, pb.WatchNodesResponse)
        view = NodeView()

        def caught_up() -> bool:
            view.apply(slow.items)
            return view.caught_up(target)

        await slow.wait_until(caught_up, "the slow watcher to catch up", WAIT_S)
        assert view.nodes == await list_all_nodes(node_stub)
        print(
            f"slow watcher: {len(slow.items)} events,"
            f" {'RESET then the full state' if view.resets else 'no RESET'}"
        )
        if view.resets:
            reset = next(i for i, e in enumerate(slow.items) if e.type == RESET)
            synced = next(i for i in range(reset, len(slow.items)) if slow.items[i].type == SYNCED)
            assert {e.type for e in slow.items[reset + 1 : synced]} == {ADDED}
            assert synced - reset - 1 == MANY_CHANGES
        await slow.close()


async def register_many(stub: NodeServiceAsyncStub, count: int) -> list[float]:
    """Registers `count` big nodes, 20 at a time; returns each call's latency in seconds."""
    limit = asyncio.Semaphore(20)
    latencies: list[float] = []

    async def one(i: int) -> None:
        node = seed_node(labels={**BIG_LABELS, "i": str(i)})
        async with limit:
            started = time.monotonic()
            await stub.RegisterNode(pb.RegisterNodeRequest(node=node))
            latencies.append(time.monotonic() - started)

    await asyncio.gather(*(one(i) for i in range(count)))
    return latencies
