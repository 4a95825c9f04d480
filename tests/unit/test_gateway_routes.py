"""The HTTP gateway's routes come from the protos' `google.api.http` annotations: every operator
RPC has one, templates parse and match as google/api/http.proto says, and requests transcode
into messages with the field named on bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from automator67.v1 import deployment_service_pb2, node_service_pb2
from google.rpc import error_details_pb2

from controller.gateway import transcode
from controller.gateway.errors import GatewayError
from controller.gateway.routes import (
    NoRoute,
    Route,
    Router,
    TemplateError,
    WrongMethod,
    parse_template,
    rule_of,
)
from controller.gateway.services import controller_routes

OPERATOR_SERVICES = [
    node_service_pb2.DESCRIPTOR.services_by_name["NodeService"],
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
]


@pytest.mark.parametrize(
    "method",
    [m for s in OPERATOR_SERVICES for m in s.methods],
    ids=lambda m: m.full_name,
)
def test_every_operator_rpc_has_an_http_annotation(method: Any) -> None:
    rule = rule_of(method)
    assert rule is not None, f"{method.full_name} needs option (google.api.http)"
    assert rule.WhichOneof("pattern") is not None


def test_every_annotated_rpc_is_routed_once() -> None:
    routed = {route.rpc for route in controller_routes()}
    expected = {f"/{s.full_name}/{m.name}" for s in OPERATOR_SERVICES for m in s.methods}
    assert expected | {"/grpc.health.v1.Health/Check"} == routed


ORIGINAL_PATHS = [  # the seed's API, method and path, and the RPC that serves it
    ("GET", "/health", "/grpc.health.v1.Health/Check"),
    ("GET", "/api/v1/nodes", "/automator67.v1.NodeService/ListNodes"),
    ("POST", "/api/v1/nodes", "/automator67.v1.NodeService/RegisterNode"),
    ("GET", "/api/v1/nodes/abc", "/automator67.v1.NodeService/GetNode"),
    ("DELETE", "/api/v1/nodes/abc", "/automator67.v1.NodeService/DeleteNode"),
    ("GET", "/api/v1/nodes/stats", "/automator67.v1.NodeService/GetNodeStats"),
    ("GET", "/api/v1/deployments", "/automator67.v1.DeploymentService/ListDeployments"),
    ("POST", "/api/v1/deployments", "/automator67.v1.DeploymentService/CreateDeployment"),
    ("GET", "/api/v1/deployments/abc", "/automator67.v1.DeploymentService/GetDeployment"),
    ("DELETE", "/api/v1/deployments/abc", "/automator67.v1.DeploymentService/DeleteDeployment"),
    ("GET", "/api/v1/deployments/stats", "/automator67.v1.DeploymentService/GetDeploymentStats"),
    ("GET", "/api/v1/nodes:watch", "/automator67.v1.NodeService/WatchNodes"),
]


@pytest.mark.parametrize(("verb", "path", "rpc"), ORIGINAL_PATHS)
def test_the_original_paths_reach_their_rpc(verb: str, path: str, rpc: str) -> None:
    route, _ = Router(controller_routes()).match(verb, path)
    assert route.rpc == rpc


def test_unknown_paths_and_wrong_methods_are_told_apart() -> None:
    router = Router(controller_routes())
    with pytest.raises(NoRoute):
        router.match("GET", "/api/v1/nothing")
    with pytest.raises(NoRoute):
        router.match("GET", "/api/v1/nodes/a/b")
    with pytest.raises(WrongMethod) as wrong:
        router.match("PUT", "/api/v1/nodes")
    assert sorted(wrong.value.allowed) == ["GET", "POST"]


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/{name}", "/v1/a%2Fb", {("name",): "a/b"}),
        ("/v1/{name=things/*}", "/v1/things/x", {("name",): "things/x"}),
        ("/v1/{name=things/*}", "/v1/other/x", None),
        ("/v1/{a.b}/x:run", "/v1/7/x:run", {("a", "b"): "7"}),
        ("/v1/{a.b}/x:run", "/v1/7/x", None),
        ("/v1/{path=**}", "/v1/a/b/c", {("path",): "a/b/c"}),
        ("/v1/*/y", "/v1/q/y", {}),
        ("/v1/*/y", "/v1//y", None),
    ],
)
def test_templates_match_as_http_proto_says(
    template: str, path: str, expected: dict[tuple[str, ...], str] | None
) -> None:
    assert parse_template(template).match(path) == expected


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{x", "/v1/**/y", "/v1//y"])
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def route_of(rpc_suffix: str) -> Route:
    return next(r for r in controller_routes() if r.rpc.endswith(rpc_suffix))


def violations(error: GatewayError) -> list[tuple[str, str]]:
    for detail in error.status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [(v.field, v.description) for v in bad.field_violations]
    return []


def test_body_path_and_query_fill_the_request() -> None:
    body = json.dumps({"provider": "fly", "capabilities": {"cpuCores": 2}}).encode()
    message: Any = transcode.request_of(route_of("/RegisterNode"), {}, [("requestId", "r-1")], body)
    assert message.node.provider == "fly"
    assert message.node.capabilities.cpu_cores == 2
    assert message.request_id == "r-1"
    listed: Any = transcode.request_of(
        route_of("/ListNodes"), {}, [("filter", "status = READY"), ("page_size", "7")], b""
    )
    assert (listed.filter, listed.page_size) == ("status = READY", 7)


def test_a_path_variable_wins_over_the_body_and_patch_infers_the_mask() -> None:
    route = route_of("/UpdateDeployment")
    body = json.dumps({"id": "ignored", "replicas": 3, "etag": "5", "image": "x"}).encode()
    message: Any = transcode.request_of(route, {("deployment", "id"): "d-1"}, [], body)
    assert message.deployment.id == "d-1"
    assert list(message.update_mask.paths) == ["replicas", "image"]
    given: Any = transcode.request_of(
        route, {("deployment", "id"): "d"}, [("updateMask", "image")], body
    )
    assert list(given.update_mask.paths) == ["image"]


@pytest.mark.parametrize(
    ("suffix", "query", "body", "field", "reason"),
    [
        ("/RegisterNode", [], b'{"provider": ', "node", "MALFORMED_REQUEST"),
        ("/RegisterNode", [], b"\xff\xfe", "node", "MALFORMED_REQUEST"),
        ("/RegisterNode", [], b'{"capabilities": {"cpuCores": "x"}}', "node.capabilities.cpu_cores",
         "INVALID_FIELD"),
        ("/RegisterNode", [], b'{"labels": {"a": 1}}', "node.labels", "INVALID_FIELD"),
        ("/RegisterNode", [], b"[1, 2]", "node", "INVALID_FIELD"),
        ("/ListNodes", [("pageSize", "many")], b"", "page_size", "INVALID_FIELD"),
        ("/ListNodes", [("pageSize", "1"), ("pageSize", "2")], b"", "page_size", "INVALID_FIELD"),
    ],
)  # fmt: skip
def test_bad_input_names_its_field(
    suffix: str, query: list[tuple[str, str]], body: bytes, field: str, reason: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode.request_of(route_of(suffix), {}, query, body)
    error = caught.value
    assert error.http_status == 400
    assert [f for f, _ in violations(error)] == [field]
    assert error.body()["error"]["details"][0]["reason"] == reason  # type: ignore[index]


def test_responses_print_every_field_in_camel_case() -> None:
    response = node_service_pb2.ListNodesResponse()
    printed = transcode.response_of(route_of("/ListNodes"), response)
    assert printed == {"nodes": [], "nextPageToken": ""}
