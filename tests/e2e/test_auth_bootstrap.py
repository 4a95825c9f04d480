"""The agent-bootstrap role against a real controller: the token a DaemonSet's Secret holds so
that agents can join, and nothing more.

- `automator67 token create --role agent-bootstrap` makes one the controller accepts;
- with it RegisterNode succeeds (and returns the node's own node token), while reading, changing
  or deleting nodes, touching deployments, watching or streaming heartbeats is
  PERMISSION_DENIED (however the stream is written: test_auth_refused_streams.py);
- the reference agent given it registers, then streams with the node token it got; if its node
  is deleted it cannot look the node up (PERMISSION_DENIED) and registers anew; so it does when
  the signing key changed (its node token refused, and the new bootstrap token may not stream).

The full RPC x role table is in test_auth_matrix.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from automator67.agent import AgentClient
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import deployment_service_pb2_grpc, node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as ns
from grpc import aio

from controller.auth.tokens import unverified_claims

from .auth_helpers import bearer, call_status
from .conftest import StartController
from .controller_process import ROOT, ControllerProcess, controller_env
from .seed import seed_node
from .test_agent_cli import CONTROLLER_ARGS, READY, WAIT_S, AgentProcess, next_node

CALL_TIMEOUT_S = 10.0


def bootstrap_token(controller: ControllerProcess) -> str:
    """Made by the real CLI, with the controller's key (its data dir)."""
    done = subprocess.run(
        [
            sys.executable, "-m", "controller", "token", "create", "--role", "agent-bootstrap",
            "--subject", "daemonset", "--ttl", "1h", "--data-dir", str(controller.data_dir),
        ],
        cwd=ROOT, env=controller_env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "agent-bootstrap token for 'daemonset'" in done.stderr
    return done.stdout.strip()


async def denied(call: Any) -> str:
    """The details of the PERMISSION_DENIED `call` ends with (any other end fails the test)."""
    with pytest.raises(aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, refused.value
    return str(refused.value.details())


async def test_a_bootstrap_token_registers_nodes_and_does_nothing_else(
    controller: ControllerProcess,
) -> None:
    token = bootstrap_token(controller)
    claims = unverified_claims(token)
    assert (claims["role"], claims["sub"]) == ("agent-bootstrap", "daemonset")
    metadata = bearer(token)
    async with aio.insecure_channel(controller.address) as channel:
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        deployments = deployment_service_pb2_grpc.DeploymentServiceStub(channel)
        registered = await nodes.RegisterNode(
            ns.RegisterNodeRequest(node=seed_node()), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        node_id = registered.node.id
        node_claims = unverified_claims(registered.agent_token)
        refusals = {
            "GetNode": await denied(
                nodes.GetNode(ns.GetNodeRequest(node_id=node_id), metadata=metadata)
            ),
            "ListNodes": await denied(nodes.ListNodes(ns.ListNodesRequest(), metadata=metadata)),
            "DeleteNode": await denied(
                nodes.DeleteNode(ns.DeleteNodeRequest(node_id=node_id), metadata=metadata)
            ),
            "GetNodeStats": await denied(
                nodes.GetNodeStats(ns.GetNodeStatsRequest(), metadata=metadata)
            ),
            "ListDeployments": await denied(
                deployments.ListDeployments(ds.ListDeploymentsRequest(), metadata=metadata)
            ),
            "CreateDeployment": await denied(
                deployments.CreateDeployment(ds.CreateDeploymentRequest(), metadata=metadata)
            ),
            "DeleteDeployment": await denied(
                deployments.DeleteDeployment(
                    ds.DeleteDeploymentRequest(deployment_id=str(uuid.uuid4())), metadata=metadata
                )
            ),
        }
        streams = {
            path.rsplit("/", 1)[-1]: await call_status(channel, path, metadata, node_id)
            for path in (
                "/automator67.v1.NodeService/WatchNodes",
                "/automator67.v1.AgentService/Heartbeat",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            )
        }
        # The node is still there, as the bootstrap token registered it.
        kept = await nodes.GetNode(
            ns.GetNodeRequest(node_id=node_id), metadata=controller.metadata, timeout=CALL_TIMEOUT_S
        )

    assert (node_claims["role"], node_claims["sub"]) == ("node", node_id)
    assert refusals == {name: f"the agent-bootstrap role may not call {name}" for name in refusals}
    assert set(streams.values()) == {grpc.StatusCode.PERMISSION_DENIED}, streams
    assert kept.node.id == node_id


async def another_ready_node(watch: Any, than: str) -> node_pb2.Node:
    """The first node event of a node other than `than` that shows READY."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await watch.read()
            assert isinstance(event, ns.WatchNodesResponse), "the watch ended"
            if event.node.id not in ("", than) and event.node.status == READY:
                return event.node


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


async def test_an_agent_bootstraps_with_it_streams_with_its_node_token_and_rejoins_if_deleted(
    start_controller: StartController, agents: list[AgentProcess], tmp_path: Path
) -> None:
    controller = start_controller(extra_args=CONTROLLER_ARGS)
    state_file = tmp_path / "agent.json"
    agent = AgentProcess(controller.address, state_file)
    agent.env = controller_env(A67_AGENT_TOKEN=bootstrap_token(controller))
    async with AgentClient(controller.address, metadata=controller.metadata) as client:
        watch = client.watch_nodes()
        try:
            agents.append(agent.start())
            first = await next_node(watch, None, READY)
            saved = json.loads(state_file.read_text())
            claims = unverified_claims(saved["token"])
            assert (claims["role"], claims["sub"]) == ("node", first.id)
            assert agent.wait_for_line("heartbeat stream opened")

            await client.delete_node(first.id)
            # It may not look the node up with its token: it registers a new one and streams.
            second = await another_ready_node(watch, first.id)
            line = agent.wait_for_line("the token may not read the saved node; registering anew")
        finally:
            watch.cancel()
        listed = [node.id async for node in client.list_nodes()]

    assert line["node_id"] == first.id
    assert second.id != first.id
    assert listed == [second.id]
    assert unverified_claims(json.loads(state_file.read_text())["token"])["sub"] == second.id


async def test_after_a_signing_key_change_an_agent_with_a_new_bootstrap_token_registers_anew(
    start_controller: StartController, agents: list[AgentProcess], tmp_path: Path
) -> None:
    # The key changes (an HMAC secret file here), every token with it; the operator puts a new
    # bootstrap token in the Secret and the agents restart. The saved node token is refused,
    # and the bootstrap token may neither stream for the old node nor look it up.
    secret = tmp_path / "jwt-secret"
    secret.write_text("a" * 48)
    secret.chmod(0o600)
    args = [*CONTROLLER_ARGS, "--jwt-secret-file", str(secret)]
    state_file = tmp_path / "agent.json"
    before = start_controller(extra_args=args)
    agent = AgentProcess(before.address, state_file)
    agent.env = controller_env(A67_AGENT_TOKEN=before.token("agent-bootstrap", subject="agents"))
    async with AgentClient(before.address, metadata=before.metadata) as client:
        watch = client.watch_nodes()
        try:
            agents.append(agent.start())
            first = await next_node(watch, None, READY)
        finally:
            watch.cancel()
    agent.stop()
    assert before.terminate() == 0

    secret.write_text("b" * 48)
    after = start_controller(extra_args=args)
    again = AgentProcess(after.address, state_file)
    again.env = controller_env(A67_AGENT_TOKEN=after.token("agent-bootstrap", subject="agents"))
    async with AgentClient(after.address, metadata=after.metadata) as client:
        watch = client.watch_nodes()
        try:
            agents.append(again.start())
            second = await another_ready_node(watch, first.id)
        finally:
            watch.cancel()
    refused = again.wait_for_line("the saved node token was refused; using the configured token")
    registered = again.wait_for_line("the token may not read the saved node; registering anew")

    assert refused is not None
    assert registered["node_id"] == first.id
    assert unverified_claims(json.loads(state_file.read_text())["token"])["sub"] == second.id
