"""What the gateway serves: every annotated RPC of the operators' services, and `GET /health`
for grpc.health.v1's Check, whose .proto we do not own (the rule grpc-gateway would take from
its API configuration file)."""

from __future__ import annotations

from automator67.v1 import deployment_service_pb2, node_service_pb2
from google.api import http_pb2
from grpc_health.v1 import health_pb2

from controller.gateway.routes import Route, routes_of

SERVICES = (
    node_service_pb2.DESCRIPTOR.services_by_name["NodeService"],
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
EXTRA_RULES = {"/grpc.health.v1.Health/Check": http_pb2.HttpRule(get="/health")}


def controller_routes() -> list[Route]:
    return routes_of(SERVICES, EXTRA_RULES)
