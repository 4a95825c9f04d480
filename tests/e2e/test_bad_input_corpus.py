"""A corpus of malformed and extreme requests, generated from the request descriptors, against
one real controller: every RPC of NodeService, DeploymentService and AgentService must end with a
canonical status that is never UNKNOWN or INTERNAL, with trailers under 8 KB (else a client sees
RESOURCE_EXHAUSTED "metadata size exceeds soft limit" instead of the error), and a bystander's
GetNodeStats must still answer afterwards, with finite capacity totals (a node of 1.7e308 cores
once made them infinite).

The requests are well-formed protobufs (raw malformed bytes are `test_malformed_payloads.py`'s):
each field of each request message, found by walking its DESCRIPTOR, is left unset or given a
value a client could send: huge, negative, NaN and infinite numbers, every bound of its integer
type, very long strings, NUL, right-to-left marks and astral characters (lone surrogates cannot
be encoded, so the wire never carries them), huge repeated fields and maps, unknown enum
numbers, nested messages, and now and then the id of a real node or deployment, so that a
request gets past the first check.

Deterministic (Hypothesis derandomized, no example database) and bounded by the
"bad-input-corpus" profile; A67_CORPUS_EXAMPLES sets the examples per RPC for a longer run."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from automator67.v1 import agent_service_pb2, deployment_service_pb2, node_pb2, node_service_pb2
from automator67.v1 import heartbeat_pb2 as hb
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .auth_helpers import Forge, bearer
from .controller_process import ControllerProcess
from .seed import seed_node, web_deployment

settings.register_profile(
    "bad-input-corpus",
    max_examples=int(os.environ.get("A67_CORPUS_EXAMPLES", "40")),
    derandomize=True,  # the same corpus on every run
    database=None,
    deadline=None,  # a loaded machine is slow, not wrong
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
CORPUS = settings.get_profile("bad-input-corpus")

MAX_TRAILERS = 8192  # grpc's default soft limit on received metadata
CALL_TIMEOUT_S = 20.0
STREAM_TIMEOUT_S = 2.0  # a watch may wait silently; how long it waits is no fault
STREAM_MESSAGES = 20  # read at most this many responses of a stream
CHANNEL_OPTIONS = [
    # Far above what the server may send, so the test sees (and measures) oversized trailers
    # instead of the client refusing them with a RESOURCE_EXHAUSTED of its own.
    ("grpc.max_metadata_size", 1 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
SERVICES = [
    node_service_pb2.DESCRIPTOR.services_by_name["NodeService"],
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"],
]
METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for service in SERVICES
    for method in service.methods
}
NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

# Numbers: the bounds of each wire type and the values that break naive arithmetic.
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_DOUBLES = [1.7e308, math.nan, math.inf, -math.inf, -1.7e308, 5e-324, -0.0, 0.0, 1e15, 1e6]
_CHARS = ["a", "\x00", "é", "\U0001f600", "\u202e", "\ufffd", "-", "/", "%", " ", '"', "\n"]
_LENGTHS = [63, 64, 65, 257, 1025, 4097, 8193, 70_000, 1_000_000]
_HUGE_COUNTS = [64, 65, 256, 257, 1001, 5000, 20_000]  # each limit, and one past it
_FILTERS = [
    'status = READY AND region = "us-east-1"',
    "provider = render OR provider = aws",
    "(" * 5000 + "a = b" + ")" * 5000,
    "a = b AND " * 2000 + "a = b",
    'labels.zone = "a"',
    "status = NOT_A_STATUS",
    "= = =",
    'name = "\x00"',
]
_PATHS = [
    "replicas",
    "image",
    "name",
    "deployment.replicas",
    "*",
    "resources.cpu_cores",
    "env",
    "labels",
    "unschedulable",
    "drain",
]


@dataclass(frozen=True)
class Known:
    """What gets a request past its first check: values by field name (ids of what exists,
    etags, filters, mask paths), and a valid request per request type to start from."""

    by_field: dict[str, list[str]]
    bases: dict[str, Message]


def _text(field: FieldDescriptor, known: Known) -> st.SearchStrategy[str]:
    anything = st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
        st.builds(lambda c, n: c * n, st.sampled_from(_CHARS), st.sampled_from(_LENGTHS)),
    )
    good = known.by_field.get(field.name)
    return st.one_of(st.sampled_from(good), anything) if good else anything


def _scalar(field: FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if kind == FieldDescriptor.TYPE_FLOAT:
            return st.one_of(st.sampled_from([math.nan, math.inf, 3e38]), st.floats(width=32))
        return st.one_of(st.sampled_from(_DOUBLES), st.floats())
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        edges = [low, high, -1, 0, 1, 1000, 1001, 2**31 - 1]
        return st.one_of(
            st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return _text(field, known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=32), st.sampled_from([b"\xff" * 70_000]))
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = [v.number for v in field.enum_type.values]
        return st.sampled_from([*defined, 99, -1, 2**31 - 1, -(2**31)])  # open enums
    raise AssertionError(f"no strategy for field type {kind} of {field.full_name}")


def _filler(field: FieldDescriptor, i: int) -> Any:
    """The i-th item of a huge repeated field: cheap to make, distinct where it matters."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_factory.GetMessageClass(_nested(field))()
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"-not a key or name {i:05} {'x' * 60}"  # long and invalid as any key
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"x"
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(i)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool(i % 2)
    return i % 128


def _nested(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and _nested(field).GetOptions().map_entry


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, known: Known, depth: int = 0) -> Message:
    """A message of `descriptor`. Two times in three for a request with a valid base: the base with
    exactly one field, at any depth, set to a drawn value, so that one extreme value meets the
    checks behind the first. Otherwise each field unset or drawn (maps and repeated fields
    small or huge; nested messages to a depth of 3)."""
    message = message_factory.GetMessageClass(descriptor)()
    base = known.bases.get(descriptor.full_name) if depth == 0 else None
    one_field = st.sampled_from([True, True, False])  # True first: the simplest example
    if base is not None and draw(one_field):
        message.CopyFrom(base)
        *parents, leaf = draw(st.sampled_from(_field_paths(descriptor)))
        parent = message
        for field in parents:
            parent = getattr(parent, field.name)
        parent.ClearField(leaf.name)
        _fill(draw, parent, leaf, known, len(parents))
        return message
    for field in descriptor.fields:
        if draw(st.booleans()) and (field.type != FieldDescriptor.TYPE_MESSAGE or depth < 3):
            _fill(draw, message, field, known, depth)
    return message


def _field_paths(descriptor: Descriptor, depth: int = 0) -> list[list[FieldDescriptor]]:
    """Every field of `descriptor`, and of its nested (singular) messages, as a path."""
    paths: list[list[FieldDescriptor]] = []
    for field in descriptor.fields:
        paths.append([field])
        nested = field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated
        if nested and depth < 3:
            paths += [[field, *rest] for rest in _field_paths(_nested(field), depth + 1)]
    return paths


def _fill(
    draw: st.DrawFn, message: Message, field: FieldDescriptor, known: Known, depth: int
) -> None:
    """Sets `field` of `message` to a drawn value."""
    target = getattr(message, field.name)
    if _is_map(field):
        key_field, value_field = _nested(field).fields
        if draw(st.booleans()):
            count = draw(st.sampled_from(_HUGE_COUNTS))
            entries = {_filler(key_field, i): _filler(value_field, i) for i in range(count)}
        else:
            entries = draw(
                st.dictionaries(
                    _scalar(key_field, known), _value(value_field, known, depth), max_size=4
                )
            )
        for key, value in entries.items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(value)
            else:
                target[key] = value
    elif field.is_repeated:
        if draw(st.booleans()):
            count = draw(st.sampled_from(_HUGE_COUNTS))
            values = [_filler(field, i) for i in range(count)]
        else:
            values = draw(st.lists(_value(field, known, depth), max_size=4))
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for value in values:
                target.add().CopyFrom(value)
        else:
            target.extend(values)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(draw(messages(_nested(field), known, depth + 1)))
    else:
        setattr(message, field.name, draw(_scalar(field, known)))


def _value(field: FieldDescriptor, known: Known, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(_nested(field), known, depth + 1)
    return _scalar(field, known)


@dataclass(frozen=True)
class Ending:
    """How a call ended, as the client saw it."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str | bytes], ...]

    @property
    def trailer_bytes(self) -> int:
        size = len(self.details.encode())
        for key, value in self.trailers:
            size += len(key) + len(value if isinstance(value, bytes) else value.encode())
        return size


def _ending_of(call: Any) -> Ending:
    return Ending(call.code(), call.details() or "", tuple(call.trailing_metadata() or ()))


class Caller:
    """Calls any RPC of `METHODS` with a request (a list of requests for a client stream)."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._metadata = metadata

    def call(self, path: str, request: Message | list[Message]) -> Ending:
        method = METHODS[path]
        output = message_factory.GetMessageClass(method.output_type)
        serialize: Callable[[Message], bytes] = lambda m: m.SerializeToString()  # noqa: E731
        try:
            if method.client_streaming:
                assert isinstance(request, list)
                bidi = self._channel.stream_stream(path, serialize, output.FromString)
                call = bidi(iter(request), metadata=self._metadata, timeout=STREAM_TIMEOUT_S)
                return self._drain(call)
            if method.server_streaming:
                stream = self._channel.unary_stream(path, serialize, output.FromString)
                call = stream(request, metadata=self._metadata, timeout=STREAM_TIMEOUT_S)
                return self._drain(call)
            unary = self._channel.unary_unary(path, serialize, output.FromString)
            _, done = unary.with_call(request, metadata=self._metadata, timeout=CALL_TIMEOUT_S)
            return _ending_of(done)
        except grpc.RpcError as error:
            return _ending_of(error)

    @staticmethod
    def _drain(call: Any) -> Ending:
        """Reads the stream until it ends or has answered enough; cancelling it then is ours."""
        for count, _ in enumerate(call, start=1):
            if count >= STREAM_MESSAGES:
                call.cancel()
                return Ending(grpc.StatusCode.OK, "", ())
        return _ending_of(call)


@dataclass(frozen=True)
class Target:
    controller: ControllerProcess
    caller: Caller
    bystander: Callable[[], node_service_pb2.GetNodeStatsResponse]
    known: Known
    streaming_node_id: str  # a node no corpus call names, so none deletes it: the hello's


@pytest.fixture(scope="module")
def target(shared_controller: ControllerProcess) -> Iterator[Target]:
    """The module's controller with a node and a deployment in it, and two admin channels: one
    for the corpus, one for the bystander."""
    metadata = shared_controller.metadata
    with (
        grpc.insecure_channel(shared_controller.address, options=CHANNEL_OPTIONS) as channel,
        grpc.insecure_channel(shared_controller.address) as quiet,
    ):
        nodes = node_service_pb2.RegisterNodeRequest(node=seed_node(region="eu-west-1"))
        node = Caller(channel, metadata)
        stub_call = channel.unary_unary(
            "/automator67.v1.NodeService/RegisterNode",
            lambda m: m.SerializeToString(),
            node_service_pb2.RegisterNodeResponse.FromString,
        )
        node_id = stub_call(nodes, metadata=metadata, timeout=CALL_TIMEOUT_S).node.id
        streaming_node_id = stub_call(nodes, metadata=metadata, timeout=CALL_TIMEOUT_S).node.id
        create = channel.unary_unary(
            "/automator67.v1.DeploymentService/CreateDeployment",
            lambda m: m.SerializeToString(),
            deployment_service_pb2.CreateDeploymentResponse.FromString,
        )
        request = deployment_service_pb2.CreateDeploymentRequest(
            deployment=web_deployment("corpus")
        )
        deployment = create(request, metadata=metadata, timeout=CALL_TIMEOUT_S).deployment
        another = str(uuid.uuid4())
        etags = [deployment.etag, "0", "1", "-1", "99999999999999999999", 'W/"1"']
        known = Known(
            by_field={
                "node_id": [node_id, another],
                "deployment_id": [deployment.id, another],
                "id": [deployment.id, node_id, another],
                "etag": etags,
                "filter": _FILTERS,
                "paths": _PATHS,
                "page_token": ["", "AAAA", "%%%", "eyJ9"],
                "request_id": ["corpus-1", "corpus-2"],
                "name": ["corpus", "corpus-2", "x"],
            },
            bases={
                "automator67.v1.RegisterNodeRequest": node_service_pb2.RegisterNodeRequest(
                    node=seed_node(region="eu-west-1")
                ),
                "automator67.v1.CreateDeploymentRequest": request,
                "automator67.v1.UpdateDeploymentRequest": (
                    deployment_service_pb2.UpdateDeploymentRequest(
                        deployment=web_deployment("corpus", id=deployment.id, replicas=2),
                        update_mask=field_mask_pb2.FieldMask(paths=["replicas"]),
                    )
                ),
                "automator67.v1.UpdateNodeRequest": node_service_pb2.UpdateNodeRequest(
                    node=node_pb2.Node(id=node_id, labels={"corpus": "yes"}),
                    update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
                ),
                "automator67.v1.GetNodeRequest": node_service_pb2.GetNodeRequest(node_id=node_id),
                "automator67.v1.GetDeploymentRequest": deployment_service_pb2.GetDeploymentRequest(
                    deployment_id=deployment.id
                ),
                "automator67.v1.DeleteNodeRequest": node_service_pb2.DeleteNodeRequest(
                    node_id=another
                ),
                "automator67.v1.DeleteDeploymentRequest": (
                    deployment_service_pb2.DeleteDeploymentRequest(deployment_id=another)
                ),
                "automator67.v1.ListNodesRequest": node_service_pb2.ListNodesRequest(
                    page_size=10, filter="provider = render"
                ),
                "automator67.v1.ListDeploymentsRequest": (
                    deployment_service_pb2.ListDeploymentsRequest(page_size=10, filter="name = x")
                ),
                "automator67.v1.HeartbeatRequest": hb.HeartbeatRequest(
                    beat=hb.Beat(sequence=1, load=hb.NodeLoad(cpu_percent=1))
                ),
            },
        )
        get_stats = quiet.unary_unary(
            "/automator67.v1.NodeService/GetNodeStats",
            lambda m: m.SerializeToString(),
            node_service_pb2.GetNodeStatsResponse.FromString,
        )

        def bystander() -> node_service_pb2.GetNodeStatsResponse:
            request = node_service_pb2.GetNodeStatsRequest()
            answer = get_stats(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            assert isinstance(answer, node_service_pb2.GetNodeStatsResponse)
            return answer

        yield Target(shared_controller, node, bystander, known, streaming_node_id)


def _check(target: Target, path: str, ending: Ending, request: object) -> None:
    shown = str(request)[:2000]
    assert ending.code not in NEVER, f"{path} -> {ending.code.name} {ending.details!r}\n{shown}"
    assert ending.trailer_bytes < MAX_TRAILERS, (
        f"{path} -> {ending.code.name} with {ending.trailer_bytes} bytes of trailers "
        f"(message {ending.details[:200]!r}...)\n{shown}"
    )
    try:
        stats = target.bystander()
    except grpc.RpcError as error:
        raise AssertionError(f"after {path}, the bystander got {error}") from None
    capacities = (stats.total_capacity, stats.ready_capacity)
    totals = [getattr(c, f) for c in capacities for f in ("cpu_cores", "memory_gb", "disk_gb")]
    assert all(math.isfinite(t) for t in totals), f"after {path}, capacity is {capacities}\n{shown}"


def _stats_request() -> Message:
    return node_service_pb2.GetNodeStatsRequest()


UNARY_OR_SERVER_STREAM = [p for p, m in METHODS.items() if not m.client_streaming]
CLIENT_STREAM = [p for p, m in METHODS.items() if m.client_streaming]


def test_the_corpus_covers_every_rpc_of_both_services() -> None:
    assert len(METHODS) == 15
    assert CLIENT_STREAM == ["/automator67.v1.AgentService/Heartbeat"]


@pytest.mark.parametrize("path", UNARY_OR_SERVER_STREAM, ids=lambda p: p.rsplit("/", 1)[1])
def test_generated_requests_get_a_canonical_code_and_small_trailers(
    target: Target, path: str
) -> None:
    method = METHODS[path]

    @CORPUS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(messages(method.input_type, target.known), label="request")
        _check(target, path, target.caller.call(path, request), request)

    run()


@pytest.mark.parametrize("path", CLIENT_STREAM, ids=lambda p: p.rsplit("/", 1)[1])
def test_generated_streams_get_a_canonical_code_and_small_trailers(
    target: Target, path: str
) -> None:
    method = METHODS[path]
    hello = hb.HeartbeatRequest()
    hello.hello.node_id = target.streaming_node_id  # a real node: the beats that follow count

    @CORPUS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        requests = data.draw(
            st.lists(messages(method.input_type, target.known), max_size=4), label="requests"
        )
        if data.draw(st.booleans(), label="open with a real hello"):
            requests.insert(0, hello)
        _check(target, path, target.caller.call(path, requests), requests)

    run()


# A correctly signed token whose claims have the wrong JSON type is refused as any bad token is,
# never answered INTERNAL (a list as the role was a TypeError in the check).
BAD_CLAIMS: dict[str, dict[str, object]] = {
    "role as a list": {"role": ["admin"]},
    "role as an object": {"role": {"admin": True}},
    "subject as a list": {"sub": ["e2e"]},
    "jti as an object": {"jti": {"a": 1}},
    "exp as a string": {"exp": "9999999999"},
    "exp of 400 digits": {"exp": 10**400},
    "iat as an object": {"iat": {}},
}


@pytest.mark.parametrize("claims", BAD_CLAIMS.values(), ids=list(BAD_CLAIMS))
def test_a_signed_token_with_claims_of_the_wrong_type_is_unauthenticated(
    target: Target, claims: dict[str, object]
) -> None:
    forge = Forge.of(target.controller)
    now = int(time.time())
    payload = {
        "iss": forge.settings.issuer,
        "aud": forge.settings.audience,
        "sub": "e2e",
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    key: Any = forge.keys.signing_key
    token = jwt.PyJWS().encode(json.dumps(payload).encode(), key, algorithm=forge.keys.algorithm)
    with grpc.insecure_channel(target.controller.address) as channel:
        ending = Caller(channel, bearer(token)).call(
            "/automator67.v1.NodeService/GetNodeStats", _stats_request()
        )
    assert ending.code is grpc.StatusCode.UNAUTHENTICATED, ending
