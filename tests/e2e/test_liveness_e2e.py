"""Liveness as the fleet sees it, against a real controller process: a killed agent's node is
SUSPECT at once, a silent one goes SUSPECT then OFFLINE on the clock, a restart marks nobody
OFFLINE, and a fleet that goes quiet all at once is not marked OFFLINE.

Times are measured on `time.monotonic()`, the clock the controller judges by, from a moment
known to precede the controller's own (e.g. before the hello was written), so lower bounds are
exact; upper bounds allow for a loaded machine."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
import pytest
from automator67.v1 import agent_service_pb2_grpc, node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as pb
from grpc import aio

from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess
from .heartbeat_helpers import (
    FAST,
    OFFLINE,
    READY,
    STATUS_CHANGED,
    STEADY,
    SUSPECT,
    WAIT_S,
    Agent,
    Timing,
    Watch,
    list_all_nodes,
    logged,
    register_node,
)
from .seed import seed_node

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

SLACK_S = 2.0
# Slow enough that a shutdown never outlasts `suspect_after_s`, fast enough that the failover
# grace passes within the test.
RESTART = Timing(interval_s=0.2, suspect_after_s=1.0, offline_after_s=1.5, failover_grace_s=3.0)
BEAT_EVERY_S = 0.1
SELF_SUSPECTING = "most of the fleet went quiet at once"
RECOVERED = "the fleet recovered; no longer suspecting the controller itself"
STREAM_ENDED = ("heartbeat stream broke", "agent closed its heartbeat stream")

# A real agent in its own process, to be killed with SIGKILL: the kernel closes its socket.
AGENT_SCRIPT = """
import asyncio, sys
from grpc import aio
from automator67.v1 import heartbeat_pb2 as hb, agent_service_pb2_grpc

async def main(address, node_id, token):
    metadata = (("authorization", "Bearer " + token),) if token else ()
    async with aio.insecure_channel(address) as channel:
        call = agent_service_pb2_grpc.AgentServiceStub(channel).Heartbeat(metadata=metadata)
        await call.write(hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id)))
        print((await call.read()).WhichOneof("kind"), flush=True)
        sequence = 0
        while True:
            sequence += 1
            await call.write(hb.HeartbeatRequest(beat=hb.Beat(sequence=sequence)))
            await asyncio.sleep(0.1)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("how", ["call cancelled", "channel closed", "agent process killed"])
async def test_a_killed_stream_makes_its_node_suspect_within_a_second(
    how: str, start_controller: StartController
) -> None:
    # SUSPECT after 3 s of silence: a SUSPECT within a second can only come from the break.
    controller = start_controller(extra_args=STEADY.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        registered = await stub.RegisterNode(pb.RegisterNodeRequest(node=seed_node()))
        node = registered.node
        watch = Watch(stub)
        await watch.state()

        if how == "agent process killed":  # with the token RegisterNode gave its agent
            agent_process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                AGENT_SCRIPT,
                controller.address,
                node.id,
                registered.agent_token,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert agent_process.stdout is not None
                line = await asyncio.wait_for(agent_process.stdout.readline(), WAIT_S)
                assert line == b"session\n", line
                await watch.status_change(node.id, READY)
                killed_at, killed_wall = time.monotonic(), time.time()
                agent_process.kill()
            finally:
                if agent_process.returncode is None:
                    agent_process.kill()
                await agent_process.wait()
        else:
            async with open_channel(controller.address) as agent_channel:
                agent = await Agent.connect(
                    agent_service_pb2_grpc.AgentServiceStub(agent_channel), node.id
                )
                agent.keep_beating(BEAT_EVERY_S)
                await agent.more_acks(2)
                await watch.status_change(node.id, READY)
                killed_at, killed_wall = time.monotonic(), time.time()
                if how == "call cancelled":
                    agent.call.cancel()
                else:
                    await agent_channel.close(None)

        event, suspect_at = await watch.status_change(node.id, SUSPECT)

    changed = await logged(
        controller,
        lambda line: line.get("msg") == "node status changed" and line.get("to") == "SUSPECT",
    )
    # When the controller marked it (its log's wall clock, to the millisecond), and when a
    # watcher heard of it: after the transition was written to the store.
    detected = datetime.fromisoformat(changed["time"]).timestamp() - killed_wall
    latency = suspect_at - killed_at
    print(
        f"SUSPECT {latency * 1000:.1f} ms after the {how} (marked after {detected * 1000:.0f} ms)"
    )
    assert event.previous_status == READY
    assert detected < 1.0
    assert latency < 1.0
    # The end of the stream did it, not the clock. (A closed channel may reach the server as a
    # half-close, which it cannot tell from an agent's clean close: both mean SUSPECT now.)
    assert changed["reason"] in STREAM_ENDED, changed


async def test_a_silent_open_stream_goes_suspect_then_offline_on_time(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=FAST.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        node = await register_node(stub)
        watch = Watch(stub)
        await watch.state()

        agents = agent_service_pb2_grpc.AgentServiceStub(channel)
        agent = await Agent.connect(agents, node.id)  # then nothing
        await watch.status_change(node.id, READY)
        _, suspect_at = await watch.status_change(node.id, SUSPECT)
        _, offline_at = await watch.status_change(node.id, OFFLINE, wait_s=WAIT_S + SLACK_S)

        # The hello counted as a beat; the controller received it after it was sent.
        to_suspect = suspect_at - agent.hello_sent_at
        to_offline = offline_at - agent.hello_sent_at
        print(f"silent stream: SUSPECT after {to_suspect:.3f} s, OFFLINE after {to_offline:.3f} s")
        late = FAST.interval_s + SLACK_S
        assert FAST.suspect_after_s <= to_suspect <= FAST.suspect_after_s + late
        assert FAST.offline_after_s <= to_offline <= FAST.offline_after_s + late
        # Only its silence counted: the stream itself is still open.
        assert not agent.call.done()


async def stop_beating(agents: list[Agent]) -> None:
    """Stops the agents' beats a moment before the controller stops (well within
    suspect-after): grpc.aio turns the status of a call whose write races with its end into
    INTERNAL, and these tests read that status."""
    for agent in agents:
        await agent.stop_beating()


async def beating_agents(channel: aio.Channel, node_ids: list[str]) -> list[Agent]:
    stub = agent_service_pb2_grpc.AgentServiceStub(channel)
    agents = [await Agent.connect(stub, node_id) for node_id in node_ids]
    for agent in agents:
        agent.keep_beating(BEAT_EVERY_S)
    return agents


async def test_a_restart_marks_no_node_offline_and_gives_the_missing_the_failover_grace(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=RESTART.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        nodes = [await register_node(stub) for _ in range(3)]
        ids = [n.id for n in nodes]
        watch = Watch(stub)
        await watch.state()
        agents = await beating_agents(channel, ids)
        await watch.all_become(ids, READY)
        await watch.close()  # an open watch would hold the shutdown for its grace
        await stop_beating(agents)

        controller.send_signal(signal.SIGTERM)

        for agent in agents:
            await agent.inbox.first(lambda m: m.WhichOneof("kind") == "reconnect", "Reconnect")
            assert agent.reconnects[0].reason == "controller shutting down"
            assert await agent.ended() == grpc.StatusCode.OK
    assert await asyncio.to_thread(controller.wait) == 0

    restarted_at = time.monotonic()  # before the new process loads its nodes
    await asyncio.to_thread(controller.start)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        watch = Watch(stub)
        state, _ = await watch.state()
        assert {i: state[i].status for i in ids} == dict.fromkeys(ids, READY)

        # Two agents come back; the third never does.
        *back, missing = ids
        agents = await beating_agents(channel, back)
        assert [a.session.node_status for a in agents] == [READY, READY]
        await watch.status_change(missing, SUSPECT, wait_s=RESTART.failover_grace_s + WAIT_S)
        _, offline_at = await watch.status_change(missing, OFFLINE)

        grace = offline_at - restarted_at
        print(f"missing node OFFLINE {grace:.3f} s after the restart")
        assert RESTART.failover_grace_s <= grace <= RESTART.failover_grace_s + SLACK_S + 3.0
        seen = watch.inbox.items[: watch.consumed]
        assert [e for e in seen if e.type == STATUS_CHANGED and e.node.id in back] == []
        stats = await stub.GetNodeStats(pb.GetNodeStatsRequest())
        assert dict(stats.by_status) == {"NODE_STATUS_READY": 2, "NODE_STATUS_OFFLINE": 1}
        listed = await list_all_nodes(stub)
        assert {i: listed[i].status for i in ids} == {
            **dict.fromkeys(back, READY),
            missing: OFFLINE,
        }
        for agent in agents:
            await agent.discard()


async def test_a_restart_with_a_watch_open_keeps_every_node_ready(
    start_controller: StartController,
) -> None:
    # As by default (grace 10 s > suspect-after 7.5 s), the shutdown grace outlasts suspect-after.
    timing = Timing(0.2, 1.0, 1.5, failover_grace_s=3.0, shutdown_grace_s=2.0)
    controller = start_controller(extra_args=timing.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        ids = [(await register_node(stub)).id for _ in range(3)]
        watch = Watch(stub)
        await watch.state()
        agents = await beating_agents(channel, ids)
        await watch.all_become(ids, READY)
        await stop_beating(agents)

        controller.send_signal(signal.SIGTERM)  # with the watch still open
        for agent in agents:
            assert await agent.ended() == grpc.StatusCode.OK
        await watch.inbox.finished(wait_s=timing.shutdown_grace_s + WAIT_S)
    assert await asyncio.to_thread(controller.wait) == 0

    await asyncio.to_thread(controller.start)
    async with open_channel(controller.address) as channel:
        state, _ = await Watch(node_service_pb2_grpc.NodeServiceStub(channel)).state()
    assert {i: node_pb2.NodeStatus.Name(state[i].status) for i in ids} == dict.fromkeys(
        ids, "NODE_STATUS_READY"
    )
    after_sigterm = watch.inbox.items[watch.consumed :]
    assert [e for e in after_sigterm if e.type == STATUS_CHANGED] == []


async def break_the_whole_fleet(
    controller: ControllerProcess, stub: NodeServiceAsyncStub, watch: Watch, count: int
) -> tuple[list[str], float]:
    """Registers `count` nodes, connects them on one connection, and closes it: every stream
    breaks at once. Returns, once the controller logs that it suspects itself, the node ids and
    when the connection was closed (after every node's last beat)."""
    ids = [(await register_node(stub)).id for _ in range(count)]
    async with open_channel(controller.address) as agents_channel:
        await beating_agents(agents_channel, ids)
        await watch.all_become(ids, READY)
        broken_at = time.monotonic()
    await watch.all_become(ids, SUSPECT)
    await logged(controller, lambda line: str(line.get("msg")).startswith(SELF_SUSPECTING))
    return ids, broken_at


async def test_when_the_whole_fleet_goes_quiet_at_once_no_node_goes_offline_until_it_recovers(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=FAST.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        watch = Watch(stub)
        await watch.state()
        ids, broken_at = await break_the_whole_fleet(controller, stub, watch, 3)

        # An absence can only be observed over a time: past every node's OFFLINE deadline.
        window = FAST.offline_after_s + 2 * FAST.interval_s
        with pytest.raises(AssertionError, match="waited"):
            await watch.until(
                lambda e: e.type == STATUS_CHANGED and e.node.status == OFFLINE,
                "an OFFLINE node",
                wait_s=max(0.0, broken_at + window - time.monotonic()),
            )

        # Two agents return: the fleet has recovered, and the one still silent goes OFFLINE.
        *back, silent = ids
        agents = await beating_agents(channel, back)
        await logged(controller, lambda line: line.get("msg") == RECOVERED)
        await watch.status_change(silent, OFFLINE)
        for agent in agents:
            await agent.discard()


async def test_get_node_stats_says_when_the_controller_suspects_itself(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=FAST.args)
    async with open_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        watch = Watch(stub)
        await watch.state()
        await break_the_whole_fleet(controller, stub, watch, 3)

        stats = await stub.GetNodeStats(pb.GetNodeStatsRequest())

    assert dict(stats.by_status) == {"NODE_STATUS_SUSPECT": 3}
    assert stats.self_suspected is True
