"""The permission table, written out per RPC: who may call what. Every RPC the server registers
must be in this table, so a new RPC cannot ship without a decision about who may call it."""

from __future__ import annotations

import pytest
from automator67.v1 import deployment_service_pb2, node_service_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from controller.auth.principals import Principal, Role, allowed, rule_for

A, OP, V, N = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.NODE
B = Role.AGENT_BOOTSTRAP
READERS = {A, OP, V}
OPEN = None

# full method -> (roles allowed, or OPEN; audited as mutating)
TABLE: dict[str, tuple[set[Role] | None, bool]] = {
    "/automator67.v1.NodeService/RegisterNode": ({A, B}, True),
    "/automator67.v1.NodeService/GetNode": (READERS, False),
    "/automator67.v1.NodeService/ListNodes": (READERS, False),
    "/automator67.v1.NodeService/DeleteNode": ({A}, True),
    "/automator67.v1.NodeService/UpdateNode": ({A}, True),
    "/automator67.v1.NodeService/GetNodeStats": (READERS, False),
    "/automator67.v1.AgentService/Heartbeat": ({A, N}, False),
    "/automator67.v1.NodeService/WatchNodes": (READERS, False),
    "/automator67.v1.DeploymentService/CreateDeployment": ({A, OP}, True),
    "/automator67.v1.DeploymentService/GetDeployment": (READERS, False),
    "/automator67.v1.DeploymentService/ListDeployments": (READERS, False),
    "/automator67.v1.DeploymentService/UpdateDeployment": ({A, OP}, True),
    "/automator67.v1.DeploymentService/DeleteDeployment": ({A, OP}, True),
    "/automator67.v1.DeploymentService/GetDeploymentStats": (READERS, False),
    "/automator67.v1.DeploymentService/WatchDeployments": (READERS, False),
    "/grpc.health.v1.Health/Check": (OPEN, False),
    "/grpc.health.v1.Health/Watch": (OPEN, False),
    "/grpc.health.v1.Health/List": (OPEN, False),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": (READERS, False),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": (READERS, False),
    "/automator67.v1.SomethingNew/Anything": ({A}, True),  # unknown: admin only
}


def all_served_methods() -> set[str]:
    methods = set()
    for module in (node_service_pb2, deployment_service_pb2, health_pb2, reflection_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return methods


def test_the_table_covers_every_rpc_the_server_serves() -> None:
    missing = all_served_methods() - set(TABLE)
    assert not missing, f"decide who may call {sorted(missing)} and add it to TABLE"


@pytest.mark.parametrize("method", list(TABLE))
def test_each_rpc_allows_exactly_its_roles(method: str) -> None:
    roles, mutating = TABLE[method]
    rule = rule_for(method)

    assert rule.mutating is mutating
    for role in Role:
        expected = roles is None or role in roles
        assert allowed(Principal("someone", role), rule) is expected, (method, role)


def test_a_node_principal_names_its_node_and_others_none() -> None:
    assert Principal("n-1", Role.NODE).node_id == "n-1"
    assert Principal("alice", Role.ADMIN).node_id is None
