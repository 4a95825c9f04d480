"""A watch ended by shutdown says where to resume: the revision of the last event it sent (not
of the state it started from), so a client resuming there misses nothing and repeats nothing."""

from __future__ import annotations

import asyncio

import grpc
from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import deployment_service_pb2_grpc as dsg
from grpc import aio

from .conftest import StartController, open_channel
from .heartbeat_helpers import WAIT_S
from .rpc_errors import error_info


async def test_a_watch_ended_by_shutdown_resumes_after_its_last_event(
    start_controller: StartController,
) -> None:
    controller = start_controller()
    last = 0
    async with open_channel(controller.address) as channel:
        stub = dsg.DeploymentServiceStub(channel)
        watch = stub.WatchDeployments(dpb.WatchDeploymentsRequest())
        async with asyncio.timeout(WAIT_S):
            async for event in watch:
                if event.type == dpb.DEPLOYMENT_EVENT_TYPE_SYNCED:
                    break
            for name in ("a", "b"):
                await stub.CreateDeployment(
                    dpb.CreateDeploymentRequest(
                        deployment=deployment_pb2.Deployment(name=name, image="x", replicas=0)
                    )
                )
            async for event in watch:
                last = event.revision
                if event.deployment.name == "b":
                    break
        stopping = asyncio.create_task(asyncio.to_thread(controller.terminate))
        try:
            async with asyncio.timeout(WAIT_S):
                async for event in watch:
                    last = event.revision
            raise AssertionError("the watch ended without an error")
        except aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            reason, metadata = error_info(error)
        await stopping

    assert reason == "SHUTTING_DOWN"
    assert int(metadata["resume_revision"]) == last > 0
