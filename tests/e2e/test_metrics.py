"""Prometheus metrics of a real controller process: with `--metrics-port`, /metrics on the
controller's host answers, and RPCs, heartbeats, transitions, placements and the fleet state
show in it. Values are awaited by scraping again until they match, never by sleeping for them."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import pytest
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from .conftest import StartController
from .controller_process import ControllerProcess
from .heartbeat_helpers import STEADY, Agent, register_node
from .seed import web_deployment

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

WAIT_S = 10.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def controller(start_controller: StartController, metrics_port: int) -> ControllerProcess:
    return start_controller(extra_args=[*STEADY.args, "--metrics-port", str(metrics_port)])


def scrape(port: int) -> Samples:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(port: int, ready: Callable[[Samples], bool], what: str) -> Samples:
    """Scrapes until `ready` holds, for up to WAIT_S; fails with the last scrape."""
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if ready(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}; last scrape: {samples}")
        await asyncio.sleep(0.05)


async def test_metrics_move_with_rpcs_heartbeats_and_the_fleet(
    controller: ControllerProcess,
    metrics_port: int,
    node_stub: NodeServiceAsyncStub,
    deployment_stub: DeploymentServiceAsyncStub,
    agent_stub: AgentServiceAsyncStub,
) -> None:
    port = metrics_port
    before = await asyncio.to_thread(scrape, port)
    assert value(before, "automator67_nodes", status="READY") == 0
    assert value(before, "automator67_heartbeat_streams_open") == 0

    node = await register_node(node_stub)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await node_stub.GetNode(pb.GetNodeRequest(node_id=str(uuid.uuid4())))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    agent = await Agent.connect(agent_stub, node.id)
    for _ in range(3):
        await agent.beat()
    await deployment_stub.CreateDeployment(
        dpb.CreateDeploymentRequest(deployment=web_deployment("web", replicas=1))
    )

    register = "/automator67.v1.NodeService/RegisterNode"
    get = "/automator67.v1.NodeService/GetNode"
    samples = await scrape_until(
        port,
        lambda s: (
            value(s, "automator67_nodes", status="READY") == 1
            and value(s, "automator67_scheduler_placements_total") >= 1
        ),
        "the node READY and its replica placed",
    )
    assert value(samples, "automator67_rpcs_total", method=register, code="OK") == 1
    assert value(samples, "automator67_rpcs_total", method=get, code="NOT_FOUND") == 1
    assert value(samples, "automator67_rpc_duration_seconds_count", method=register) == 1
    assert value(samples, "automator67_heartbeats_received_total") >= 3
    assert value(samples, "automator67_heartbeat_streams_open") == 1
    transition = {"from": "PENDING", "to": "READY"}
    assert value(samples, "automator67_node_status_transitions_total", **transition) == 1
    assert value(samples, "automator67_nodes", status="PENDING") == 0
    assert value(samples, "automator67_self_suspected") == 0
    assert (
        value(samples, "automator67_deployments", status="PENDING")
        + value(samples, "automator67_deployments", status="SCHEDULED")
        + value(samples, "automator67_deployments", status="RUNNING")
        == 1
    )
    assert value(samples, "automator67_replicas_requested") == 1
    assert value(samples, "automator67_scheduler_pass_duration_seconds_count") >= 1
    assert value(samples, "process_resident_memory_bytes") > 0

    # The agent closes its stream: the node turns SUSPECT, the stream's end is counted.
    assert await agent.close() == grpc.StatusCode.OK
    samples = await scrape_until(
        port,
        lambda s: (
            value(s, "automator67_nodes", status="SUSPECT") == 1
            and value(s, "automator67_heartbeat_stream_ends_total", reason="agent_closed") == 1
        ),
        "the node SUSPECT after the agent closed its stream",
    )
    assert value(samples, "automator67_heartbeat_streams_open") == 0
    assert value(samples, "automator67_nodes", status="READY") == 0
    assert (
        value(
            samples,
            "automator67_rpcs_total",
            method="/automator67.v1.AgentService/Heartbeat",
            code="OK",
        )
        == 1
    )


def test_the_endpoint_is_on_the_controllers_host_and_stops_with_it(
    controller: ControllerProcess, metrics_port: int
) -> None:
    serving = controller.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
    assert serving["metrics_port"] == metrics_port
    assert value(scrape(metrics_port), "automator67_heartbeats_received_total") == 0
    assert controller.terminate() == 0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(metrics_port)


def test_the_metrics_endpoint_is_off_by_default(start_controller: StartController) -> None:
    controller = start_controller()
    serving = controller.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
    assert serving["metrics_port"] == 0
