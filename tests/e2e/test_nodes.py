"""NodeService over real stubs against a real controller: register, get, list, delete, stats."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import grpc
from automator67.v1 import node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as pb

from .conftest import StartController, open_channel
from .rpc_errors import bad_request_fields, rpc_error
from .seed import SEED_TOKEN, seed_node

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub


async def register(stub: NodeServiceAsyncStub, node: node_pb2.Node) -> node_pb2.Node:
    response = await stub.RegisterNode(pb.RegisterNodeRequest(node=node))
    return response.node


async def list_all(stub: NodeServiceAsyncStub, filter_text: str = "") -> list[node_pb2.Node]:
    response = await stub.ListNodes(pb.ListNodesRequest(filter=filter_text, page_size=1000))
    assert response.next_page_token == ""
    return list(response.nodes)


def is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


async def test_registering_the_seed_node_returns_it_pending_without_its_credentials(
    node_stub: NodeServiceAsyncStub,
) -> None:
    call = node_stub.RegisterNode(pb.RegisterNodeRequest(node=seed_node()))
    response = await call

    node = response.node
    assert is_canonical_uuid(node.id)
    assert node.status == node_pb2.NODE_STATUS_PENDING
    assert node.has_credentials is True
    assert not node.HasField("credentials")
    assert SEED_TOKEN.encode() not in response.SerializeToString()
    assert (node.provider, node.endpoint, node.region) == (
        "render",
        "https://api.render.com",
        "us-east-1",
    )
    assert node.capabilities == node_pb2.Capabilities(
        cpu_cores=4, memory_gb=8, disk_gb=50, network_bandwidth="1Gbps"
    )
    assert node.etag
    assert node.HasField("create_time")
    assert node.update_time == node.create_time
    assert not node.HasField("last_heartbeat_time")


async def test_a_node_without_credentials_says_so(node_stub: NodeServiceAsyncStub) -> None:
    node = seed_node()
    node.ClearField("credentials")

    registered = await register(node_stub, node)

    assert registered.has_credentials is False


async def test_output_only_fields_of_a_registration_are_ignored(
    node_stub: NodeServiceAsyncStub,
) -> None:
    chosen_id = str(uuid.uuid4())
    node = seed_node(
        id=chosen_id, status=node_pb2.NODE_STATUS_READY, has_credentials=False, etag="77"
    )

    registered = await register(node_stub, node)

    assert registered.id != chosen_id
    assert registered.status == node_pb2.NODE_STATUS_PENDING
    assert registered.has_credentials is True
    assert registered.etag != "77"


async def test_get_returns_the_registered_node(node_stub: NodeServiceAsyncStub) -> None:
    registered = await register(node_stub, seed_node(labels={"tier": "gpu"}))

    response = await node_stub.GetNode(pb.GetNodeRequest(node_id=registered.id))

    assert response.node == registered
    assert not response.node.HasField("credentials")


async def test_get_of_an_unknown_node_is_not_found(node_stub: NodeServiceAsyncStub) -> None:
    error = await rpc_error(node_stub.GetNode(pb.GetNodeRequest(node_id=str(uuid.uuid4()))))

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_by_status_provider_region_and_labels(
    node_stub: NodeServiceAsyncStub,
) -> None:
    render_east = await register(node_stub, seed_node(labels={"tier": "gpu", "zone": "a"}))
    render_west = await register(node_stub, seed_node(region="us-west-2", labels={"tier": "cpu"}))
    fly_east = await register(node_stub, seed_node(provider="fly", labels={"tier": "gpu"}))
    everything = sorted(n.id for n in (render_east, render_west, fly_east))

    cases = {
        "": everything,
        "status = PENDING": everything,
        "status = NODE_STATUS_PENDING": everything,
        "status = READY": [],
        "provider = render": sorted([render_east.id, render_west.id]),
        'provider = "fly"': [fly_east.id],
        'region = "us-east-1"': sorted([render_east.id, fly_east.id]),
        "labels.tier = gpu": sorted([render_east.id, fly_east.id]),
        "labels.zone = a": [render_east.id],
        "labels.zone = b": [],
        'provider = render AND region = "us-east-1" AND labels.tier = gpu': [render_east.id],
        "provider = render AND labels.tier = cpu": [render_west.id],
        "provider = aws": [],
    }
    for filter_text, expected in cases.items():
        listed = [n.id for n in await list_all(node_stub, filter_text)]
        assert listed == expected, filter_text


async def test_listing_page_by_page_visits_every_node_once_in_id_order(
    node_stub: NodeServiceAsyncStub,
) -> None:
    registered = {(await register(node_stub, seed_node())).id for _ in range(5)}
    pages: list[list[str]] = []
    token = ""

    while True:
        response = await node_stub.ListNodes(pb.ListNodesRequest(page_size=2, page_token=token))
        pages.append([n.id for n in response.nodes])
        token = response.next_page_token
        if not token:
            break

    assert [len(page) for page in pages] == [2, 2, 1]
    walked = [node_id for page in pages for node_id in page]
    assert walked == sorted(registered)


async def test_paging_applies_the_filter_on_every_page(node_stub: NodeServiceAsyncStub) -> None:
    fly = {(await register(node_stub, seed_node(provider="fly"))).id for _ in range(3)}
    for _ in range(2):
        await register(node_stub, seed_node())
    request = pb.ListNodesRequest(page_size=2, filter="provider = fly")

    first = await node_stub.ListNodes(request)
    request.page_token = first.next_page_token
    second = await node_stub.ListNodes(request)

    assert [n.id for n in [*first.nodes, *second.nodes]] == sorted(fly)
    assert second.next_page_token == ""


async def test_a_page_token_is_refused_with_another_filter(
    node_stub: NodeServiceAsyncStub,
) -> None:
    for _ in range(3):
        await register(node_stub, seed_node())
    first = await node_stub.ListNodes(pb.ListNodesRequest(page_size=2))

    error = await rpc_error(
        node_stub.ListNodes(
            pb.ListNodesRequest(
                page_size=2, page_token=first.next_page_token, filter="provider = render"
            )
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["page_token"]


async def test_delete_removes_the_node(node_stub: NodeServiceAsyncStub) -> None:
    registered = await register(node_stub, seed_node())

    await node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=registered.id))

    error = await rpc_error(node_stub.GetNode(pb.GetNodeRequest(node_id=registered.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert await list_all(node_stub) == []
    again = await rpc_error(node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=registered.id)))
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_with_an_etag_other_than_the_current_one_is_aborted(
    node_stub: NodeServiceAsyncStub,
) -> None:
    older = await register(node_stub, seed_node())
    node = await register(node_stub, seed_node())
    assert older.etag != node.etag

    error = await rpc_error(
        node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=node.id, etag=older.etag))
    )

    assert error.code() == grpc.StatusCode.ABORTED
    assert (await node_stub.GetNode(pb.GetNodeRequest(node_id=node.id))).node == node
    await node_stub.DeleteNode(pb.DeleteNodeRequest(node_id=node.id, etag=node.etag))
    assert [n.id for n in await list_all(node_stub)] == [older.id]


async def test_stats_count_nodes_and_sum_their_capacity(node_stub: NodeServiceAsyncStub) -> None:
    empty = await node_stub.GetNodeStats(pb.GetNodeStatsRequest())
    assert empty.total == 0
    await register(node_stub, seed_node())
    await register(node_stub, seed_node(region=""))
    await register(node_stub, seed_node(provider="fly", region="eu-west-1"))

    stats = await node_stub.GetNodeStats(pb.GetNodeStatsRequest())

    assert stats.total == 3
    assert dict(stats.by_status) == {"NODE_STATUS_PENDING": 3}
    assert dict(stats.by_provider) == {"render": 2, "fly": 1}
    assert dict(stats.by_region) == {"us-east-1": 1, "": 1, "eu-west-1": 1}
    assert stats.total_capacity == pb.Capacity(cpu_cores=12, memory_gb=24, disk_gb=150)
    assert stats.ready_capacity == pb.Capacity()


async def test_a_retried_registration_with_the_same_request_id_registers_once(
    node_stub: NodeServiceAsyncStub,
) -> None:
    request = pb.RegisterNodeRequest(node=seed_node(), request_id="register-render-1")

    first = await node_stub.RegisterNode(request)
    retry = await node_stub.RegisterNode(request)

    assert retry.node == first.node
    assert [n.id for n in await list_all(node_stub)] == [first.node.id]


async def test_a_request_id_reused_for_another_node_is_invalid(
    node_stub: NodeServiceAsyncStub,
) -> None:
    await node_stub.RegisterNode(pb.RegisterNodeRequest(node=seed_node(), request_id="key-1"))

    error = await rpc_error(
        node_stub.RegisterNode(
            pb.RegisterNodeRequest(node=seed_node(region="eu-west-1"), request_id="key-1")
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["request_id"]
    assert len(await list_all(node_stub)) == 1


async def test_the_token_never_reaches_the_log(start_controller: StartController) -> None:
    process = start_controller(log_level="debug")
    async with open_channel(process.address) as channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        node = await register(stub, seed_node())
        # A failing registration logs its error: it must not quote the token either.
        bad = seed_node(provider="")
        await rpc_error(stub.RegisterNode(pb.RegisterNodeRequest(node=bad)))
        await stub.GetNode(pb.GetNodeRequest(node_id=node.id))

    assert process.terminate() == 0
    assert [line for line in process.log_lines if line.get("msg") == "rpc done"]
    assert not [line for line in process.log_lines if SEED_TOKEN in str(line)]


async def test_concurrent_retries_with_one_request_id_register_one_node(
    node_stub: NodeServiceAsyncStub,
) -> None:
    request = pb.RegisterNodeRequest(node=seed_node(), request_id="burst-1")

    responses = await asyncio.gather(*(node_stub.RegisterNode(request) for _ in range(20)))

    assert len({r.node.id for r in responses}) == 1
    assert [n.id for n in await list_all(node_stub)] == [responses[0].node.id]
