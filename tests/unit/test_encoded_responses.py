"""GetNode and ListNodes answer their responses already serialized (`api/encoded.py`), framed
from each node's cached bytes: what they answer must parse, with the generated messages, to the
response the servicer built before as a message (each node converted, `next_page_token` set),
on a real registry: every page, empty ones, page tokens, filters, nodes with and without a
heartbeat time; and `generic_only.py` must send those bytes as they are, other methods as
before. (Not byte for byte: the order of map entries is free in the wire format, and so is
where a node's heartbeat time goes; the bytes of one message serialized twice may differ.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import grpc
import pytest
from automator67.v1 import node_pb2, node_service_pb2_grpc
from automator67.v1 import node_service_pb2 as pb

from controller.api import convert, encoded
from controller.api.generic_only import GenericOnly
from controller.api.node_servicer import NodeServicer
from controller.clock import FakeClock
from controller.models import NodeSpec, frozen_map
from controller.registry.nodes import NodeRegistry
from controller.store.base import Store
from tests.unit.test_node_registry import SPEC

NO_CONTEXT = cast(Any, None)  # neither method reads its context


async def fleet(store: Store, clock: FakeClock, count: int = 23) -> NodeRegistry:
    registry = NodeRegistry(store, clock)
    await registry.load()
    for i in range(count):
        spec: NodeSpec = replace(
            SPEC,
            provider=("fly", "render")[i % 2],
            region=("us-east-1", "eu-west-1", "ap-south-1")[i % 3],
            labels=frozen_map({"zone": "abc"[i % 3], "n": str(i)}),
        )
        await registry.register(spec)
        clock.advance(1)
    for node in registry.list(page_size=1000).items[::4]:  # some with a heartbeat time
        registry.stream_opened(node.id)
        clock.advance(1.234)
        registry.beat(node.id)
    return registry


def servicer(registry: NodeRegistry) -> NodeServicer:
    return NodeServicer(registry, cast(Any, None))  # no watch: WatchNodes is not called


def as_messages(registry: NodeRegistry, request: pb.ListNodesRequest) -> pb.ListNodesResponse:
    """The response as built before: each node converted to a message, the token set."""
    page = registry.list(request.filter, request.page_size, request.page_token)
    return pb.ListNodesResponse(
        nodes=[convert.node_to_pb(node) for node in page.items],
        next_page_token=page.next_page_token,
    )


@pytest.mark.parametrize(
    "filter_text",
    ["", 'provider = "fly"', 'provider = "fly" AND region = "us-east-1"', "labels.zone = b"],
)
@pytest.mark.parametrize("page_size", [0, 1, 4, 1000])
async def test_every_page_parses_to_the_response_built_as_messages(
    store: Store, clock: FakeClock, filter_text: str, page_size: int
) -> None:
    registry = await fleet(store, clock)
    nodes = servicer(registry)
    token, pages, seen = "", 0, 0
    while True:
        request = pb.ListNodesRequest(filter=filter_text, page_size=page_size, page_token=token)
        answer = await nodes.ListNodes(request, NO_CONTEXT)
        assert isinstance(answer, bytes)
        expected = as_messages(registry, request)
        assert pb.ListNodesResponse.FromString(answer) == expected
        pages, seen = pages + 1, seen + len(expected.nodes)
        token = expected.next_page_token
        if not token:
            break
    assert seen == len(registry.list(filter_text, 1000).items)
    assert pages >= 1


async def test_a_page_with_a_heartbeat_time_carries_it(store: Store, clock: FakeClock) -> None:
    registry = await fleet(store, clock)
    answer = await servicer(registry).ListNodes(pb.ListNodesRequest(page_size=1000), NO_CONTEXT)
    parsed = pb.ListNodesResponse.FromString(answer)
    beating = [node for node in parsed.nodes if node.HasField("last_heartbeat_time")]
    assert 0 < len(beating) < len(parsed.nodes)


async def test_an_empty_page_is_an_empty_response(store: Store, clock: FakeClock) -> None:
    empty = await fleet(store, clock, count=0)
    assert await servicer(empty).ListNodes(pb.ListNodesRequest(), NO_CONTEXT) == b""

    registry = await fleet(store, clock)
    request = pb.ListNodesRequest(filter='region = "nowhere"')
    answer = await servicer(registry).ListNodes(request, NO_CONTEXT)
    assert answer == b""
    assert pb.ListNodesResponse.FromString(answer) == pb.ListNodesResponse()


async def test_get_node_parses_to_the_node_s_message(store: Store, clock: FakeClock) -> None:
    registry = await fleet(store, clock, count=8)
    for node in registry.list(page_size=1000).items:
        answer = await servicer(registry).GetNode(pb.GetNodeRequest(node_id=node.id), NO_CONTEXT)
        expected = pb.GetNodeResponse(node=convert.node_to_pb(node))
        assert pb.GetNodeResponse.FromString(answer) == expected


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152])
def test_a_framed_field_is_what_protobuf_writes(size: int) -> None:
    token = "x" * size
    written = pb.ListNodesResponse(next_page_token=token).SerializeToString()
    assert encoded.field(2, token.encode()) == (written if size else b"\x12\x00")
    payloads = [node_pb2.Node(id="y" * size).SerializeToString(), b""]
    expected = pb.ListNodesResponse()
    for payload in payloads:
        expected.nodes.add().MergeFromString(payload)
    assert encoded.repeated(1, payloads) == expected.SerializeToString()


class Recorder:
    """Stands in for the aio server: keeps what is added."""

    def __init__(self) -> None:
        self.added: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.added.extend(handlers)


def handler_of(recorder: Recorder, method: str) -> Any:
    details = cast(grpc.HandlerCallDetails, type("Details", (), {"method": method})())
    for generic in recorder.added:
        handler = generic.service(details)
        if handler is not None:
            return handler
    return None


def test_methods_that_answer_bytes_have_no_response_serializer() -> None:
    recorder = Recorder()
    server = GenericOnly(cast(Any, recorder))
    node_service_pb2_grpc.add_NodeServiceServicer_to_server(
        servicer(cast(Any, None)), cast(Any, server)
    )
    assert len(recorder.added) == 1
    prefix = "/automator67.v1.NodeService/"
    for method in ("GetNode", "ListNodes"):
        handler = handler_of(recorder, prefix + method)
        assert handler.response_serializer is None
        assert handler.request_deserializer is not None
        assert encoded.is_encoded(handler.unary_unary)
    for method in ("RegisterNode", "DeleteNode", "GetNodeStats", "WatchNodes"):
        handler = handler_of(recorder, prefix + method)
        assert handler.response_serializer is not None
    assert handler_of(recorder, "/automator67.v1.NodeService/Nope") is None
