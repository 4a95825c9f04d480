"""The heartbeat stream as a well-behaved agent drives it, against a real controller with fast
liveness (interval 0.2 s, SUSPECT after 0.3 s, OFFLINE after 1 s): hello, acks, READY, the
live last-heartbeat time, a clean close, a return after OFFLINE, and full beats."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from automator67.v1 import agent_service_pb2_grpc, deployment_pb2, node_service_pb2_grpc
from automator67.v1 import heartbeat_pb2 as hb

from .conftest import StartController, open_channel
from .controller_process import ControllerProcess
from .heartbeat_helpers import (
    ADDED,
    FAST,
    OFFLINE,
    PENDING,
    READY,
    STEADY,
    SUSPECT,
    WAIT_S,
    Agent,
    Watch,
    get_node,
    list_all_nodes,
    logged,
    register_node,
)

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

# How late a deadline may be seen on a loaded machine (monitor tick, scheduling, transit).
SLACK_S = 2.0
REPORTABLE_STATES = [
    deployment_pb2.REPLICA_STATE_STARTING,
    deployment_pb2.REPLICA_STATE_RUNNING,
    deployment_pb2.REPLICA_STATE_STOPPED,
    deployment_pb2.REPLICA_STATE_EXITED,
    deployment_pb2.REPLICA_STATE_FAILED,
]


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller(extra_args=FAST.args)


async def test_hello_is_answered_with_a_session_at_the_configured_interval(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    first, second = await register_node(node_stub), await register_node(node_stub)

    agent = await Agent.connect(agent_stub, first.id)
    other = await Agent.connect(agent_stub, second.id)

    session = agent.session
    assert re.fullmatch(r"[0-9a-f]{32}", session.session_id), session
    assert session.session_id != other.session.session_id
    assert session.heartbeat_interval.ToTimedelta() == timedelta(seconds=FAST.interval_s)
    # The stream opening is what made the node READY, and the session says so.
    assert session.node_status == READY


async def test_each_beat_is_acked_with_its_sequence_and_receive_time(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    agent = await Agent.connect(agent_stub, node.id)
    before = datetime.now(UTC)

    # Sequences must increase, not count: gaps are fine.
    acks = [await agent.beat(sequence) for sequence in (1, 2, 3, 10, 11, 2**40)]

    after = datetime.now(UTC)
    assert [ack.sequence for ack in acks] == [1, 2, 3, 10, 11, 2**40]
    times = [ack.receive_time.ToDatetime(tzinfo=UTC) for ack in acks]
    assert times == sorted(times)
    assert before - timedelta(milliseconds=10) <= times[0]
    assert times[-1] <= after + timedelta(milliseconds=10)
    assert [m.WhichOneof("kind") for m in agent.messages].count("ack") == len(acks)


async def test_a_node_goes_ready_when_its_stream_opens(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    watch = Watch(node_stub)
    state, _ = await watch.state()
    assert state[node.id].status == PENDING

    await Agent.connect(agent_stub, node.id)

    event, _ = await watch.status_change(node.id, READY)
    assert event.previous_status == PENDING
    assert (await get_node(node_stub, node.id)).status == READY


async def test_last_heartbeat_time_moves_forward_with_each_beat(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    assert not node.HasField("last_heartbeat_time")

    agent = await Agent.connect(agent_stub, node.id)
    opened = (await get_node(node_stub, node.id)).last_heartbeat_time.ToDatetime(tzinfo=UTC)
    seen = [opened]
    for _ in range(3):
        ack = await agent.beat()
        got = await get_node(node_stub, node.id)
        seen.append(got.last_heartbeat_time.ToDatetime(tzinfo=UTC))
        # The time the beat was received, which the ack reports a moment later.
        assert seen[-1] <= ack.receive_time.ToDatetime(tzinfo=UTC)

    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    # Reads always show the live time, wherever they come from.
    listed = await list_all_nodes(node_stub)
    assert listed[node.id].last_heartbeat_time == got.last_heartbeat_time


async def test_a_clean_close_ends_ok_then_the_node_goes_suspect_then_offline(
    controller: ControllerProcess,
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    watch = Watch(node_stub)
    await watch.state()
    agent = await Agent.connect(agent_stub, node.id)
    await watch.status_change(node.id, READY)

    last_beat_sent = time.monotonic()
    await agent.beat()
    assert await agent.close() == grpc.StatusCode.OK

    suspect, _ = await watch.status_change(node.id, SUSPECT)
    assert suspect.previous_status == READY
    offline, offline_at = await watch.status_change(node.id, OFFLINE, wait_s=WAIT_S + SLACK_S)
    assert offline.previous_status == SUSPECT
    # OFFLINE is judged from the last beat the controller received, never sooner.
    silent = offline_at - last_beat_sent
    assert FAST.offline_after_s <= silent <= FAST.offline_after_s + SLACK_S, silent
    assert (await get_node(node_stub, node.id)).status == OFFLINE
    await logged(
        controller,
        lambda line: (
            line.get("msg") == "heartbeat stream closed by agent" and line.get("node_id") == node.id
        ),
    )

    # The agent comes back: a new stream makes the node READY again at once.
    again = await Agent.connect(agent_stub, node.id)
    assert again.session.node_status == READY
    back, _ = await watch.status_change(node.id, READY)
    assert back.previous_status == OFFLINE


async def test_a_node_that_beats_again_after_going_offline_is_ready(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    watch = Watch(node_stub)
    await watch.state()
    agent = await Agent.connect(agent_stub, node.id)
    await watch.status_change(node.id, READY)

    # The stream stays open but silent until the node is OFFLINE.
    await watch.status_change(node.id, SUSPECT)
    await watch.status_change(node.id, OFFLINE, wait_s=WAIT_S + SLACK_S)
    assert not agent.call.done()

    ack = await agent.beat()

    event, _ = await watch.status_change(node.id, READY)
    assert event.previous_status == OFFLINE
    got = await get_node(node_stub, node.id)
    assert got.status == READY
    assert got.last_heartbeat_time.ToDatetime(tzinfo=UTC) <= ack.receive_time.ToDatetime(tzinfo=UTC)


async def test_beats_carrying_load_and_replica_reports_are_accepted(
    node_stub: NodeServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    node = await register_node(node_stub)
    watch = Watch(node_stub)
    await watch.state()
    agent = await Agent.connect(agent_stub, node.id)
    deployment_id = str(uuid.uuid4())
    every_state = [
        hb.ReplicaReport(
            deployment_id=deployment_id, replica_index=i, state=state, message=f"replica {i}"
        )
        for i, state in enumerate(REPORTABLE_STATES)
    ]
    # The limits themselves are allowed: 1000 replicas, 1024-character messages, 0 and 100 %.
    most_replicas = [
        hb.ReplicaReport(
            deployment_id=str(uuid.uuid4()),
            replica_index=i,
            state=deployment_pb2.REPLICA_STATE_RUNNING,
            message="m" * 1024 if i == 0 else "",
        )
        for i in range(1000)
    ]
    beats: list[dict[str, Any]] = [
        {"load": hb.NodeLoad(cpu_percent=37.5, memory_used_gb=3.25, disk_used_gb=20.0)},
        {"load": hb.NodeLoad(cpu_percent=100.0), "replicas": every_state},
        {"load": hb.NodeLoad(cpu_percent=0.0), "replicas": most_replicas},
        {},  # an empty beat: the agent runs nothing and measures nothing
    ]

    acks = [await agent.beat(**fields) for fields in beats]

    assert [ack.sequence for ack in acks] == [1, 2, 3, 4]
    assert not agent.call.done()
    # READY is persisted moments after the stream opens (reads are soon consistent): wait for it.
    await watch.status_change(node.id, READY)
    assert (await get_node(node_stub, node.id)).status == READY


async def test_a_stream_past_its_max_age_is_asked_to_reconnect_and_its_node_stays_ready(
    start_controller: StartController,
) -> None:
    # SUSPECT after 3 s: the agent needs no beats to stay READY past the stream's age (the least
    # allowed: 10 intervals), so no write of its races the stream's end.
    steady = replace(STEADY, interval_s=0.1)
    max_age_s = 10 * steady.interval_s
    process = start_controller(extra_args=[*steady.args, "--stream-max-age-s", f"{max_age_s:g}"])
    async with open_channel(process.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        node = await register_node(stub)
        watch = Watch(stub)
        await watch.state()
        agents = agent_service_pb2_grpc.AgentServiceStub(channel)
        agent = await Agent.connect(agents, node.id)
        await watch.status_change(node.id, READY)

        index = await agent.inbox.first(
            lambda m: m.WhichOneof("kind") == "reconnect", "Reconnect", wait_s=max_age_s + WAIT_S
        )
        assert await agent.ended() == grpc.StatusCode.OK
        again = await Agent.connect(agents, node.id)  # as an agent does, at once
        await again.beat()

        age = agent.inbox.arrivals[index] - agent.hello_sent_at
        assert agent.reconnects[0].reason == "stream lifetime reached"
        assert 0.9 * max_age_s <= age <= 1.1 * max_age_s + SLACK_S, age
        assert again.session.node_status == READY
        # A planned end is no broken stream: the node never left READY.
        marker = await register_node(stub)
        _, before = await watch.until(
            lambda e: e.type == ADDED and e.node.id == marker.id, "the marker node"
        )
        assert [e for e in before if e.node.id == node.id] == []
