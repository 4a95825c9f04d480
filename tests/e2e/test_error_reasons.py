"""Every error carries `google.rpc.ErrorInfo`: a stable reason that SDK users branch on (never the
message text), and metadata they can act on, such as the current etag of a stale-etag ABORTED."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import node_service_pb2 as npb
from automator67.v1 import node_service_pb2_grpc
from google.protobuf import field_mask_pb2

from .conftest import open_channel
from .controller_process import ControllerProcess
from .rpc_errors import error_info, rpc_error
from .seed import seed_node, web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    return shared_controller


async def test_an_unknown_id_is_not_found_with_its_kind_and_id(
    node_stub: NodeServiceAsyncStub, deployment_stub: DeploymentServiceAsyncStub
) -> None:
    missing = str(uuid.uuid4())
    error = await rpc_error(node_stub.GetNode(npb.GetNodeRequest(node_id=missing)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(error) == ("NODE_NOT_FOUND", {"node_id": missing})
    error = await rpc_error(
        deployment_stub.GetDeployment(dpb.GetDeploymentRequest(deployment_id=missing))
    )
    assert error_info(error) == ("DEPLOYMENT_NOT_FOUND", {"deployment_id": missing})


async def test_an_invalid_field_is_invalid_field(node_stub: NodeServiceAsyncStub) -> None:
    error = await rpc_error(node_stub.RegisterNode(npb.RegisterNodeRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error)[0] == "INVALID_FIELD"


async def test_a_taken_name_and_a_stale_etag_say_so_with_the_current_etag(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    name = f"reasons-{uuid.uuid4().hex[:8]}"
    created = (
        await deployment_stub.CreateDeployment(
            dpb.CreateDeploymentRequest(deployment=web_deployment(name))
        )
    ).deployment
    error = await rpc_error(
        deployment_stub.CreateDeployment(
            dpb.CreateDeploymentRequest(deployment=web_deployment(name))
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error) == ("DEPLOYMENT_NAME_TAKEN", {"name": name})

    change = web_deployment(name)
    change.id, change.replicas = created.id, 2
    mask = field_mask_pb2.FieldMask(paths=["replicas"])
    # Unconditional (the scheduler may move the etag at any time), then with the first etag:
    updated = (
        await deployment_stub.UpdateDeployment(
            dpb.UpdateDeploymentRequest(deployment=change, update_mask=mask)
        )
    ).deployment
    change.etag = created.etag
    error = await rpc_error(
        deployment_stub.UpdateDeployment(
            dpb.UpdateDeploymentRequest(deployment=change, update_mask=mask)
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    reason, metadata = error_info(error)
    current = (
        await deployment_stub.GetDeployment(dpb.GetDeploymentRequest(deployment_id=created.id))
    ).deployment
    assert reason == "ETAG_MISMATCH"
    assert int(updated.etag) <= int(metadata["current_etag"]) <= int(current.etag)

    error = await rpc_error(
        deployment_stub.DeleteDeployment(
            dpb.DeleteDeploymentRequest(deployment_id=created.id, etag=created.etag)
        )
    )
    assert error_info(error)[0] == "ETAG_MISMATCH"


async def test_a_role_that_may_not_call_is_role_not_permitted(
    controller: ControllerProcess,
) -> None:
    async with open_channel(controller.address, controller.token("viewer")) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        error = await rpc_error(stub.RegisterNode(npb.RegisterNodeRequest(node=seed_node())))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error) == (
        "ROLE_NOT_PERMITTED",
        {"role": "viewer", "method": "RegisterNode"},
    )


async def test_no_token_is_token_invalid(controller: ControllerProcess) -> None:
    async with open_channel(controller.address, "") as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        error = await rpc_error(stub.GetNodeStats(npb.GetNodeStatsRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error) == ("TOKEN_INVALID", {})
