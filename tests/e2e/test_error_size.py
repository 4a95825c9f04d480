"""Every error reaches the client: however large or numerous the invalid parts of a request,
the status message and its details stay under 8 KB, so a grpc client (whose metadata limit is
8 KB) sees the real code instead of RESOURCE_EXHAUSTED "received metadata size exceeds soft
limit". Each case drives one error path with oversized input through a real client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import grpc
import pytest
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as npb
from google.protobuf import field_mask_pb2
from grpc import aio

from .controller_process import ControllerProcess
from .rpc_errors import rich_status, rpc_error
from .seed import seed_node, web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

LIMIT_BYTES = 8 * 1024
HUGE = 20_000


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """Every request here is refused and changes nothing: one server serves the module."""
    return shared_controller


@dataclass(frozen=True)
class Stubs:
    nodes: NodeServiceAsyncStub
    deployments: DeploymentServiceAsyncStub


@pytest.fixture
def stubs(node_stub: NodeServiceAsyncStub, deployment_stub: DeploymentServiceAsyncStub) -> Stubs:
    return Stubs(node_stub, deployment_stub)


def register(**changes: Any) -> Callable[[Stubs], Awaitable[Any]]:
    request = npb.RegisterNodeRequest(node=seed_node(**changes))
    return lambda stubs: stubs.nodes.RegisterNode(request)


def create(**changes: Any) -> Callable[[Stubs], Awaitable[Any]]:
    request = dpb.CreateDeploymentRequest(deployment=web_deployment(**changes))
    return lambda stubs: stubs.deployments.CreateDeployment(request)


def update_with_mask(*paths: str) -> Callable[[Stubs], Awaitable[Any]]:
    async def send(stubs: Stubs) -> Any:
        created = await stubs.deployments.CreateDeployment(
            dpb.CreateDeploymentRequest(deployment=web_deployment(name=f"mask-{len(paths)}"))
        )
        request = dpb.UpdateDeploymentRequest(
            deployment=created.deployment, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return await stubs.deployments.UpdateDeployment(request)

    return send


def list_nodes(filter_text: str) -> Callable[[Stubs], Awaitable[Any]]:
    return lambda stubs: stubs.nodes.ListNodes(npb.ListNodesRequest(filter=filter_text))


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: dict[str, tuple[Callable[[Stubs], Awaitable[Any]], grpc.StatusCode]] = {
    "64 invalid label keys": (
        register(labels={f"!{i:03}" + "x" * 300: "v" for i in range(64)}),
        INVALID,
    ),
    "64 invalid non-ASCII label keys": (
        register(labels={f"{i:03}" + "é" * 300: "v" for i in range(64)}),
        INVALID,
    ),
    "256 invalid env names": (
        create(env={f"{i}-BAD" + "X" * 300: "v" for i in range(256)}),
        INVALID,
    ),
    "a 20,000-character field mask path": (update_with_mask("x" * HUGE), INVALID),
    "1,000 unknown field mask paths": (
        update_with_mask(*(f"p{i}" * 20 for i in range(1000))),
        INVALID,
    ),
    "a 20,000-character filter field": (list_nodes("é" * HUGE + " = 1"), INVALID),
    "a 20,000-character filter value": (list_nodes("status = " + "Z" * HUGE), INVALID),
    "a 20,000-character filter that does not parse": (list_nodes('"' + "é" * HUGE), INVALID),
    "a 20,000-character node id": (
        lambda stubs: stubs.nodes.GetNode(npb.GetNodeRequest(node_id="n" * HUGE)),
        INVALID,
    ),
    "a 20,000-character page token": (
        lambda stubs: stubs.nodes.ListNodes(npb.ListNodesRequest(page_token="t" * HUGE)),
        INVALID,
    ),
    "a 20,000-character request id": (
        lambda stubs: stubs.nodes.RegisterNode(
            npb.RegisterNodeRequest(node=seed_node(), request_id="r" * HUGE)
        ),
        INVALID,
    ),
    "every field of a node too long": (
        register(
            provider="p" * HUGE,
            endpoint="e" * HUGE,
            region="r" * HUGE,
            labels={"k" * 60: "v" * HUGE},
        ),
        INVALID,
    ),
}


def wire_size(error: aio.AioRpcError) -> int:
    """The bytes the error's trailers take: each (key, value), and the percent-encoded message."""
    size = len("grpc-message") + len(quote(error.details() or "", safe=" "))
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        size += len(key) + len(value)
    return size


@pytest.mark.parametrize("case", list(CASES))
async def test_an_oversized_error_reaches_the_client_under_8_kb(case: str, stubs: Stubs) -> None:
    send, code = CASES[case]

    error = await rpc_error(send(stubs))

    assert error.code() == code, error.details()
    assert wire_size(error) < LIMIT_BYTES
    status = rich_status(error)
    assert status.message == error.details()
    assert len(status.SerializeToString()) < LIMIT_BYTES


async def test_a_bounded_error_says_how_many_violations_it_left_out(stubs: Stubs) -> None:
    send, _ = CASES["256 invalid env names"]

    error = await rpc_error(send(stubs))

    assert "more" in (error.details() or ""), error.details()
