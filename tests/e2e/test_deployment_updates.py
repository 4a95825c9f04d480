"""UpdateDeployment and WatchDeployments over real stubs against a real controller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as pb
from google.protobuf import field_mask_pb2

from .deployment_helpers import scheduled, wait_for_view
from .rpc_errors import bad_request_fields, rpc_error
from .seed import web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub


async def create_settled(
    stub: DeploymentServiceAsyncStub, deployment: deployment_pb2.Deployment
) -> deployment_pb2.Deployment:
    """Creates it and returns it once the scheduler has seen it (so its etag holds still)."""
    created = await stub.CreateDeployment(pb.CreateDeploymentRequest(deployment=deployment))
    view = await wait_for_view(
        stub, lambda v: created.deployment.id in v and scheduled(v[created.deployment.id])
    )
    return view[created.deployment.id]


async def next_event(call: Any) -> pb.WatchDeploymentsResponse:
    event = await call.read()
    assert isinstance(event, pb.WatchDeploymentsResponse), event
    return event


def update(
    deployment_id: str, paths: list[str], etag: str = "", **fields: object
) -> pb.UpdateDeploymentRequest:
    return pb.UpdateDeploymentRequest(
        deployment=deployment_pb2.Deployment(id=deployment_id, etag=etag, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


async def test_an_update_changes_only_the_fields_in_the_mask(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    dep = await create_settled(deployment_stub, web_deployment("web", replicas=2))

    response = await deployment_stub.UpdateDeployment(
        update(dep.id, ["image", "replicas"], image="nginx:1.28", replicas=4, args=["ignored"])
    )

    updated = response.deployment
    assert (updated.image, updated.replicas) == ("nginx:1.28", 4)
    assert list(updated.args) == []  # not in the mask
    assert updated.name == "web" and updated.etag != dep.etag
    got = await deployment_stub.GetDeployment(pb.GetDeploymentRequest(deployment_id=dep.id))
    assert got.deployment.image == "nginx:1.28"


async def test_an_update_at_a_stale_etag_is_aborted_and_changes_nothing(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    dep = await create_settled(deployment_stub, web_deployment("web"))
    await deployment_stub.UpdateDeployment(update(dep.id, ["image"], dep.etag, image="a:1"))

    error = await rpc_error(
        deployment_stub.UpdateDeployment(update(dep.id, ["image"], dep.etag, image="b:2"))
    )

    assert error.code() == grpc.StatusCode.ABORTED
    got = await deployment_stub.GetDeployment(pb.GetDeploymentRequest(deployment_id=dep.id))
    assert got.deployment.image == "a:1"


async def test_an_update_with_a_bad_mask_or_value_names_the_field(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    dep = await create_settled(deployment_stub, web_deployment("web"))
    cases = {
        "name is not updatable": (update(dep.id, ["name"], name="other"), "update_mask"),
        "an unknown path": (update(dep.id, ["colour"]), "update_mask"),
        "an empty mask": (update(dep.id, []), "update_mask"),
        "too many replicas": (update(dep.id, ["replicas"], replicas=5000), "deployment.replicas"),
        "a malformed id": (update("nope", ["image"], image="x"), "deployment.id"),
    }
    for name, (request, field) in cases.items():
        error = await rpc_error(deployment_stub.UpdateDeployment(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert bad_request_fields(error) == [field], name


async def test_updating_an_unknown_deployment_is_not_found(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    error = await rpc_error(
        deployment_stub.UpdateDeployment(
            update("123e4567-e89b-42d3-a456-426614174000", ["image"], image="x")
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_deployments_starts_with_the_current_state_then_follows_changes(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    first = await create_settled(deployment_stub, web_deployment("first"))
    call = deployment_stub.WatchDeployments(pb.WatchDeploymentsRequest())
    try:
        opening = [await next_event(call), await next_event(call)]
        assert [e.type for e in opening] == [
            pb.DEPLOYMENT_EVENT_TYPE_ADDED,
            pb.DEPLOYMENT_EVENT_TYPE_SYNCED,
        ]
        assert opening[0].deployment.id == first.id

        second = await deployment_stub.CreateDeployment(
            pb.CreateDeploymentRequest(deployment=web_deployment("second"))
        )
        added = await next_event(call)
        assert added.type == pb.DEPLOYMENT_EVENT_TYPE_ADDED
        assert added.deployment.id == second.deployment.id
        assert added.revision > opening[1].revision
    finally:
        call.cancel()


async def test_watch_deployments_resumes_after_a_revision(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    kept = await create_settled(deployment_stub, web_deployment("kept"))
    mark = int(kept.etag)
    later = await deployment_stub.CreateDeployment(
        pb.CreateDeploymentRequest(deployment=web_deployment("later"))
    )

    call = deployment_stub.WatchDeployments(pb.WatchDeploymentsRequest(start_revision=mark))
    try:
        seen = []
        while (event := await next_event(call)).type != pb.DEPLOYMENT_EVENT_TYPE_SYNCED:
            seen.append((event.type, event.deployment.id))
        assert (pb.DEPLOYMENT_EVENT_TYPE_CHANGED, later.deployment.id) in seen
        assert all(deployment_id != kept.id for _, deployment_id in seen)
    finally:
        call.cancel()
