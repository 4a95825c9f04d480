"""The heartbeat stream handler leaves no task behind, whenever its call is cancelled.

grpc.aio cancels a handler's task when the agent goes away. A task the handler started and did
not cancel (the wait for pushed assignments, the beat reader) is then garbage that asyncio
reports as "Task was destroyed but it is pending!" when it is collected: 1,991 such errors in
the log after 2,000 agents left. Each case cancels a real handler (real registries on SQLite, a
fake gRPC context) in one phase of its life and collects the garbage."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from automator67.v1 import heartbeat_pb2 as hb

from controller.api.heartbeat_stream import HeartbeatStream, StreamSettings
from controller.clock import FakeClock
from controller.models import Capabilities, NodeSpec
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Sessions
from controller.store.base import Store

SPEC = NodeSpec(
    provider="render",
    endpoint="https://e",
    region="",
    capabilities=Capabilities(cpu_cores=1, memory_gb=1),
)


class Agent:
    """The agent's side: requests the test feeds, responses the handler wrote."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[hb.HeartbeatRequest | None] = asyncio.Queue()
        self.written: list[hb.HeartbeatResponse] = []
        self.wrote = asyncio.Event()
        self.write_blocks = False
        self._never = asyncio.Event()

    async def stream(self) -> AsyncIterator[hb.HeartbeatRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def write(self, response: hb.HeartbeatResponse) -> None:  # the context's write
        if self.write_blocks:
            await self._never.wait()  # a client that stopped reading
        self.written.append(response)
        self.wrote.set()

    async def wait_written(self, count: int) -> None:
        while len(self.written) < count:
            self.wrote.clear()
            await asyncio.wait_for(self.wrote.wait(), 5)

    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("kind")) for r in self.written]


def hello(node_id: str) -> hb.HeartbeatRequest:
    return hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id, agent_version="t"))


def beat(sequence: int) -> hb.HeartbeatRequest:
    return hb.HeartbeatRequest(beat=hb.Beat(sequence=sequence))


async def idle(agent: Agent, node_id: str) -> None:
    """Hello answered with SessionStart and the assignments; the handler waits."""
    await agent.requests.put(hello(node_id))
    await agent.wait_written(2)


async def mid_beat(agent: Agent, node_id: str) -> None:
    """A beat was read and its ack is blocked on a client that stopped reading."""
    await idle(agent, node_id)
    agent.write_blocks = True
    await agent.requests.put(beat(1))
    for _ in range(20):
        await asyncio.sleep(0)


async def before_hello(agent: Agent, node_id: str) -> None:
    await asyncio.sleep(0.01)


async def start_blocked(agent: Agent, node_id: str) -> None:
    """The SessionStart write never completes."""
    agent.write_blocks = True
    await agent.requests.put(hello(node_id))
    for _ in range(20):
        await asyncio.sleep(0)


async def after_beats(agent: Agent, node_id: str) -> None:
    await idle(agent, node_id)
    for sequence in range(1, 4):
        await agent.requests.put(beat(sequence))
    await agent.wait_written(5)


PHASES: dict[str, Callable[[Agent, str], Any]] = {
    "before the hello": before_hello,
    "while the session start is written": start_blocked,
    "idle between beats": idle,
    "after a few beats": after_beats,
    "while an ack is written": mid_beat,
}


class Collected:
    """Every error asyncio reports through the loop's exception handler or its logger."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.messages.append(str(context.get("message")))


@pytest.mark.parametrize("phase", list(PHASES))
async def test_a_cancelled_stream_leaves_no_pending_task(
    store: Store, clock: FakeClock, phase: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = NodeRegistry(store, clock)
    await nodes.load()
    deployments = DeploymentRegistry(store, clock)
    await deployments.load()
    sessions = Sessions()
    stream = HeartbeatStream(nodes, deployments, sessions, StreamSettings(interval_s=1), clock)
    collected = Collected()
    asyncio.get_running_loop().set_exception_handler(collected.handler)
    node_ids = [(await nodes.register(SPEC)).id for _ in range(20)]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for node_id in node_ids:
            agent = Agent()
            handler = asyncio.ensure_future(stream.serve(agent.stream(), agent))  # type: ignore[arg-type]
            await PHASES[phase](agent, node_id)
            assert not handler.done(), handler
            handler.cancel()
            await asyncio.wait((handler,))
            assert handler.cancelled()
            del handler, agent
        for _ in range(5):  # let cancelled tasks run to their end, then collect the rest
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)

    destroyed = [m for m in collected.messages if "destroyed but it is pending" in m]
    logged = [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()]
    assert destroyed == [] and logged == []
    assert len(sessions) == 0
    assert all(nodes.get(node_id).status.name != "READY" for node_id in node_ids)
