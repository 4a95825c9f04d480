"""The original REST paths over HTTP/JSON (`--http-port`), against a real controller process:
the seed's curl examples run with the real `curl` binary (a bearer token added), every other
path and error with a real HTTP client (aiohttp), and gRPC served beside it all along."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from automator67.v1 import node_service_pb2 as pb
from automator67.v1 import node_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from .conftest import open_channel
from .controller_process import ControllerProcess
from .seed import SEED_NODE_JSON, SEED_TOKEN

WAIT_S = 20.0
# The seed README's POST body, as its curl example writes it (indentation and all).
SEED_CURL_BODY = """{
    "provider": "render",
    "endpoint": "https://api.render.com",
    "region": "us-east-1",
    "credentials": {
      "oauthTokenEncrypted": "token123",
      "oauthProvider": "github",
      "oauthExpiresAt": 1700000000000
    },
    "capabilities": {
      "cpuCores": 4,
      "memoryGb": 8,
      "diskGb": 50,
      "networkBandwidth": "1Gbps"
    }
  }"""
MAX_MESSAGE_BYTES = 256 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    http_port, metrics_port = free_port(), free_port()
    process = ControllerProcess(
        tmp_path_factory.mktemp("http") / "data",
        extra_args=[
            *("--http-port", str(http_port), "--metrics-port", str(metrics_port)),
            *("--max-message-bytes", str(MAX_MESSAGE_BYTES)),
        ],
    )
    try:
        process.start()
        serving = process.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
        assert serving["http_port"] == http_port
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def base(server: ControllerProcess) -> str:
    serving = server.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
    return f"http://localhost:{serving['http_port']}"


@pytest.fixture
def auth(server: ControllerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, Any]:
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None, response.headers


def reason_of(body: Any) -> str:
    infos = [d for d in body["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    return str(infos[0]["reason"])


def fields_of(body: Any) -> list[str]:
    bad = [d for d in body["error"]["details"] if d["@type"].endswith("BadRequest")]
    return [v["field"] for v in bad[0]["fieldViolations"]] if bad else []


def curl(*args: str) -> tuple[int, Any]:
    """Runs the real curl; returns (HTTP status, JSON body)."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    done = subprocess.run(
        [binary, "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_the_seed_curl_examples_work_as_written_with_a_token(
    server: ControllerProcess, base: str
) -> None:
    token = f"Authorization: Bearer {server.admin_token}"
    # Health check (no token, as in the original)
    assert curl(f"{base}/health") == (200, {"status": "SERVING"})
    # Create node
    status, created = curl(
        "-X", "POST", f"{base}/api/v1/nodes",
        "-H", "Content-Type: application/json",
        "-H", token,
        "-d", SEED_CURL_BODY,
    )  # fmt: skip
    assert status == 200, created
    node = created["node"]
    assert (node["provider"], node["endpoint"], node["region"]) == (
        SEED_NODE_JSON["provider"],
        SEED_NODE_JSON["endpoint"],
        SEED_NODE_JSON["region"],
    )
    assert node["capabilities"] == {
        "cpuCores": 4.0,
        "memoryGb": 8.0,
        "diskGb": 50.0,
        "networkBandwidth": "1Gbps",
    }
    assert node["status"] == "NODE_STATUS_PENDING"
    assert node["hasCredentials"] is True and "credentials" not in node
    assert created["agentToken"].count(".") == 2  # a JWT for the node's agent
    assert SEED_TOKEN not in json.dumps(created)
    # Get nodes
    status, listed = curl(f"{base}/api/v1/nodes", "-H", token)
    assert status == 200
    assert node["id"] in [n["id"] for n in listed["nodes"]]
    assert "nextPageToken" in listed


async def test_every_node_path(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    status, created, _ = await call(
        http, "POST", f"{base}/api/v1/nodes", json={**SEED_NODE_JSON, "region": "eu-west-9"},
        headers=auth,
    )  # fmt: skip
    assert status == 200
    node_id = created["node"]["id"]
    status, got, _ = await call(http, "GET", f"{base}/api/v1/nodes/{node_id}", headers=auth)
    assert status == 200 and got["node"]["id"] == node_id
    status, listed, _ = await call(
        http, "GET", f"{base}/api/v1/nodes",
        params={"filter": 'region = "eu-west-9"', "pageSize": "1"}, headers=auth,
    )  # fmt: skip
    assert status == 200 and [n["id"] for n in listed["nodes"]] == [node_id]
    status, stats, _ = await call(http, "GET", f"{base}/api/v1/nodes/stats", headers=auth)
    assert status == 200 and stats["byRegion"]["eu-west-9"] == 1 and stats["total"] >= 1
    # PATCH: the body's fields are the update mask (UpdateNode).
    status, patched, _ = await call(
        http, "PATCH", f"{base}/api/v1/nodes/{node_id}", json={"labels": {"tier": "gpu"}},
        headers=auth,
    )  # fmt: skip
    assert status == 200, patched
    assert patched["node"]["labels"] == {"tier": "gpu"}
    status, deleted, _ = await call(http, "DELETE", f"{base}/api/v1/nodes/{node_id}", headers=auth)
    assert (status, deleted) == (200, {})
    status, missing, _ = await call(http, "GET", f"{base}/api/v1/nodes/{node_id}", headers=auth)
    assert status == 404
    assert missing["error"]["status"] == "NOT_FOUND" and missing["error"]["code"] == 404
    assert reason_of(missing) == "NODE_NOT_FOUND"
    status, again, _ = await call(http, "DELETE", f"{base}/api/v1/nodes/{node_id}", headers=auth)
    assert status == 404 and reason_of(again) == "NODE_NOT_FOUND"


async def test_every_deployment_path(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    name = f"web-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "image": "nginx:1.27", "resources": {"cpuCores": 0.5, "memoryGb": 0.25}}
    status, created, _ = await call(
        http, "POST", f"{base}/api/v1/deployments", json=body, headers=auth
    )
    assert status == 200, created
    deployment = created["deployment"]
    assert (deployment["name"], deployment["replicas"]) == (name, 1)
    url = f"{base}/api/v1/deployments/{deployment['id']}"
    status, got, _ = await call(http, "GET", url, headers=auth)
    assert status == 200 and got["deployment"]["name"] == name
    status, listed, _ = await call(
        http, "GET", f"{base}/api/v1/deployments", params={"filter": f"name = {name}"},
        headers=auth,
    )  # fmt: skip
    assert status == 200 and [d["name"] for d in listed["deployments"]] == [name]
    status, stats, _ = await call(http, "GET", f"{base}/api/v1/deployments/stats", headers=auth)
    assert status == 200 and stats["total"] >= 1 and "replicasRequested" in stats
    # PATCH with the fields to change in the body: the update mask is inferred from them.
    status, updated, _ = await call(http, "PATCH", url, json={"replicas": 2}, headers=auth)
    assert status == 200, updated
    assert updated["deployment"]["replicas"] == 2
    status, stale, _ = await call(http, "DELETE", url, params={"etag": "1"}, headers=auth)
    assert status == 409 and stale["error"]["status"] == "ABORTED"
    assert reason_of(stale) == "ETAG_MISMATCH"
    status, deleted, _ = await call(http, "DELETE", url, headers=auth)
    assert status == 200 and deleted["deployment"]["status"] == "DEPLOYMENT_STATUS_STOPPING"
    unknown = f"{base}/api/v1/deployments/{uuid.uuid4()}"
    status, missing, _ = await call(http, "GET", unknown, headers=auth)
    assert status == 404 and reason_of(missing) == "DEPLOYMENT_NOT_FOUND"


async def test_tokens_are_checked_as_over_grpc(
    http: aiohttp.ClientSession, base: str, server: ControllerProcess
) -> None:
    status, body, _ = await call(http, "GET", f"{base}/api/v1/nodes")
    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED" and reason_of(body) == "TOKEN_INVALID"
    status, body, _ = await call(
        http, "GET", f"{base}/api/v1/nodes", headers={"Authorization": "Bearer forged.jwt.x"}
    )
    assert status == 401
    viewer = {"Authorization": f"Bearer {server.token('viewer')}"}
    status, body, _ = await call(http, "GET", f"{base}/api/v1/nodes", headers=viewer)
    assert status == 200
    status, body, _ = await call(
        http, "POST", f"{base}/api/v1/nodes", json=SEED_NODE_JSON, headers=viewer
    )
    assert status == 403 and reason_of(body) == "ROLE_NOT_PERMITTED"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b'{"provider": "render",', "node", "MALFORMED_REQUEST"),
        (b"not json at all", "node", "MALFORMED_REQUEST"),
        (b'"a string"', "node", "INVALID_FIELD"),
        (b'{"provider": 5}', "node.provider", "INVALID_FIELD"),
        (b'{"capabilities": {"cpuCores": "four"}}', "node.capabilities.cpu_cores",
         "INVALID_FIELD"),
        (b'{"labels": ["a"]}', "node.labels", "INVALID_FIELD"),
        (b'{"provider": "render", "endpoint": "https://x.io"}', "node.capabilities",
         "INVALID_FIELD"),  # valid JSON, invalid node: the servicer's own check
    ],
)  # fmt: skip
async def test_bad_bodies_are_400_naming_the_field(
    http: aiohttp.ClientSession,
    base: str,
    auth: dict[str, str],
    body: bytes,
    field: str,
    reason: str,
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    status, answer, _ = await call(http, "POST", f"{base}/api/v1/nodes", data=body, headers=headers)
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT" and answer["error"]["code"] == 400
    assert reason_of(answer) == reason
    assert field in fields_of(answer)


async def test_wrong_query_types_are_400_naming_the_field(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    for params, field in [
        ({"pageSize": "ten"}, "page_size"),
        ({"page_size": "99999999999"}, "page_size"),
        ({"startRevision": "x"}, "start_revision"),
    ]:
        path = "/api/v1/nodes:watch" if "startRevision" in params else "/api/v1/nodes"
        status, answer, _ = await call(http, "GET", base + path, params=params, headers=auth)
        assert status == 400, answer
        assert fields_of(answer) == [field]


async def test_a_body_over_the_message_limit_is_413(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    huge = json.dumps({**SEED_NODE_JSON, "labels": {"pad": "x" * MAX_MESSAGE_BYTES}})
    status, answer, _ = await call(
        http, "POST", f"{base}/api/v1/nodes", data=huge.encode(), headers=auth
    )
    assert status == 413
    assert answer["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert reason_of(answer) == "LIMIT_EXCEEDED"
    # The server keeps serving the same connection pool afterwards.
    status, _, _ = await call(http, "GET", f"{base}/api/v1/nodes/stats", headers=auth)
    assert status == 200


async def test_unknown_paths_are_404_and_wrong_methods_405(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    for path in ("/api/v1/nothing", "/api/v2/nodes", "/", "/api/v1/nodes/a/b"):
        status, answer, _ = await call(http, "GET", base + path, headers=auth)
        assert status == 404, path
        assert answer["error"]["status"] == "NOT_FOUND" and reason_of(answer) == "PATH_NOT_FOUND"
    status, answer, headers = await call(http, "PUT", f"{base}/api/v1/nodes", headers=auth)
    assert status == 405
    assert sorted(headers["Allow"].split(", ")) == ["GET", "POST"]
    assert answer["error"]["code"] == 405
    status, answer, _ = await call(http, "POST", f"{base}/health")
    assert status == 405
    unknown = f"{base}/api/v1/nodes/{uuid.uuid4()}"
    status, answer, _ = await call(http, "GET", unknown, headers=auth)
    assert status == 404 and reason_of(answer) == "NODE_NOT_FOUND"


async def test_the_request_id_goes_through_and_comes_back(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], server: ControllerProcess
) -> None:
    request_id = f"http-{uuid.uuid4().hex}"
    status, created, headers = await call(
        http, "POST", f"{base}/api/v1/nodes", json=SEED_NODE_JSON,
        headers={**auth, "X-Request-Id": request_id},
    )  # fmt: skip
    assert status == 200 and headers["X-Request-Id"] == request_id
    audit = server.log.wait_for(
        lambda line: (
            line.get("logger") == "controller.audit" and line.get("request_id") == request_id
        ),
        WAIT_S,
    )
    assert audit["rpc"].endswith("RegisterNode") and audit["subject"] == "e2e-admin"
    assert audit["resource_id"] == created["node"]["id"]
    # Without one the server makes one, and errors carry it too.
    _, _, headers = await call(http, "GET", f"{base}/api/v1/nodes/stats", headers=auth)
    assert len(headers["X-Request-Id"]) == 32
    status, _, headers = await call(http, "GET", f"{base}/api/v1/nodes/{uuid.uuid4()}")
    assert status == 401 and headers["X-Request-Id"]


async def read_event(lines: aiohttp.StreamReader) -> dict[str, Any]:
    line = await lines.readline()
    assert line.endswith(b"\n"), line
    item: dict[str, Any] = json.loads(line)
    return item


async def test_watch_streams_ndjson_while_grpc_keeps_serving(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], server: ControllerProcess
) -> None:
    watches = "/automator67.v1.NodeService/WatchNodes"
    cancelled_before = rpc_count(server, watches, "CANCELLED")
    async with http.get(f"{base}/api/v1/nodes:watch", headers=auth) as watch:
        assert watch.status == 200
        assert watch.headers["Content-Type"].startswith("application/x-ndjson")
        assert watch.headers["X-Request-Id"]
        event = await read_event(watch.content)
        while event["result"]["type"] != "NODE_EVENT_TYPE_SYNCED":
            assert event["result"]["type"] == "NODE_EVENT_TYPE_ADDED"
            event = await read_event(watch.content)
        # gRPC is served beside the open HTTP stream; its change comes down the HTTP watch.
        async with open_channel(server.address) as channel:
            stub = node_service_pb2_grpc.NodeServiceStub(channel)
            registered = await stub.RegisterNode(
                pb.RegisterNodeRequest(node=seed_node_message()), timeout=WAIT_S
            )
            stats = await stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=WAIT_S)
            assert stats.total >= 1
        event = await read_event(watch.content)
        assert event["result"]["type"] == "NODE_EVENT_TYPE_ADDED"
        assert event["result"]["node"]["id"] == registered.node.id
        assert int(event["result"]["revision"]) > 0  # int64 as a string (proto3 JSON)
    # The client closed the stream after reading: the server ends the RPC (CANCELLED), and
    # serves on. The count moves once the server has seen the close, so it is polled.
    deadline = time.monotonic() + WAIT_S
    while rpc_count(server, watches, "CANCELLED") < cancelled_before + 1:
        assert time.monotonic() < deadline, "the watch RPC outlived its HTTP client"
        await asyncio.sleep(0.05)
    status, _, _ = await call(http, "GET", f"{base}/api/v1/nodes/stats", headers=auth)
    assert status == 200


async def test_a_watch_refused_before_it_starts_is_a_plain_error(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    status, answer, _ = await call(http, "GET", f"{base}/api/v1/deployments:watch")
    assert status == 401 and answer["error"]["status"] == "UNAUTHENTICATED"
    ahead = {"startRevision": str(10**15)}
    status, answer, _ = await call(
        http, "GET", f"{base}/api/v1/deployments:watch", params=ahead, headers=auth
    )
    assert status == 400 and reason_of(answer) == "REVISION_AHEAD"


async def test_health_needs_no_token(http: aiohttp.ClientSession, base: str) -> None:
    status, body, headers = await call(http, "GET", f"{base}/health")
    assert (status, body) == (200, {"status": "SERVING"})
    assert headers["Content-Type"].startswith("application/json")
    service = {"service": "automator67.v1.NodeService"}
    status, body, _ = await call(http, "GET", f"{base}/health", params=service)
    assert (status, body) == (200, {"status": "SERVING"})
    status, body, _ = await call(http, "GET", f"{base}/health", params={"service": "nope"})
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"


def seed_node_message() -> Any:
    from .seed import seed_node

    return seed_node()


def test_the_port_is_off_by_default(tmp_path: Path) -> None:
    process = ControllerProcess(tmp_path / "data")
    try:
        process.start()
        serving = process.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
        assert serving["http_port"] == 0
    finally:
        process.stop()


def rpc_count(server: ControllerProcess, method: str, code: str = "OK") -> float:
    serving = server.log.wait_for(lambda line: line.get("msg") == "serving", WAIT_S)
    url = f"http://127.0.0.1:{serving['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"method": method, "code": code}
            if sample.name == "automator67_rpcs_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


async def test_http_calls_are_counted_as_their_rpcs(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], server: ControllerProcess
) -> None:
    method = "/automator67.v1.DeploymentService/GetDeploymentStats"
    before = rpc_count(server, method)
    for _ in range(3):
        status, _, _ = await call(http, "GET", f"{base}/api/v1/deployments/stats", headers=auth)
        assert status == 200
    assert rpc_count(server, method) == before + 3  # counted before each answer was sent


async def test_grpc_timeout_is_the_calls_deadline(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str]
) -> None:
    stats = f"{base}/api/v1/nodes/stats"
    status, _, _ = await call(http, "GET", stats, headers={**auth, "Grpc-Timeout": "10S"})
    assert status == 200
    status, answer, _ = await call(http, "GET", stats, headers={**auth, "Grpc-Timeout": "soon"})
    assert status == 400 and fields_of(answer) == ["grpc-timeout"]
    # A watch runs until its deadline, then ends with DEADLINE_EXCEEDED (504) as its last line.
    headers = {**auth, "Grpc-Timeout": "1500m"}
    async with http.get(f"{base}/api/v1/deployments:watch", headers=headers) as watch:
        assert watch.status == 200
        lines = (await watch.read()).decode().splitlines()
    assert json.loads(lines[-1])["error"]["code"] == 504
    assert json.loads(lines[-1])["error"]["status"] == "DEADLINE_EXCEEDED"
