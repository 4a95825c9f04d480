"""Authentication end to end: secure by default, node-scoped tokens from RegisterNode, the
`token create` command, the audit log, turning auth off, and the per-principal limits."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from automator67 import NotFoundError, PermissionDeniedError, ResourceExhaustedError
from automator67.agent import AgentClient
from automator67.v1 import heartbeat_pb2, node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as ns

from controller.auth.principals import Role
from controller.auth.tokens import unverified_claims

from .auth_helpers import Forge, bearer
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, LogLine, controller_env
from .rpc_errors import rpc_error
from .sdk_helpers import api_error
from .seed import seed_node

WAIT_S = 10.0


def automator67(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=ROOT,
        env=controller_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def audit_lines(process: ControllerProcess) -> list[LogLine]:
    return [line for line in process.log_lines if line.get("logger") == "controller.audit"]


def test_the_first_start_makes_a_private_key_and_says_how_to_get_an_admin_token(
    controller: ControllerProcess,
) -> None:
    key = controller.data_dir / "jwt-signing-key.pem"
    credential_keys = controller.data_dir / "credential-keys.json"
    line = controller.log.wait_for(lambda line: line.get("msg") == "authentication is on", WAIT_S)

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(credential_keys.stat().st_mode) == 0o600
    assert line["create_admin_token"] == (
        f"automator67 token create --role admin --data-dir {controller.data_dir}"
    )
    generated = [x["msg"] for x in controller.log_lines if str(x.get("msg")).startswith("gen")]
    assert generated == ["generated a credential encryption key", "generated a token signing key"]


async def test_register_returns_a_token_that_streams_for_its_own_node_and_nothing_else(
    controller: ControllerProcess,
) -> None:
    async with (
        AgentClient(controller.address, metadata=controller.metadata) as admin,
        open_channel(controller.address) as channel,
    ):
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        request = ns.RegisterNodeRequest(node=seed_node(), request_id="node-token-1")
        registered = await stub.RegisterNode(request)
        retried = await stub.RegisterNode(request)
        other = (await admin.register_node(seed_node())).node
        node_id, token = registered.node.id, registered.agent_token

        assert retried.node.id == node_id and retried.agent_token
        assert unverified_claims(token)["sub"] == node_id
        assert unverified_claims(token)["role"] == "node"
        fetched = await admin.get_node(node_id)
        listed = [page async for page in admin.list_nodes().pages()]
        assert token.encode() not in fetched.SerializeToString()
        assert all(token.encode() not in page.SerializeToString() for page in listed)

    async with AgentClient(controller.address, metadata=bearer(token)) as agent:
        async with agent.heartbeat(node_id, agent_version="e2e") as session:
            assert session.node_status == node_pb2.NODE_STATUS_READY
            await session.beat(heartbeat_pb2.NodeLoad(cpu_percent=1.0))

        with pytest.raises(PermissionDeniedError) as impersonating:
            async with agent.heartbeat(other.id):
                pass
        assert impersonating.value.message == "a node token may only stream for its own node"
        assert impersonating.value.reason == "NODE_TOKEN_MISMATCH"
        calls = (agent.get_node(node_id), agent.list_nodes().all(), agent.get_deployment_stats())
        for call in calls:
            assert isinstance(await api_error(call), PermissionDeniedError)
        watch = agent.watch_nodes()
        assert isinstance(await api_error(watch.read()), PermissionDeniedError)

        async with AgentClient(controller.address, metadata=controller.metadata) as admin:
            await admin.delete_node(node_id)
        with pytest.raises(NotFoundError) as gone:
            async with agent.heartbeat(node_id):
                pass
        assert gone.value.reason == "NODE_NOT_FOUND"


async def test_every_mutating_call_is_audited_with_who_what_result_and_request_id(
    controller: ControllerProcess,
) -> None:
    forge = Forge.of(controller)
    viewer = bearer(forge.valid(Role.VIEWER, "vera"))
    missing_id = str(uuid.uuid4())
    async with open_channel(controller.address, token="") as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        registered = await stub.RegisterNode(
            ns.RegisterNodeRequest(node=seed_node()),
            metadata=(*controller.metadata, ("x-request-id", "audit-1")),
        )
        await rpc_error(
            stub.DeleteNode(
                ns.DeleteNodeRequest(node_id=missing_id),
                metadata=(*viewer, ("x-request-id", "audit-2")),
            )
        )
        await rpc_error(
            stub.DeleteNode(
                ns.DeleteNodeRequest(node_id=missing_id), metadata=(("x-request-id", "audit-3"),)
            )
        )
        await stub.GetNodeStats(
            ns.GetNodeStatsRequest(), metadata=(*controller.metadata, ("x-request-id", "audit-4"))
        )

    def line(request_id: str) -> LogLine:
        def audited(x: LogLine) -> bool:
            return x.get("logger") == "controller.audit" and x.get("request_id") == request_id

        return controller.log.wait_for(audited, WAIT_S)

    fields = ("subject", "role", "rpc", "resource_id", "result")
    register = "/automator67.v1.NodeService/RegisterNode"
    delete = "/automator67.v1.NodeService/DeleteNode"
    assert [line("audit-1")[f] for f in fields] == [
        "e2e-admin",
        "admin",
        register,
        registered.node.id,
        "OK",
    ]
    # A refused call's request is never read (nothing is parsed before authorization), so its
    # line names no resource.
    assert [line("audit-2")[f] for f in fields] == [
        "vera",
        "viewer",
        delete,
        "",
        "PERMISSION_DENIED",
    ]
    assert [line("audit-3")[f] for f in fields] == ["", "", delete, "", "UNAUTHENTICATED"]
    assert not [x for x in audit_lines(controller) if x.get("request_id") == "audit-4"]
    assert registered.agent_token not in str(audit_lines(controller))


async def test_token_create_issues_tokens_the_controller_accepts(
    controller: ControllerProcess,
) -> None:
    made = automator67(
        "token", "create", "--role", "viewer", "--subject", "ci", "--ttl", "10m",
        "--data-dir", str(controller.data_dir),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert "\n" not in token and "viewer token for 'ci'" in made.stderr

    async with AgentClient(controller.address, metadata=bearer(token)) as viewer:
        assert await viewer.list_nodes().all() is not None
        refused = await api_error(viewer.register_node(seed_node()))
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "node"], "--node is required"),
        (["--role", "admin", "--node", str(uuid.uuid4())], "only with it"),
        (["--role", "node", "--node", "not-a-uuid"], "must be a UUID"),
        (["--role", "admin", "--ttl", "forever"], "--ttl"),
    ],
)
def test_token_create_refuses_nonsense(tmp_path: Path, args: list[str], message: str) -> None:
    result = automator67("token", "create", *args, "--data-dir", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_token_create_without_a_key_says_how_to_get_one(tmp_path: Path) -> None:
    result = automator67("token", "create", "--role", "admin", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "start the controller once" in result.stderr
    assert not (tmp_path / "d").exists()


async def test_with_auth_off_calls_need_no_token_and_registration_returns_none(
    start_controller: StartController, data_dir: Path
) -> None:
    process = ControllerProcess(data_dir, auth=False).start()
    try:
        async with open_channel(process.address) as channel:
            stub = node_service_pb2_grpc.NodeServiceStub(channel)
            response = await stub.RegisterNode(ns.RegisterNodeRequest(node=seed_node()))
            assert response.agent_token == ""
            assert (await stub.GetNodeStats(ns.GetNodeStatsRequest())).total == 1
        warning = process.log.wait_for(lambda line: line.get("auth") == "off", WAIT_S)
        assert warning["level"] == "warning"
        assert not (data_dir / "jwt-signing-key.pem").exists()
    finally:
        process.stop()


def test_auth_off_beyond_loopback_is_refused_unless_explicitly_accepted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = automator67(
        "serve", "--auth", "off", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data_dir)
    )
    assert result.returncode == 2
    assert "A67_AUTH=off is refused" in result.stderr
    assert "A67_AUTH_OFF_ALLOW_REMOTE" in result.stderr
    assert not data_dir.exists()


async def test_streams_per_principal_are_bounded(start_controller: StartController) -> None:
    process = start_controller(extra_args=["--max-streams-per-principal", "2"])
    forge = Forge.of(process)
    first, second = (bearer(forge.valid(Role.VIEWER, name)) for name in ("v1", "v2"))
    async with AgentClient(process.address, metadata=first) as v1:
        watches = [v1.watch_nodes(), v1.watch_nodes()]
        for watch in watches:
            assert isinstance(await watch.read(), ns.WatchNodesResponse)
        refused = await api_error(v1.watch_nodes().read())
        assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 2 open streams per token subject" in refused.message
        async with AgentClient(process.address, metadata=second) as v2:
            assert isinstance(await v2.watch_nodes().read(), ns.WatchNodesResponse)

        watches[0].cancel()
        async with asyncio.timeout(WAIT_S):  # the server sees the cancel a moment later
            while True:
                again = v1.watch_nodes()
                try:
                    await again.read()
                    break
                except ResourceExhaustedError:
                    await asyncio.sleep(0.05)
        again.cancel()
        watches[1].cancel()


async def test_oversized_input_is_refused_with_a_clear_code(
    start_controller: StartController,
) -> None:
    process = start_controller(extra_args=["--max-message-bytes", "65536"])
    async with AgentClient(process.address, metadata=process.metadata) as client:
        too_big = await api_error(client.register_node(seed_node(endpoint="x" * 100_000)))
        assert too_big.code is grpc.StatusCode.RESOURCE_EXHAUSTED

        labels = {f"k{i}": "v" for i in range(65)}
        too_many = await api_error(client.register_node(seed_node(labels=labels)))
        assert too_many.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in too_many.field_violations] == ["node.labels"]

        negative = await api_error(client.list_nodes(page_size=-1).all())
        assert [v.field for v in negative.field_violations] == ["page_size"]
