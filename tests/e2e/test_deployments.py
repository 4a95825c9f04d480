"""DeploymentService over real stubs against a real controller: create, get, list, delete, stats."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import grpc
from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as pb
from grpc import aio

from .deployment_helpers import gone, scheduled, users_part, wait_for_view
from .rpc_errors import bad_request_fields, rpc_error
from .seed import web_deployment

if TYPE_CHECKING:
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub


async def create(
    stub: DeploymentServiceAsyncStub, deployment: deployment_pb2.Deployment
) -> deployment_pb2.Deployment:
    response = await stub.CreateDeployment(pb.CreateDeploymentRequest(deployment=deployment))
    return response.deployment


async def list_ids(stub: DeploymentServiceAsyncStub, filter_text: str = "") -> list[str]:
    response = await stub.ListDeployments(
        pb.ListDeploymentsRequest(filter=filter_text, page_size=1000)
    )
    assert response.next_page_token == ""
    return [d.id for d in response.deployments]


def constrained(provider: str = "", region: str = "") -> deployment_pb2.PlacementConstraints:
    return deployment_pb2.PlacementConstraints(provider=provider, region=region)


async def test_a_new_deployment_is_pending_with_a_reason(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    created = await create(
        deployment_stub,
        web_deployment(
            "web",
            command=["nginx", "-g", "daemon off;"],
            env={"MODE": "prod"},
            strategy=deployment_pb2.PLACEMENT_STRATEGY_SPREAD,
            constraints=constrained("render", "us-east-1"),
        ),
    )

    assert str(uuid.UUID(created.id)) == created.id
    assert created.status == deployment_pb2.DEPLOYMENT_STATUS_PENDING
    assert created.status_reason
    assert created.replicas == 1
    assert list(created.node_ids) == []
    assert created.etag
    assert created.HasField("create_time")
    assert (created.name, created.image) == ("web", "nginx:1.27")
    assert list(created.command) == ["nginx", "-g", "daemon off;"]
    assert dict(created.env) == {"MODE": "prod"}
    assert created.strategy == deployment_pb2.PLACEMENT_STRATEGY_SPREAD
    assert created.constraints == constrained("render", "us-east-1")


async def test_get_returns_the_created_deployment(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    created = await create(deployment_stub, web_deployment(replicas=3))

    response = await deployment_stub.GetDeployment(
        pb.GetDeploymentRequest(deployment_id=created.id)
    )

    assert users_part(response.deployment) == users_part(created)
    assert response.deployment.replicas == 3


async def test_a_second_deployment_with_the_same_name_already_exists(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    first = await create(deployment_stub, web_deployment("web"))

    error = await rpc_error(
        deployment_stub.CreateDeployment(
            pb.CreateDeploymentRequest(deployment=web_deployment("web", image="httpd:2"))
        )
    )

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await list_ids(deployment_stub) == [first.id]


async def test_a_name_is_free_again_once_its_deployment_is_deleted(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    first = await create(deployment_stub, web_deployment("web"))
    await deployment_stub.DeleteDeployment(pb.DeleteDeploymentRequest(deployment_id=first.id))
    await gone(deployment_stub, first.id)

    second = await create(deployment_stub, web_deployment("web"))

    assert second.id != first.id


async def test_a_retried_create_with_the_same_request_id_creates_once(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    request = pb.CreateDeploymentRequest(deployment=web_deployment(), request_id="create-web-1")

    first = await deployment_stub.CreateDeployment(request)
    retry = await deployment_stub.CreateDeployment(request)

    assert retry.deployment.id == first.deployment.id
    assert users_part(retry.deployment) == users_part(first.deployment)
    assert await list_ids(deployment_stub) == [first.deployment.id]


async def test_a_request_id_reused_for_another_deployment_is_invalid(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    first = pb.CreateDeploymentRequest(deployment=web_deployment("web"), request_id="key-1")
    await deployment_stub.CreateDeployment(first)

    error = await rpc_error(
        deployment_stub.CreateDeployment(
            pb.CreateDeploymentRequest(deployment=web_deployment("api"), request_id="key-1")
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["request_id"]
    assert len(await list_ids(deployment_stub)) == 1


async def test_list_filters_by_status_name_provider_and_region(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    web = await create(deployment_stub, web_deployment("web", constraints=constrained("render")))
    api = await create(
        deployment_stub, web_deployment("api", constraints=constrained("render", "eu-west-1"))
    )
    batch = await create(deployment_stub, web_deployment("batch"))
    everything = sorted(d.id for d in (web, api, batch))

    cases = {
        "": everything,
        "status = PENDING": everything,
        "status = DEPLOYMENT_STATUS_PENDING": everything,
        "status = RUNNING": [],
        "name = api": [api.id],
        'name = "batch"': [batch.id],
        "provider = render": sorted([web.id, api.id]),
        'region = "eu-west-1"': [api.id],
        "provider = render AND region = eu-west-1 AND status = PENDING": [api.id],
        "name = nothing": [],
    }
    for filter_text, expected in cases.items():
        assert await list_ids(deployment_stub, filter_text) == expected, filter_text


async def test_listing_page_by_page_visits_every_deployment_once_in_id_order(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    created = {(await create(deployment_stub, web_deployment(f"web-{i}"))).id for i in range(5)}
    pages: list[list[str]] = []
    token = ""

    while True:
        response = await deployment_stub.ListDeployments(
            pb.ListDeploymentsRequest(page_size=2, page_token=token)
        )
        pages.append([d.id for d in response.deployments])
        token = response.next_page_token
        if not token:
            break

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == sorted(created)


async def test_delete_removes_the_deployment(deployment_stub: DeploymentServiceAsyncStub) -> None:
    created = await create(deployment_stub, web_deployment())

    deleted = await deployment_stub.DeleteDeployment(
        pb.DeleteDeploymentRequest(deployment_id=created.id)
    )
    # AIP-135: the deployment in its deleting state, with a new etag.
    assert deleted.deployment.id == created.id
    assert deleted.deployment.status == deployment_pb2.DEPLOYMENT_STATUS_STOPPING
    assert deleted.deployment.status_reason == "deletion requested"
    assert deleted.deployment.etag != created.etag
    await gone(deployment_stub, created.id)  # no replicas to stop: removed at once

    error = await rpc_error(
        deployment_stub.GetDeployment(pb.GetDeploymentRequest(deployment_id=created.id))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    again = await rpc_error(
        deployment_stub.DeleteDeployment(pb.DeleteDeploymentRequest(deployment_id=created.id))
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_with_a_stale_etag_is_aborted_and_keeps_the_deployment(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    # The stale etag is one the server issued for another write.
    older = await create(deployment_stub, web_deployment("older"))
    created = await create(deployment_stub, web_deployment("web"))
    assert older.etag != created.etag

    error = await rpc_error(
        deployment_stub.DeleteDeployment(
            pb.DeleteDeploymentRequest(deployment_id=created.id, etag=older.etag)
        )
    )

    assert error.code() == grpc.StatusCode.ABORTED
    # Once the scheduler has seen both, their etags hold still.
    await wait_for_view(deployment_stub, lambda view: all(scheduled(d) for d in view.values()))
    kept = await deployment_stub.GetDeployment(pb.GetDeploymentRequest(deployment_id=created.id))
    assert users_part(kept.deployment) == users_part(created)
    await deployment_stub.DeleteDeployment(
        pb.DeleteDeploymentRequest(deployment_id=created.id, etag=kept.deployment.etag)
    )
    await gone(deployment_stub, created.id)
    assert await list_ids(deployment_stub) == [older.id]


async def test_delete_with_an_etag_the_server_never_issued_is_invalid(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    created = await create(deployment_stub, web_deployment())

    error = await rpc_error(
        deployment_stub.DeleteDeployment(
            pb.DeleteDeploymentRequest(deployment_id=created.id, etag="W/not-an-etag")
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["etag"]


async def test_stats_count_deployments_by_status_and_replicas(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    empty = await deployment_stub.GetDeploymentStats(pb.GetDeploymentStatsRequest())
    assert empty.total == 0
    await create(deployment_stub, web_deployment("one"))
    await create(deployment_stub, web_deployment("three", replicas=3))
    await create(deployment_stub, web_deployment("none", replicas=0))
    await wait_for_view(deployment_stub, lambda view: all(scheduled(d) for d in view.values()))

    stats = await deployment_stub.GetDeploymentStats(pb.GetDeploymentStatsRequest())

    assert stats.total == 3
    # No node is READY: two wait to be placed; zero replicas of zero run.
    assert dict(stats.by_status) == {"DEPLOYMENT_STATUS_PENDING": 2, "DEPLOYMENT_STATUS_RUNNING": 1}
    assert stats.replicas_requested == 4
    assert stats.replicas_placed == 0


async def test_of_concurrent_creates_with_one_name_exactly_one_wins(
    deployment_stub: DeploymentServiceAsyncStub,
) -> None:
    request = pb.CreateDeploymentRequest(deployment=web_deployment("contested"))

    outcomes = await asyncio.gather(
        *(deployment_stub.CreateDeployment(request) for _ in range(20)), return_exceptions=True
    )

    created = [o.deployment.id for o in outcomes if isinstance(o, pb.CreateDeploymentResponse)]
    refused = [o.code() for o in outcomes if isinstance(o, aio.AioRpcError)]
    assert len(created) == 1
    assert refused == [grpc.StatusCode.ALREADY_EXISTS] * 19
    assert await list_ids(deployment_stub) == created
