"""Invalid requests get INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field, and the
server keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from automator67.v1 import deployment_service_pb2, node_pb2, node_service_pb2
from grpc_health.v1 import health_pb2

from .controller_process import ControllerProcess
from .rpc_errors import bad_request_fields, rpc_error
from .seed import seed_node, web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

TEN_MIB = 10 * 1024 * 1024


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """These tests share one server: none depends on what another stored, none stops it."""
    return shared_controller


@dataclass(frozen=True)
class Stubs:
    nodes: NodeServiceAsyncStub
    deployments: DeploymentServiceAsyncStub


@dataclass(frozen=True)
class BadCall:
    """An invalid call and the request field the server must name."""

    send: Callable[[Stubs], Awaitable[Any]]
    field: str


def register(**changes: Any) -> Callable[[Stubs], Awaitable[Any]]:
    request = node_service_pb2.RegisterNodeRequest(node=seed_node(**changes))
    return lambda stubs: stubs.nodes.RegisterNode(request)


def deployment_with_unknown_strategy() -> deployment_service_pb2.CreateDeploymentRequest:
    request = deployment_service_pb2.CreateDeploymentRequest(deployment=web_deployment())
    request.deployment.strategy = 99  # type: ignore[assignment]  # open enum: any int32 goes
    # Field 10 (strategy), varint 99: the value really is on the wire, not dropped by the client.
    assert b"\x50\x63" in request.deployment.SerializeToString()
    return request


BAD_CALLS: dict[str, BadCall] = {
    "a node without a provider": BadCall(register(provider=""), "node.provider"),
    "a node with negative cpu cores": BadCall(
        register(capabilities=node_pb2.Capabilities(cpu_cores=-1, memory_gb=8)),
        "node.capabilities.cpu_cores",
    ),
    "a node with a 10 MiB endpoint": BadCall(register(endpoint="h" * TEN_MIB), "node.endpoint"),
    "a deployment with an unknown strategy": BadCall(
        lambda stubs: stubs.deployments.CreateDeployment(deployment_with_unknown_strategy()),
        "deployment.strategy",
    ),
    "a node id that is not a uuid": BadCall(
        lambda stubs: stubs.nodes.GetNode(node_service_pb2.GetNodeRequest(node_id="not-a-uuid")),
        "node_id",
    ),
    "a deployment id that is not a uuid": BadCall(
        lambda stubs: stubs.deployments.DeleteDeployment(
            deployment_service_pb2.DeleteDeploymentRequest(deployment_id="web")
        ),
        "deployment_id",
    ),
    "a filter on an unknown field": BadCall(
        lambda stubs: stubs.nodes.ListNodes(
            node_service_pb2.ListNodesRequest(filter="colour = red")
        ),
        "filter",
    ),
    "a filter with an unknown status": BadCall(
        lambda stubs: stubs.deployments.ListDeployments(
            deployment_service_pb2.ListDeploymentsRequest(filter="status = SLEEPING")
        ),
        "filter",
    ),
    "a filter that does not parse": BadCall(
        lambda stubs: stubs.nodes.ListNodes(
            node_service_pb2.ListNodesRequest(filter='provider = "render')
        ),
        "filter",
    ),
    "a page token the server never issued": BadCall(
        lambda stubs: stubs.nodes.ListNodes(
            node_service_pb2.ListNodesRequest(page_token="not-a-token")
        ),
        "page_token",
    ),
    "a negative page size": BadCall(
        lambda stubs: stubs.deployments.ListDeployments(
            deployment_service_pb2.ListDeploymentsRequest(page_size=-1)
        ),
        "page_size",
    ),
}


@pytest.fixture
def stubs(node_stub: NodeServiceAsyncStub, deployment_stub: DeploymentServiceAsyncStub) -> Stubs:
    return Stubs(node_stub, deployment_stub)


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_invalid_input_is_refused_naming_the_field(case: str, stubs: Stubs) -> None:
    bad = BAD_CALLS[case]

    error = await rpc_error(bad.send(stubs))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == [bad.field]
    # The message names the field and does not echo the (possibly huge) value back.
    message = error.details() or ""
    assert bad.field in message
    assert len(message) < 500


async def test_every_broken_rule_of_a_request_is_reported_at_once(
    node_stub: NodeServiceAsyncStub,
) -> None:
    node = seed_node(
        provider="",
        endpoint="",
        capabilities=node_pb2.Capabilities(cpu_cores=-1, memory_gb=0),
    )

    error = await rpc_error(node_stub.RegisterNode(node_service_pb2.RegisterNodeRequest(node=node)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_request_fields(error)) == [
        "node.capabilities.cpu_cores",
        "node.capabilities.memory_gb",
        "node.endpoint",
        "node.provider",
    ]


async def test_a_request_without_its_resource_names_the_missing_field(
    node_stub: NodeServiceAsyncStub,
) -> None:
    error = await rpc_error(node_stub.RegisterNode(node_service_pb2.RegisterNodeRequest()))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["node"]


async def test_a_message_over_the_size_limit_is_refused_before_it_is_parsed(
    node_stub: NodeServiceAsyncStub,
) -> None:
    # The server accepts messages up to 16 MiB (A67_MAX_MESSAGE_BYTES); this one is 17 MiB.
    node = seed_node(endpoint="h" * (17 * 1024 * 1024))

    error = await rpc_error(node_stub.RegisterNode(node_service_pb2.RegisterNodeRequest(node=node)))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_server_keeps_serving_after_every_invalid_request(
    stubs: Stubs, health_stub: Any
) -> None:
    for case, bad in BAD_CALLS.items():
        error = await rpc_error(bad.send(stubs))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case

    health = await health_stub.Check(health_pb2.HealthCheckRequest())
    registered = await stubs.nodes.RegisterNode(
        node_service_pb2.RegisterNodeRequest(node=seed_node())
    )

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert registered.node.status == node_pb2.NODE_STATUS_PENDING
    fetched = await stubs.nodes.GetNode(node_service_pb2.GetNodeRequest(node_id=registered.node.id))
    assert fetched.node == registered.node
