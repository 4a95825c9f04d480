"""`grpc.health.v1` on a running controller: the server and each of its services are SERVING."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from .controller_process import ControllerProcess
from .rpc_errors import rpc_error


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """These tests share one server: none depends on what another stored, none stops it."""
    return shared_controller


@pytest.mark.parametrize(
    "service", ["", "automator67.v1.NodeService", "automator67.v1.DeploymentService"]
)
async def test_the_server_and_its_services_are_serving(service: str, health_stub: Any) -> None:
    response = await health_stub.Check(health_pb2.HealthCheckRequest(service=service))

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_unknown_service_is_not_found(health_stub: Any) -> None:
    error = await rpc_error(
        health_stub.Check(health_pb2.HealthCheckRequest(service="automator67.v1.Nothing"))
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND
