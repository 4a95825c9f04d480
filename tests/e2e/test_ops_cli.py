"""The operator CLI (`automator67 nodes ...`, `stats`, `status`) run as the installed console
script against a real controller: tables, proto3 JSON that parses back, id prefixes (unique,
ambiguous, unknown), deletes, a watch that prints one JSON line per event until Ctrl-C, the
status screen, errors as one line with their exit code, and what the command imports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from automator67 import Client, NotFoundError
from automator67.v1 import agent_service_pb2_grpc, node_pb2
from automator67.v1 import node_service_pb2 as ns
from google.protobuf import json_format

from .cli_helpers import Follow, assert_one_line_error, run
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, controller_env
from .heartbeat_helpers import STEADY, Agent
from .seed import seed_node, web_deployment
from .test_tls import Pki, tls_args

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    # A node is READY while its agent beats (SUSPECT 3 s after its last beat).
    return start_controller(extra_args=STEADY.args)


@pytest.fixture
def client(controller: ControllerProcess) -> Iterator[Client]:
    with Client(controller.address, token=controller.admin_token) as client:
        yield client


def register(client: Client, region: str = "us-east-1") -> node_pb2.Node:
    return client.register_node(seed_node(region=region)).node


def test_nodes_list_shows_a_table_and_json_that_parses_back(
    controller: ControllerProcess, client: Client
) -> None:
    eu = register(client, "eu-west-1")
    us = register(client, "us-east-1")

    table = run(controller, "nodes", "list")
    assert table.code == 0, table
    header, *rows = table.out.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "PROVIDER", "REGION"]
    assert sorted(r.split()[0] for r in rows) == sorted([eu.id[:8], us.id[:8]])
    assert all(r.split()[1] == "PENDING" for r in rows)
    assert all("never" in r for r in rows)  # no heartbeat yet

    listed = run(controller, "nodes", "list", "-o", "json")
    assert listed.code == 0, listed
    parsed = json_format.Parse(listed.out, ns.ListNodesResponse())
    assert {n.id: n for n in parsed.nodes} == {eu.id: eu, us.id: us}

    filtered = run(controller, "nodes", "list", "--filter", 'region = "eu-west-1"', "-o", "wide")
    assert filtered.code == 0, filtered
    assert eu.id in filtered.out and us.id not in filtered.out  # wide: whole ids

    none = run(controller, "nodes", "list", "--filter", "status = OFFLINE")
    assert (none.code, none.out, none.err) == (0, "", "No nodes match 'status = OFFLINE'.\n")


def test_a_node_is_named_by_any_unique_prefix_of_its_id(
    controller: ControllerProcess, client: Client
) -> None:
    # Register until two ids share their first character (17 ids make it certain).
    by_first: dict[str, list[node_pb2.Node]] = {}
    while not any(len(group) > 1 for group in by_first.values()):
        node = register(client)
        by_first.setdefault(node.id[0], []).append(node)
    shared = next(c for c, group in by_first.items() if len(group) > 1)
    node = by_first[shared][0]

    shown = run(controller, "nodes", "get", node.id[:8])
    assert shown.code == 0, shown
    assert "ID:" in shown.out and node.id in shown.out

    as_json = run(controller, "nodes", "get", node.id, "-o", "json")
    assert as_json.code == 0, as_json
    assert json_format.Parse(as_json.out, node_pb2.Node()) == client.get_node(node.id)

    ambiguous = run(controller, "nodes", "get", shared)
    line = assert_one_line_error(ambiguous, 2, f"'{shared}' matches", "give more characters")
    assert by_first[shared][1].id in line

    assert_one_line_error(run(controller, "nodes", "get", "zz"), 3, "no node matches 'zz'")
    assert_one_line_error(run(controller, "nodes", "get", MISSING), 3, "NOT_FOUND (NODE_NOT_FOUND)")


def test_nodes_delete_removes_each_node_named_and_nothing_on_a_typo(
    controller: ControllerProcess, client: Client
) -> None:
    first, second = register(client), register(client)

    typo = run(controller, "nodes", "delete", first.id[:8], "zz")
    assert_one_line_error(typo, 3, "no node matches 'zz'")
    assert client.get_node(first.id).id == first.id  # resolved first: nothing deleted

    deleted = run(controller, "nodes", "delete", first.id[:8], second.id)
    assert deleted.code == 0, deleted
    assert deleted.out.splitlines() == [f"node/{first.id} deleted", f"node/{second.id} deleted"]
    for node in (first, second):
        with pytest.raises(NotFoundError):
            client.get_node(node.id)


def test_no_token_and_no_server_are_one_line_errors_with_their_exit_codes(
    controller: ControllerProcess,
) -> None:
    unauthenticated = run(controller, "nodes", "list", token="")
    assert_one_line_error(unauthenticated, 6, "UNAUTHENTICATED")

    wrong = run(controller, "nodes", "list", token="not-a-token")
    assert_one_line_error(wrong, 6, "UNAUTHENTICATED")

    unused = controller.address.rsplit(":", 1)[0] + ":1"
    nowhere = run(controller, "stats", "--addr", unused)
    assert_one_line_error(nowhere, 5, "UNAVAILABLE")

    bad_flag = run(controller, "nodes", "list", "--output", "yaml")
    assert bad_flag.code == 2 and "invalid choice" in bad_flag.err, bad_flag


async def test_nodes_watch_json_prints_one_event_per_line_until_interrupted(
    controller: ControllerProcess, client: Client
) -> None:
    node = register(client)
    watch = Follow(controller, "nodes", "watch", "-o", "json")
    try:

        async def event() -> ns.WatchNodesResponse:
            line = await asyncio.to_thread(watch.line)
            return json_format.Parse(line, ns.WatchNodesResponse())

        added, synced = await event(), await event()
        assert (added.type, added.node.id) == (ns.NODE_EVENT_TYPE_ADDED, node.id)
        assert synced.type == ns.NODE_EVENT_TYPE_SYNCED

        async with open_channel(controller.address) as channel:
            agent = await Agent.connect(agent_service_pb2_grpc.AgentServiceStub(channel), node.id)
            try:
                ready = await event()
                assert ready.type == ns.NODE_EVENT_TYPE_STATUS_CHANGED
                assert (ready.node.id, ready.node.status) == (node.id, node_pb2.NODE_STATUS_READY)
                assert ready.previous_status == node_pb2.NODE_STATUS_PENDING
                assert ready.revision > synced.revision
            finally:
                await agent.discard()

        ended = await asyncio.to_thread(watch.interrupt)
        assert ended.code == 130, ended
        assert "Traceback" not in ended.err
    finally:
        watch.stop()


async def test_the_status_screen_and_stats(controller: ControllerProcess, client: Client) -> None:
    ready_node, waiting = register(client, "eu-west-1"), register(client, "us-east-1")
    client.create_deployment(web_deployment("web"))
    async with open_channel(controller.address) as channel:
        agent = await Agent.connect(agent_service_pb2_grpc.AgentServiceStub(channel), ready_node.id)
        # Beats keep it READY however long the three commands take on a loaded machine.
        agent.keep_beating(STEADY.interval_s)
        try:
            status = await asyncio.to_thread(run, controller, "status")
            stats = await asyncio.to_thread(run, controller, "stats", "-o", "json")
            stats_table = await asyncio.to_thread(run, controller, "stats")
        finally:
            await agent.discard()

    assert status.code == 0, status
    lines = status.out.splitlines()
    controller_line = next(line for line in lines if line.startswith("Controller:"))
    node_stats = client.get_node_stats()
    assert controller.address in controller_line and node_stats.replica_id in controller_line
    assert "the leader" in controller_line  # one replica: it leads
    nodes_line = next(line for line in lines if line.startswith("Nodes:"))
    assert "2: READY 1, PENDING 1" in nodes_line
    assert any(line.startswith("Deployments:") and "1: " in line for line in lines)
    assert "Nodes not READY" in status.out and waiting.id[:8] in status.out

    assert stats.code == 0, stats
    both = json.loads(stats.out)
    nodes = json_format.ParseDict(both["nodes"], ns.GetNodeStatsResponse())
    assert nodes.total == 2
    assert nodes.by_status["NODE_STATUS_READY"] == 1
    assert both["deployments"]["total"] == 1
    assert stats_table.code == 0 and "by status:" in stats_table.out


def test_listing_nodes_imports_neither_the_server_nor_its_dependencies(
    controller: ControllerProcess,
) -> None:
    """Start-up cost (issue 12): `automator67 --help` loads no grpc at all; `nodes list`,
    `deployments list` and `status` load the SDK but nothing of the server (nor PyYAML, which
    only `-f FILE` needs)."""
    heavy = [
        "controller.server",
        "controller.registry",
        "controller.store",
        "controller.api",
        # (`import grpc` itself imports the bare grpc_health and grpc_reflection packages)
        "grpc_health.v1",
        "grpc_reflection.v1alpha",
        "prometheus_client",
        "psycopg",
        "jwt",
        "yaml",
    ]
    probe = (
        "import sys, contextlib, io\n"
        "from controller.cli import main\n"
        "argv = sys.argv[1:]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        f"loaded = [m for m in {heavy!r} + ['grpc'] if m in sys.modules]\n"
        "print(code, ' '.join(loaded))\n"
    )
    env = controller_env(A67_ADDR=controller.address, A67_TOKEN=controller.admin_token)

    def loaded(*argv: str) -> tuple[str, set[str]]:
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        code, _, modules = done.stdout.strip().partition(" ")
        return code, set(modules.split())

    assert loaded("--help") == ("0", set())
    for command in (["nodes", "list"], ["deployments", "list"], ["status"]):
        code, modules = loaded(*command)
        assert (code, modules) == ("0", {"grpc"}), command


def test_mutual_tls_from_the_environment(start_controller: StartController, tmp_path: Path) -> None:
    pki = Pki.make()
    controller = start_controller(extra_args=tls_args(pki, tmp_path / "server", mutual=True))
    ca, _ = pki.ca.write(tmp_path / "client", "ca")
    cert, key = pki.client.write(tmp_path / "client", "client")

    trusted = run(controller, "stats", A67_CACERT=ca, A67_CLIENT_CERT=cert, A67_CLIENT_KEY=key)
    assert trusted.code == 0 and "Nodes:" in trusted.out, trusted

    no_client_cert = run(controller, "stats", A67_CACERT=ca)
    assert_one_line_error(no_client_cert, 5, "UNAVAILABLE")
    plaintext = run(controller, "stats")
    assert_one_line_error(plaintext, 5, "UNAVAILABLE")
    half = run(controller, "stats", A67_CACERT=ca, A67_CLIENT_CERT=cert)
    assert_one_line_error(half, 2, "--client-cert and --client-key go together")
    missing = run(controller, "stats", "--cacert", str(tmp_path / "nope.pem"))
    assert_one_line_error(missing, 2, "cannot read", "nope.pem")
