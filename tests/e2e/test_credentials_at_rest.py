"""Node credentials at rest, end to end: a known token is written through RegisterNode and then
searched for, in every encoding the store could have used, in the SQLite files (with -wal and
-shm), the server's log and every response: it is never found. Key rotation: a new key seals,
old keys still open, and `keys reencrypt` moves everything to the newest key."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from automator67.agent import AgentClient
from automator67.v1 import heartbeat_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as ns
from google.protobuf.message import Message
from grpc import aio

from .auth_helpers import bearer
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, controller_env
from .seed import seed_node

WAIT_S = 10.0


def encodings(secret: str) -> list[bytes]:
    """`secret` as bytes, hex, and base64 at each of the three alignments it could start at."""
    raw = secret.encode()
    found = [raw, raw.hex().encode(), secret.encode("utf-16-le")]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        found.append(encoded[4 if shift else 0 : -4])  # the part that depends on `raw` alone
        found.append(base64.urlsafe_b64encode(b"\0" * shift + raw)[4 if shift else 0 : -4])
    return found


def store_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("controller.db*"))}


def assert_nowhere(secret: str, places: dict[str, bytes]) -> None:
    for name, data in places.items():
        for form in encodings(secret):
            assert form not in data, f"{secret[:8]}... found in {name} as {form[:12]!r}..."


def stored_key_ids(data_dir: Path) -> dict[str, str]:
    """node id -> the id of the key its credentials are sealed with, read with plain SQL."""
    with sqlite3.connect(f"file:{data_dir / 'controller.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, data FROM nodes").fetchall()
    return {node_id: json.loads(data)["credentials"]["key_id"] for node_id, data in rows}


def keys(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "keys", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=controller_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def responses_bytes(messages: Iterable[Message]) -> bytes:
    return b"\n".join(m.SerializeToString() for m in messages)


async def test_a_known_token_appears_in_no_file_no_log_line_and_no_response(
    start_controller: StartController, data_dir: Path
) -> None:
    secret = f"gho_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    process = start_controller(log_level="debug")
    responses: list[Message] = []
    errors: list[str] = []
    async with open_channel(process.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        spec = seed_node()
        spec.credentials.oauth_token_encrypted = secret
        request = ns.RegisterNodeRequest(node=spec, request_id="at-rest-1")
        registered = await stub.RegisterNode(request)
        responses += [registered, await stub.RegisterNode(request)]  # the idempotent retry
        node_id = registered.node.id
        assert registered.node.has_credentials
        responses.append(await stub.GetNode(ns.GetNodeRequest(node_id=node_id)))
        responses.append(await stub.ListNodes(ns.ListNodesRequest()))
        responses.append(await stub.GetNodeStats(ns.GetNodeStatsRequest()))
        watch = stub.WatchNodes(ns.WatchNodesRequest())
        async with asyncio.timeout(WAIT_S):
            while True:
                event = await watch.read()
                assert isinstance(event, ns.WatchNodesResponse), event
                responses.append(event)
                if event.type == ns.NODE_EVENT_TYPE_SYNCED:
                    break
        watch.cancel()
        # Failures must not echo it either: a reused request id, and an invalid node.
        for bad in (
            ns.RegisterNodeRequest(node=seed_node(region="eu-west-1"), request_id="at-rest-1"),
            ns.RegisterNodeRequest(node=seed_node(provider="", endpoint=secret)),
        ):
            bad.node.credentials.oauth_token_encrypted = secret
            try:
                await stub.RegisterNode(bad)
            except aio.AioRpcError as error:
                errors.append(f"{error.details()} {error.trailing_metadata()}")
    agent = AgentClient(process.address, metadata=bearer(registered.agent_token))
    async with agent, agent.heartbeat(node_id) as session:
        await session.beat(heartbeat_pb2.NodeLoad(cpu_percent=3.0))
        answer = await asyncio.wait_for(session.receive(), WAIT_S)
        assert answer is not None
        responses.append(answer)

    assert len(errors) == 2
    running = store_files(data_dir)
    assert "controller.db-wal" in running
    assert process.terminate() == 0
    log = "\n".join(json.dumps(line) for line in process.log_lines).encode()
    assert b"RegisterNode" in log  # the log was captured, at debug level
    assert_nowhere(
        secret,
        {
            **{f"{name} (running)": data for name, data in running.items()},
            **{f"{name} (stopped)": data for name, data in store_files(data_dir).items()},
            "the server log": log,
            "the responses": responses_bytes(responses),
            "the errors": "\n".join(errors).encode(),
        },
    )
    # The agent token is shown once and never stored.
    assert_nowhere(registered.agent_token, store_files(data_dir))


async def test_key_rotation_new_key_seals_old_keys_open_reencrypt_moves_all_to_the_newest(
    start_controller: StartController, data_dir: Path
) -> None:
    first_secret, second_secret = f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"
    process = start_controller()
    first = await register_with(process, first_secret)
    assert process.terminate() == 0
    key_file = data_dir / "credential-keys.json"
    old_key = json.loads(key_file.read_text())["keys"][0]["id"]

    rotated = keys("rotate", data_dir=data_dir)
    assert rotated.returncode == 0, rotated.stderr
    new_key = json.loads(key_file.read_text())["keys"][-1]["id"]
    assert new_key != old_key and new_key in rotated.stderr

    process.start()  # loading the first node opens it with the old key
    second = await register_with(process, second_secret)
    assert stored_key_ids(data_dir) == {first: old_key, second: new_key}

    reencrypted = keys("reencrypt", data_dir=data_dir)  # while the controller runs
    assert reencrypted.returncode == 0, reencrypted.stderr
    assert f"resealed 1 credentials with key {new_key} (1 already used it)" in reencrypted.stderr
    assert stored_key_ids(data_dir) == {first: new_key, second: new_key}
    assert process.terminate() == 0

    # Nothing needs the old key any more: drop it, and everything still opens.
    document = json.loads(key_file.read_text())
    document["keys"] = [k for k in document["keys"] if k["id"] == new_key]
    key_file.write_text(json.dumps(document))
    process.start()
    async with AgentClient(process.address, metadata=process.metadata) as client:
        nodes = {n.id: n async for n in client.list_nodes()}
    assert set(nodes) == {first, second}
    assert all(n.has_credentials for n in nodes.values())
    assert process.terminate() == 0
    for secret in (first_secret, second_secret):
        assert_nowhere(secret, store_files(data_dir))


async def register_with(process: ControllerProcess, secret: str) -> str:
    spec = seed_node()
    spec.credentials.oauth_token_encrypted = secret
    async with AgentClient(process.address, metadata=process.metadata) as client:
        return (await client.register_node(spec)).node.id


async def test_a_store_whose_key_is_missing_does_not_start(
    start_controller: StartController, data_dir: Path
) -> None:
    process = start_controller()
    await register_with(process, "some-token")
    assert process.terminate() == 0
    key_file = data_dir / "credential-keys.json"
    assert keys("rotate", data_dir=data_dir).returncode == 0
    rotated = json.loads(key_file.read_text())
    rotated["keys"] = rotated["keys"][1:]  # the key the node was sealed with is lost
    key_file.write_text(json.dumps(rotated))

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controller", "serve", "--port", "0", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=controller_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "no credential key" in result.stderr
