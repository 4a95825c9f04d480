"""A heartbeat stream is served by its handler's task alone: it reads beats and writes acks; a
stop cancels that task through the session, a push is written by a short task of its own. These
cases pin what that must still do: a stop ends the stream whatever it is waiting on (with a
Reconnect, or ABORTED when replaced), a cancellation of the call is never mistaken for a stop
(even when both happen), pushed assignments reach an idle agent at once, and nothing is left
behind. Real registries on SQLite, a fake gRPC context (the agent's side)."""

from __future__ import annotations

import asyncio

import pytest
from automator67.v1 import heartbeat_pb2 as hb

from controller.api.heartbeat_stream import HeartbeatStream, StreamSettings
from controller.clock import FakeClock
from controller.errors import ConflictError
from controller.models import NodeStatus
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Sessions, StopKind
from controller.store.base import Store

from .test_heartbeat_cancellation import SPEC, Agent, beat


class Plane:
    def __init__(self, nodes: NodeRegistry, sessions: Sessions, stream: HeartbeatStream) -> None:
        self.nodes, self.sessions, self.stream = nodes, sessions, stream

    async def open(self) -> tuple[str, Agent, asyncio.Task[None]]:
        """A registered node's stream, opened and idle (SessionStart and assignments written)."""
        node_id = (await self.nodes.register(SPEC)).id
        agent = Agent()
        handler = asyncio.ensure_future(self.stream.serve(agent.stream(), agent))  # type: ignore[arg-type]
        await agent.requests.put(hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id)))
        await agent.wait_written(2)
        assert agent.kinds() == ["session", "assignments"]
        return node_id, agent, handler


@pytest.fixture
async def plane(store: Store, clock: FakeClock) -> Plane:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    deployments = DeploymentRegistry(store, clock)
    await deployments.load()
    sessions = Sessions()
    stream = HeartbeatStream(nodes, deployments, sessions, StreamSettings(interval_s=1), clock)
    return Plane(nodes, sessions, stream)


async def test_beats_are_acked_in_order_by_the_handler_alone(plane: Plane) -> None:
    _, agent, handler = await plane.open()
    for sequence in range(1, 6):
        await agent.requests.put(beat(sequence))
    await agent.wait_written(7)
    assert [r.ack.sequence for r in agent.written[2:]] == [1, 2, 3, 4, 5]
    await agent.requests.put(None)  # the agent closes its stream
    await asyncio.wait_for(handler, 5)
    assert len(plane.sessions) == 0


@pytest.mark.parametrize("blocked", [False, True], ids=["idle", "mid-ack"])
async def test_a_reconnect_stop_ends_the_stream_with_a_reconnect(
    plane: Plane, blocked: bool
) -> None:
    node_id, agent, handler = await plane.open()
    if blocked:  # the stop lands while an ack is being written to an agent that stopped reading
        agent.write_blocks = True
        await agent.requests.put(beat(1))
        for _ in range(20):
            await asyncio.sleep(0)
    plane.sessions.reconnect_all("shutting down")
    agent.write_blocks = False
    await asyncio.wait_for(handler, 5)
    assert agent.kinds()[-1] == "reconnect"
    assert agent.written[-1].reconnect.reason == "shutting down"
    assert len(plane.sessions) == 0
    # A planned end: the node stays READY until its usual deadline.
    assert plane.nodes.liveness.status(node_id) is NodeStatus.READY


async def test_a_replaced_stream_ends_aborted_and_the_new_one_goes_on(plane: Plane) -> None:
    node_id, _, handler = await plane.open()
    newer = Agent()
    second = asyncio.ensure_future(plane.stream.serve(newer.stream(), newer))  # type: ignore[arg-type]
    await newer.requests.put(hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id)))
    with pytest.raises(ConflictError):
        await asyncio.wait_for(handler, 5)
    await newer.wait_written(2)
    await newer.requests.put(beat(1))
    await newer.wait_written(3)
    assert newer.written[2].ack.sequence == 1
    assert len(plane.sessions) == 1
    second.cancel()
    await asyncio.wait((second,))


async def test_a_cancelled_call_is_not_taken_for_a_stop_even_when_both_happen(
    plane: Plane,
) -> None:
    _, agent, handler = await plane.open()
    handler.cancel()  # grpc cancels the call (the agent went away) ...
    plane.sessions.reconnect_all("shutting down")  # ... as the controller stops every stream
    await asyncio.wait((handler,))
    assert handler.cancelled()
    assert "reconnect" not in agent.kinds()
    assert len(plane.sessions) == 0


async def test_a_stop_before_the_first_beat_is_read_still_ends_the_stream(plane: Plane) -> None:
    node_id = (await plane.nodes.register(SPEC)).id
    agent = Agent()
    agent.write_blocks = True  # the SessionStart write waits: the stop comes meanwhile
    handler = asyncio.ensure_future(plane.stream.serve(agent.stream(), agent))  # type: ignore[arg-type]
    await agent.requests.put(hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id)))
    for _ in range(20):
        await asyncio.sleep(0)
    (session,) = [plane.sessions._by_node[node_id]]
    session.stop(StopKind.RECONNECT, "stream lifetime reached")
    agent.write_blocks = False
    agent._never.set()  # the blocked write completes
    await asyncio.wait_for(handler, 5)
    assert agent.kinds()[-1] == "reconnect"


async def test_pushed_assignments_reach_an_idle_agent_once_per_push_burst(plane: Plane) -> None:
    node_id, agent, handler = await plane.open()
    plane.sessions.assignments_changed([node_id])
    plane.sessions.assignments_changed([node_id])  # before the first is written: one write
    await agent.wait_written(3)
    for _ in range(20):
        await asyncio.sleep(0)
    assert agent.kinds() == ["session", "assignments", "assignments"]
    await agent.requests.put(beat(1))  # beats go on after a push
    await agent.wait_written(4)
    assert agent.kinds()[-1] == "ack"
    handler.cancel()
    await asyncio.wait((handler,))


async def test_lifetimes_ask_each_live_stream_to_reconnect_once_due() -> None:
    """One heap and one timer for every stream's lifetime: due sessions are asked to reconnect
    in order, those that ended first are not, and emptied entries are compacted away."""
    from controller.api.heartbeat_stream import _Lifetimes
    from controller.registry.sessions import Session

    class Told:
        def __init__(self) -> None:
            self.stopped = asyncio.Event()

        def stop_requested(self) -> None:
            self.stopped.set()

        def assignments_pushed(self) -> None:
            pass

    lifetimes = _Lifetimes()
    sessions = [Session(f"n{i}") for i in range(4)]
    last = Told()
    sessions[0].listen(last)
    dues = (0.2, 0.01, 60, 0.05)
    entries = [lifetimes.add(after_s, s) for after_s, s in zip(dues, sessions, strict=True)]
    lifetimes.cancel(entries[3])  # this stream ended first
    lifetimes.cancel(entries[3])  # twice is once
    await asyncio.wait_for(last.stopped.wait(), 5)
    assert [s.stopped.reason if s.stopped else None for s in sessions] == [
        "stream lifetime reached",
        "stream lifetime reached",
        None,
        None,
    ]
    lifetimes.cancel(entries[0])  # the stream ends after its stop: nothing left to count
    assert lifetimes._empty == 0 and len(lifetimes._heap) == 1

    many = [lifetimes.add(60, Session(f"m{i}")) for i in range(3000)]
    for entry in many:
        lifetimes.cancel(entry)
    lifetimes.add(60, Session("last"))  # most entries are empty: compacted
    assert len(lifetimes._heap) == 2 and lifetimes._empty == 0
