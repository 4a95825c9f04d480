"""The Python SDK against a real controller: paging over every page, typed errors with their
reasons, metadata and field violations, a delete that returns the deployment STOPPING, the
asyncio client, and a watch that resumes where it broke when the controller restarts."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from automator67 import (
    AbortedError,
    AlreadyExistsError,
    Client,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from automator67.aio import AsyncClient
from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import node_service_pb2 as ns

from .conftest import StartController
from .controller_process import ControllerProcess

WAIT_S = 30.0
MISSING = "00000000-0000-4000-8000-000000000000"


def spec(endpoint: str, region: str = "eu-west-1") -> node_pb2.Node:
    return node_pb2.Node(
        provider="bare-metal",
        endpoint=endpoint,
        region=region,
        capabilities=node_pb2.Capabilities(cpu_cores=1, memory_gb=1),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_sync_client_pages_filters_and_types_its_errors(controller: ControllerProcess) -> None:
    with Client(controller.address, token=controller.admin_token) as client:
        ids = {
            client.register_node(spec(f"h{i}", "eu" if i % 2 else "us")).node.id for i in range(5)
        }

        pages = list(client.list_nodes(page_size=2).pages())
        assert [len(p.nodes) for p in pages] == [2, 2, 1]
        assert {n.id for n in client.list_nodes(page_size=2)} == ids
        assert len(list(client.list_nodes('region = "eu"', page_size=1))) == 2
        assert client.get_node_stats().total == 5

        with pytest.raises(NotFoundError) as missing:
            client.get_node(MISSING)
        assert (missing.value.reason, missing.value.domain) == ("NODE_NOT_FOUND", "automator67.io")
        assert missing.value.metadata["node_id"] == MISSING

        with pytest.raises(InvalidArgumentError) as invalid:
            client.register_node(node_pb2.Node(provider="", endpoint="h"))
        assert invalid.value.reason == "INVALID_FIELD"
        fields = {v.field for v in invalid.value.field_violations}
        assert "node.provider" in fields, fields
        assert all(v.description for v in invalid.value.field_violations)

        web = client.create_deployment(deployment_pb2.Deployment(name="web", image="nginx"))
        with pytest.raises(AlreadyExistsError) as taken:
            client.create_deployment(deployment_pb2.Deployment(name="web", image="nginx"))
        assert taken.value.reason == "DEPLOYMENT_NAME_TAKEN"
        assert isinstance(taken.value, ConflictError)

        # Unconditional: the scheduler may already have moved the etag (a status reason), as
        # it may at any time; a conditional write then gets ABORTED, as the next one must.
        grown = client.update_deployment(
            deployment_pb2.Deployment(id=web.id, replicas=2), ["replicas"]
        )
        with pytest.raises(AbortedError) as stale:
            client.delete_deployment(web.id, etag=web.etag)
        assert stale.value.reason == "ETAG_MISMATCH"
        # The etag the store held when it refused; the scheduler may have moved it since the
        # update (a status reason), never back.
        now = client.get_deployment(web.id).etag
        assert int(grown.etag) <= int(stale.value.metadata["current_etag"]) <= int(now)

        stopping = client.delete_deployment(web.id)  # (the scheduler may move the etag)
        assert stopping.id == web.id
        assert stopping.status == deployment_pb2.DEPLOYMENT_STATUS_STOPPING


def test_creates_are_idempotent_by_the_request_id_the_client_fills_in(
    controller: ControllerProcess,
) -> None:
    with Client(controller.address, token=controller.admin_token) as client:
        first = client.register_node(spec("a"), request_id="sdk-retry-1")
        again = client.register_node(spec("a"), request_id="sdk-retry-1")
        other = client.register_node(spec("a"))  # a fresh UUID: a new node
        assert first.node.id == again.node.id != other.node.id


def test_a_wrong_token_is_unauthenticated_and_a_dead_address_unavailable(
    controller: ControllerProcess,
) -> None:
    with Client(controller.address, token="not-a-jwt") as client:
        with pytest.raises(Exception) as refused:
            client.get_node_stats()
        assert getattr(refused.value, "code", None) is grpc.StatusCode.UNAUTHENTICATED
    with Client(f"127.0.0.1:{free_port()}", timeout_s=2.0) as client:
        with pytest.raises(Exception) as down:
            client.get_node(MISSING)  # retried on UNAVAILABLE, then raised
        assert getattr(down.value, "code", None) is grpc.StatusCode.UNAVAILABLE


async def test_the_async_client_pages_watches_and_types_its_errors(
    controller: ControllerProcess,
) -> None:
    async with AsyncClient(controller.address, token=controller.admin_token) as client:
        async with client.watch_nodes() as watch:
            assert (await watch.read()).type == ns.NODE_EVENT_TYPE_SYNCED
            node = (await client.register_node(spec("async-1"))).node
            event = await asyncio.wait_for(watch.read(), WAIT_S)
            assert (event.type, event.node.id) == (ns.NODE_EVENT_TYPE_ADDED, node.id)
            assert watch.revision == event.revision

        assert [n.id async for n in client.list_nodes(page_size=1)] == [node.id]
        assert (await client.get_node(node.id)).endpoint == "async-1"
        with pytest.raises(NotFoundError) as missing:
            await client.get_deployment(MISSING)
        assert missing.value.reason == "DEPLOYMENT_NOT_FOUND"
        await client.delete_node(node.id)
        assert await client.list_nodes().all() == []


async def test_a_watch_resumes_after_the_controller_restarts_and_misses_nothing(
    start_controller: StartController, data_dir: Path
) -> None:
    controller = start_controller(extra_args=["--port", str(free_port())])
    token = controller.admin_token
    async with AsyncClient(controller.address, token=token) as client:
        a = (await client.register_node(spec("a"))).node
        watch = client.watch_nodes()
        before: list[ns.WatchNodesResponse] = []
        async with asyncio.timeout(WAIT_S):
            while not before or before[-1].type != ns.NODE_EVENT_TYPE_SYNCED:
                before.append(await watch.read())
        assert [e.node.id for e in before[:-1]] == [a.id]
        synced_at = watch.revision

        controller.terminate()  # the watch breaks (SHUTTING_DOWN), then fails to reconnect
        controller.start()  # same data, same port: the watch resumes on its own
        async with AsyncClient(controller.address, token=token) as writer:
            b = (await writer.register_node(spec("b"))).node
            await writer.delete_node(a.id)

        after: list[ns.WatchNodesResponse] = []
        async with asyncio.timeout(WAIT_S):
            while {e.node.id for e in after if e.type == ns.NODE_EVENT_TYPE_DELETED} != {a.id}:
                after.append(await watch.read())
        watch.cancel()

    kinds = [ns.NodeEventType.Name(e.type) for e in after]
    assert "NODE_EVENT_TYPE_RESET" not in kinds, kinds  # resumed, not started over
    changes = [e for e in after if e.type != ns.NODE_EVENT_TYPE_SYNCED]
    assert [e.node.id for e in changes] == [b.id, a.id], kinds  # each change once, in order
    assert all(e.revision > synced_at for e in changes)
    assert changes[-1].node.endpoint == "a"  # a DELETED event carries the last state
