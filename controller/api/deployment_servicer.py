"""DeploymentService: translate the request, call the deployment registry, translate the result."""

from __future__ import annotations

from typing import Any

from automator67.v1 import deployment_service_pb2 as pb
from automator67.v1 import deployment_service_pb2_grpc
from grpc import aio

from controller.api import convert
from controller.api.watch import Watch
from controller.errors import InvalidArgumentError
from controller.models import Deployment
from controller.registry.deployments import DeploymentRegistry

Context = aio.ServicerContext[Any, Any]


class DeploymentServicer(deployment_service_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, deployments: DeploymentRegistry, watch: Watch[Deployment]) -> None:
        self._deployments = deployments
        self._watch = watch

    async def CreateDeployment(
        self, request: pb.CreateDeploymentRequest, context: Context
    ) -> pb.CreateDeploymentResponse:
        dep = await self._deployments.create(convert.deployment_spec(request), request.request_id)
        return pb.CreateDeploymentResponse(deployment=convert.deployment_to_pb(dep))

    async def GetDeployment(
        self, request: pb.GetDeploymentRequest, context: Context
    ) -> pb.GetDeploymentResponse:
        dep = self._deployments.get(request.deployment_id)
        return pb.GetDeploymentResponse(deployment=convert.deployment_to_pb(dep))

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        page = self._deployments.list(request.filter, request.page_size, request.page_token)
        deps = [convert.deployment_to_pb(dep) for dep in page.items]
        return pb.ListDeploymentsResponse(deployments=deps, next_page_token=page.next_page_token)

    async def UpdateDeployment(
        self, request: pb.UpdateDeploymentRequest, context: Context
    ) -> pb.UpdateDeploymentResponse:
        deployment_id, spec, paths, etag = convert.deployment_update(request)
        if request.HasField("rollback"):
            if paths:
                raise InvalidArgumentError.single("update_mask", "must be empty with rollback")
            target = request.rollback.template_generation
            dep = await self._deployments.rollback(deployment_id, target, etag)
        else:
            dep = await self._deployments.update(deployment_id, spec, paths, etag)
        return pb.UpdateDeploymentResponse(deployment=convert.deployment_to_pb(dep))

    async def WatchDeployments(  # type: ignore[override]  # a coroutine writing through the context
        self, request: pb.WatchDeploymentsRequest, context: Context
    ) -> None:
        await self._watch.serve(request.start_revision, context)

    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: Context
    ) -> pb.DeleteDeploymentResponse:
        stopping = await self._deployments.delete(request.deployment_id, request.etag)
        return pb.DeleteDeploymentResponse(deployment=convert.deployment_to_pb(stopping))

    async def GetDeploymentStats(
        self, request: pb.GetDeploymentStatsRequest, context: Context
    ) -> pb.GetDeploymentStatsResponse:
        return convert.deployment_stats_to_pb(self._deployments.stats())
