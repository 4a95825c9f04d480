"""The authorization matrix against a real controller: every RPC x every role x every kind of
token. Each cell's expected outcome is in the tables below; any unauthorized success fails.

    no token, expired, wrong signature, alg none, wrong audience  -> UNAUTHENTICATED
    valid, role not allowed                                       -> PERMISSION_DENIED
    valid, role allowed                                           -> passes auth: the call ends
                                                                     with its own result (OK, or
                                                                     INVALID_ARGUMENT for the
                                                                     empty request sent)
Health checks are open: every cell passes. Requests are empty, so no call changes anything."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc
from grpc import aio

from controller.auth.principals import Role

from .auth_helpers import TOKEN_KINDS, Forge, bearer, call_status, served_methods
from .controller_process import ControllerProcess

ADMIN, OPERATOR, VIEWER, NODE = Role.ADMIN, Role.OPERATOR, Role.VIEWER, Role.NODE
BOOTSTRAP = Role.AGENT_BOOTSTRAP
EVERYONE = set(Role)
READERS = {ADMIN, OPERATOR, VIEWER}

# RPC -> the roles whose valid token may call it. Written out, not derived from the code.
ALLOWED: dict[str, set[Role]] = {
    "/automator67.v1.NodeService/RegisterNode": {ADMIN, BOOTSTRAP},
    "/automator67.v1.NodeService/GetNode": READERS,
    "/automator67.v1.NodeService/ListNodes": READERS,
    "/automator67.v1.NodeService/DeleteNode": {ADMIN},
    "/automator67.v1.NodeService/UpdateNode": {ADMIN},
    "/automator67.v1.NodeService/GetNodeStats": READERS,
    "/automator67.v1.AgentService/Heartbeat": {ADMIN, NODE},
    "/automator67.v1.NodeService/WatchNodes": READERS,
    "/automator67.v1.DeploymentService/CreateDeployment": {ADMIN, OPERATOR},
    "/automator67.v1.DeploymentService/GetDeployment": READERS,
    "/automator67.v1.DeploymentService/ListDeployments": READERS,
    "/automator67.v1.DeploymentService/UpdateDeployment": {ADMIN, OPERATOR},
    "/automator67.v1.DeploymentService/DeleteDeployment": {ADMIN, OPERATOR},
    "/automator67.v1.DeploymentService/GetDeploymentStats": READERS,
    "/automator67.v1.DeploymentService/WatchDeployments": READERS,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": READERS,
    "/grpc.health.v1.Health/Check": EVERYONE,
    "/grpc.health.v1.Health/Watch": EVERYONE,
    "/grpc.health.v1.Health/List": EVERYONE,
}
OPEN = {
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
}
PASSES = "passes auth"
LIST_NODES = "/automator67.v1.NodeService/ListNodes"
AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def expected(rpc: str, role: Role, kind: str) -> str:
    """The table of cells: PASSES or the status code's name."""
    if rpc in OPEN:
        return PASSES
    if kind != "valid":
        return "UNAUTHENTICATED"
    return PASSES if role in ALLOWED[rpc] else "PERMISSION_DENIED"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    process = ControllerProcess(tmp_path_factory.mktemp("matrix") / "data")
    try:
        yield process.start()
    finally:
        process.stop()


def test_the_matrix_covers_every_rpc_the_controller_serves() -> None:
    served = set(served_methods())
    assert served == set(ALLOWED), "decide who may call each new RPC and add it to ALLOWED"


@pytest.mark.parametrize("rpc", sorted(ALLOWED))
async def test_every_role_and_token_kind_gets_exactly_its_cell(
    controller: ControllerProcess, rpc: str
) -> None:
    forge = Forge.of(controller)
    node_id = str(uuid.uuid4())  # a node token's subject; the hello names the same node
    wrong: list[str] = []
    async with aio.insecure_channel(controller.address) as channel:
        for role in Role:
            subject = node_id if role is NODE else f"matrix-{role.value}"
            for kind, make in TOKEN_KINDS.items():
                token = make(forge, role, subject)
                metadata = bearer(token) if token is not None else ()
                code = await call_status(channel, rpc, metadata, node_id)
                want = expected(rpc, role, kind)
                got = PASSES if code not in AUTH_CODES else code.name
                if got != want:
                    wrong.append(f"{role.value:8} {kind:15} want {want}, got {code.name}")
    assert not wrong, f"{rpc}:\n" + "\n".join(wrong)


async def test_a_malformed_authorization_header_is_unauthenticated(
    controller: ControllerProcess,
) -> None:
    valid = Forge.of(controller).valid(ADMIN, "someone")
    headers: dict[str, tuple[tuple[str, str], ...]] = {
        "no scheme": (("authorization", valid),),
        "basic scheme": (("authorization", f"Basic {valid}"),),
        "empty bearer": (("authorization", "Bearer "),),
        "garbage": (("authorization", "Bearer not.a.jwt"),),
        "two headers": bearer(valid) + bearer(valid),
    }
    async with aio.insecure_channel(controller.address) as channel:
        for name, metadata in headers.items():
            code = await call_status(channel, LIST_NODES, metadata, "")
            assert code is grpc.StatusCode.UNAUTHENTICATED, name
        code = await call_status(channel, LIST_NODES, bearer(valid), "")
        assert code is grpc.StatusCode.OK


async def test_refusals_say_no_more_than_needed(controller: ControllerProcess) -> None:
    forge = Forge.of(controller)
    async with aio.insecure_channel(controller.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        details = set()
        for token in (forge.expired(ADMIN, "a"), forge.wrong_signature(ADMIN, "a"), None):
            metadata = bearer(token) if token else ()
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.ListNodes(ns.ListNodesRequest(), metadata=metadata)
            details.add(refused.value.details())
        assert details == {"a valid bearer token is required"}
        with pytest.raises(aio.AioRpcError) as denied:
            await stub.DeleteNode(
                ns.DeleteNodeRequest(node_id=str(uuid.uuid4())),
                metadata=bearer(forge.valid(VIEWER, "v")),
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert denied.value.details() == "the viewer role may not call DeleteNode"
