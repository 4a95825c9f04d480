"""The reference agent under authentication, as users run it: registered with an admin token it
streams with its own node token from then on; given a node token it streams for that node and
never registers; over mTLS it presents its certificate."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from automator67.agent import AgentClient
from automator67.v1 import node_pb2

from controller.auth.tokens import unverified_claims

from .conftest import StartController
from .controller_process import controller_env
from .test_agent_cli import CONTROLLER_ARGS, READY, SUSPECT, AgentProcess, next_node
from .test_tls import Pki, tls_args


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def agent_process(
    agents: list[AgentProcess], address: str, state_file: Path, token: str, *args: str
) -> AgentProcess:
    agent = AgentProcess(address, state_file)
    agent.env = controller_env(A67_AGENT_TOKEN=token)
    agent.command += list(args)
    agents.append(agent)
    return agent.start()


async def test_an_agent_registered_with_an_admin_token_streams_with_its_node_token(
    start_controller: StartController, agents: list[AgentProcess], tmp_path: Path
) -> None:
    controller = start_controller(extra_args=CONTROLLER_ARGS)
    state_file = tmp_path / "agent.json"
    async with AgentClient(controller.address, metadata=controller.metadata) as client:
        watch = client.watch_nodes()
        try:
            first = agent_process(agents, controller.address, state_file, controller.admin_token)
            node = await next_node(watch, None, READY)
            saved = json.loads(state_file.read_text())
            assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
            claims = unverified_claims(saved["token"])
            assert (claims["role"], claims["sub"]) == ("node", node.id)
            first.stop()
            await next_node(watch, node.id, SUSPECT)

            # No token configured at all: the saved node token is enough to come back.
            again = agent_process(agents, controller.address, state_file, "")
            await next_node(watch, node.id, READY)
            assert again.wait_for_line("reusing node")["node_id"] == node.id
            assert [n.id async for n in client.list_nodes()] == [node.id]
        finally:
            watch.cancel()


async def test_an_agent_given_a_node_token_streams_for_that_node_without_registering(
    start_controller: StartController, agents: list[AgentProcess], tmp_path: Path
) -> None:
    controller = start_controller(extra_args=CONTROLLER_ARGS)
    async with AgentClient(controller.address, metadata=controller.metadata) as client:
        spec = node_pb2.Node(
            provider="bare-metal",
            endpoint="host-9",
            capabilities=node_pb2.Capabilities(cpu_cores=1, memory_gb=1),
        )
        registered = (await client.register_node(spec)).node
        watch = client.watch_nodes()
        try:
            node_token = controller.token("node", node=registered.id)
            agent = agent_process(agents, controller.address, tmp_path / "a.json", node_token)
            await next_node(watch, registered.id, READY)
            line = agent.wait_for_line("using the node of the token")
            assert line["node_id"] == registered.id
            assert (await client.get_node_stats()).total == 1
            assert "registered" not in agent.messages()
        finally:
            watch.cancel()


async def test_an_agent_connects_over_mtls_with_its_certificate(
    start_controller: StartController, agents: list[AgentProcess], tmp_path: Path
) -> None:
    pki = Pki.make()
    folder = tmp_path / "tls"
    controller = start_controller(
        extra_args=[*CONTROLLER_ARGS, *tls_args(pki, folder, mutual=True)]
    )
    ca, _ = pki.ca.write(folder, "ca")
    cert, key = pki.client.write(folder, "client")
    tls = ["--tls-ca-file", ca, "--tls-cert-file", cert, "--tls-key-file", key]

    agent = agent_process(
        agents, controller.address, tmp_path / "a.json", controller.admin_token, *tls
    )

    assert agent.wait_for_line("heartbeat stream opened")
    assert agent.wait_for_line("registered")
