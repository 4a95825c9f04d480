"""The reference agent as users run it: `python -m controller agent` against a real controller
process, observed through the typed client's `watch_nodes`. Every wait has a timeout; nothing
sleeps."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from automator67 import NotFoundError
from automator67.agent import AgentClient
from automator67.v1 import deployment_pb2, heartbeat_pb2, node_pb2, node_service_pb2
from automator67.watch import AsyncWatch

from .conftest import StartController
from .controller_process import ADMIN_TOKENS, ROOT, LogLine, ServerLog, controller_env

# A fast controller: beats every 0.5 s, SUSPECT after 0.75 s without one, OFFLINE after 1.5 s.
CONTROLLER_ARGS = ("--heartbeat-interval-s", "0.5", "--keepalive-timeout-s", "1")
WAIT_S = 10.0
READY = node_pb2.NODE_STATUS_READY
SUSPECT = node_pb2.NODE_STATUS_SUSPECT


class AgentProcess:
    """`python -m controller agent` as a child process; its JSON log lines are collected by a
    reader thread so that tests can wait for them."""

    def __init__(self, controller_address: str, state_file: Path) -> None:
        self.command = [
            sys.executable,
            "-m",
            "controller",
            "agent",
            "--controller",
            controller_address,
            "--state-file",
            str(state_file),
        ]
        # The controller's admin token: the agent registers with it, then streams with the node
        # token it gets back (kept in the state file).
        self.env = controller_env(A67_AGENT_TOKEN=ADMIN_TOKENS.get(controller_address, ""))
        self._process: subprocess.Popen[str] | None = None
        self.log: ServerLog | None = None

    def start(self) -> AgentProcess:
        self._process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ServerLog(self._process.stderr)
        return self

    def wait_for_line(self, msg: str) -> LogLine:
        assert self.log is not None
        return self.log.wait_for(lambda line: line.get("msg") == msg, WAIT_S)

    def messages(self) -> list[str]:
        assert self.log is not None
        return [str(line.get("msg", line.get("raw"))) for line in self.log.lines]

    async def signal_and_wait(self, sig: signal.Signals) -> int:
        """Sends `sig` and returns the exit code, without blocking the event loop."""
        process = self._process
        assert process is not None
        process.send_signal(sig)
        code = await asyncio.to_thread(process.wait, WAIT_S)
        assert self.log is not None
        await asyncio.to_thread(self.log.join, WAIT_S)
        return code

    def stop(self) -> None:
        """Teardown: kills the process if it still runs."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(WAIT_S)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()


StartAgent = Callable[[str, Path], AgentProcess]


@pytest.fixture
def start_agent() -> Iterator[StartAgent]:
    """Starts agents: `start_agent(controller_address, state_file)`; each is killed at teardown
    if it still runs."""
    started: list[AgentProcess] = []

    def start(address: str, state_file: Path) -> AgentProcess:
        agent = AgentProcess(address, state_file)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.stop()


async def next_node(
    watch: AsyncWatch[node_service_pb2.WatchNodesResponse],
    node_id: str | None,
    status: node_pb2.NodeStatus.ValueType,
) -> node_pb2.Node:
    """The first node event (of `node_id`, if given) that shows `status`."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await watch.read()
            assert isinstance(event, node_service_pb2.WatchNodesResponse), "the watch ended"
            node = event.node
            if node.id and node_id in (None, node.id) and node.status == status:
                return node


async def test_the_agent_registers_stops_cleanly_and_comes_back_as_the_same_node(
    start_controller: StartController, start_agent: StartAgent, tmp_path: Path
) -> None:
    controller = start_controller(extra_args=CONTROLLER_ARGS)
    state_file = tmp_path / "agent" / "state.json"
    async with AgentClient(controller.address, metadata=controller.metadata) as client:
        watch = client.watch_nodes()
        try:
            # First run: registers, saves the id, streams; the node turns READY.
            agent = start_agent(controller.address, state_file)
            node = await next_node(watch, None, READY)
            assert agent.wait_for_line("registered")["node_id"] == node.id
            assert json.loads(state_file.read_text())["node_id"] == node.id
            assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
            assert node.provider == "bare-metal" and node.capabilities.cpu_cores > 0

            # SIGTERM: the agent ends its request stream (a clean close, which the controller
            # logs as such) and exits 0; the node turns SUSPECT at once. (Once its session is
            # up: a SIGTERM while the stream is still opening cancels the call instead.)
            agent.wait_for_line("heartbeat stream opened")
            assert await agent.signal_and_wait(signal.SIGTERM) == 0
            await next_node(watch, node.id, SUSPECT)
            closed = controller.log.wait_for(
                lambda line: line.get("msg") == "heartbeat stream closed by agent", WAIT_S
            )
            assert closed["node_id"] == node.id
            assert agent.messages()[-1] == "stopped"

            # Restart: the saved id is reused; the same node turns READY again.
            again = start_agent(controller.address, state_file)
            await next_node(watch, node.id, READY)
            assert again.wait_for_line("reusing node")["node_id"] == node.id
            assert [n.id async for n in client.list_nodes()] == [node.id]

            # SIGKILL: no goodbye, but the connection closes with the process; SUSPECT at once.
            assert await again.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
            await next_node(watch, node.id, SUSPECT)
        finally:
            watch.cancel()


async def test_the_typed_client_speaks_to_a_real_controller(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=CONTROLLER_ARGS)
    spec = node_pb2.Node(
        provider="bare-metal",
        endpoint="host-1",
        capabilities=node_pb2.Capabilities(cpu_cores=2, memory_gb=4),
    )
    async with AgentClient(controller.address, metadata=controller.metadata) as client:
        node = (await client.register_node(spec, request_id="client-test-1")).node
        again = await client.register_node(spec, request_id="client-test-1")
        assert again.node.id == node.id
        assert (await client.get_node(node.id)).status == node_pb2.NODE_STATUS_PENDING

        async with client.heartbeat(node.id, agent_version="test") as session:
            assert (session.interval_s, session.node_status) == (0.5, READY)
            load = heartbeat_pb2.NodeLoad(cpu_percent=10.0)
            assert [await session.beat(load) for _ in range(3)] == [1, 2, 3]
            acked: list[int] = []
            async with asyncio.timeout(WAIT_S):
                async for response in session:  # acks, and kinds such as assignments
                    if response.WhichOneof("kind") == "ack":
                        acked.append(response.ack.sequence)
                    if len(acked) == 3:
                        break
            assert acked == [1, 2, 3]
        # Leaving the block ended the request stream: a clean end, and closing again is harmless.
        assert await session.close() == grpc.StatusCode.OK
        closed = controller.log.wait_for(
            lambda line: line.get("msg") == "heartbeat stream closed by agent", WAIT_S
        )
        assert closed["session_id"] == session.session_id
        assert (await client.get_node_stats()).by_status == {"NODE_STATUS_SUSPECT": 1}

        with pytest.raises(NotFoundError) as unknown:
            async with client.heartbeat("00000000-0000-4000-8000-000000000000"):
                pass
        assert unknown.value.reason == "NODE_NOT_FOUND"

        deployment = await client.create_deployment(
            deployment_pb2.Deployment(
                name="web",
                image="nginx:1.27",
                resources=deployment_pb2.Resources(cpu_cores=0.5, memory_gb=0.25),
            )
        )
        assert (await client.get_deployment(deployment.id)).name == "web"
        listed = await client.list_deployments(page_size=10).all()
        assert [d.id for d in listed] == [deployment.id]
        assert (await client.get_deployment_stats()).total == 1
        stopping = await client.delete_deployment(deployment.id)
        assert stopping.status == deployment_pb2.DEPLOYMENT_STATUS_STOPPING

        await client.delete_node(node.id)
        with pytest.raises(NotFoundError) as deleted:
            await client.get_node(node.id)
        assert deleted.value.metadata["node_id"] == node.id
