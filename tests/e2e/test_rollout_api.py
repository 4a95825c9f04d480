"""The rollout fields over gRPC against a real controller: bad update strategies and health
checks are INVALID_ARGUMENT with the field (BadRequest), a rollback request's rules, pause with
an etag, and the generations a client waits on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as pb

from .rpc_errors import bad_request_fields, error_info, rpc_error
from .seed import web_deployment
from .test_deployment_updates import create_settled, update

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub


async def test_a_bad_update_strategy_or_health_check_names_the_field(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    IP, US, HC = dpb.IntOrPercent, dpb.UpdateStrategy, dpb.HealthCheck
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "a percentage that is not one": (
            {"update_strategy": US(max_surge=IP(percent="a lot"))},
            "deployment.update_strategy.max_surge.percent",
        ),
        "both zero": (
            {"update_strategy": US(max_surge=IP(count=0), max_unavailable=IP(count=0))},
            "deployment.update_strategy.max_unavailable",
        ),
        "a check with no probe": ({"health_check": HC()}, "deployment.health_check"),
    }
    for name, (fields, field) in cases.items():
        dep = web_deployment(f"bad-{len(field)}-{len(name)}")
        for key, value in fields.items():
            getattr(dep, key).CopyFrom(value)
        error = await rpc_error(
            deployment_stub.CreateDeployment(pb.CreateDeploymentRequest(deployment=dep))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert bad_request_fields(error) == [field], name
    listed = await deployment_stub.ListDeployments(pb.ListDeploymentsRequest())
    assert list(listed.deployments) == []  # nothing was created


async def test_generations_pause_and_rollback_over_the_wire(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    dep = await create_settled(deployment_stub, web_deployment("web"))
    assert (dep.generation, dep.template_generation) == (1, 1)
    assert dep.update_strategy.max_surge.percent == "25%"

    v2 = (await deployment_stub.UpdateDeployment(update(dep.id, ["image"], image="b:2"))).deployment
    assert (v2.generation, v2.template_generation) == (2, 2)
    assert [r.template_generation for r in v2.rollout_history] == [1, 2]

    paused = await deployment_stub.UpdateDeployment(update(dep.id, ["paused"], paused=True))
    assert paused.deployment.paused and paused.deployment.generation == 3
    stale = await rpc_error(
        deployment_stub.UpdateDeployment(update(dep.id, ["paused"], dep.etag, paused=False))
    )
    assert stale.code() == grpc.StatusCode.ABORTED  # an etag from before the image change

    rollback = pb.UpdateDeploymentRequest(
        deployment=dpb.Deployment(id=dep.id), rollback=pb.Rollback(template_generation=1)
    )
    refused = await rpc_error(deployment_stub.UpdateDeployment(rollback))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(refused)[0] == "DEPLOYMENT_PAUSED"

    await deployment_stub.UpdateDeployment(update(dep.id, ["paused"], paused=False))
    with_mask = pb.UpdateDeploymentRequest()
    with_mask.CopyFrom(rollback)
    with_mask.update_mask.paths.append("image")
    mixed = await rpc_error(deployment_stub.UpdateDeployment(with_mask))
    assert bad_request_fields(mixed) == ["update_mask"]
    unknown = pb.UpdateDeploymentRequest(
        deployment=dpb.Deployment(id=dep.id), rollback=pb.Rollback(template_generation=9)
    )
    missing = await rpc_error(deployment_stub.UpdateDeployment(unknown))
    assert bad_request_fields(missing) == ["rollback.template_generation"]

    back = (await deployment_stub.UpdateDeployment(rollback)).deployment
    assert (back.image, back.template_generation, back.generation) == ("nginx:1.27", 1, 5)
    assert back.rollout_history[-1].reason == "ROLLBACK_REQUESTED"
