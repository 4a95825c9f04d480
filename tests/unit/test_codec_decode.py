"""The store's documents decode fast (orjson, shared capabilities, a status table) and exactly
as before: every field round trips; what orjson refuses but json writes (NaN, an integer past 64
bits) still decodes; shared capabilities never mix an int with a float."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

from controller.models import Capabilities, Credentials, Node, NodeStatus, Secret, frozen_map
from controller.store.codec import decode_node, encode_node
from controller.store.sealing import PlaintextSealer

T0 = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
SEALER = PlaintextSealer()


def node(node_id: str = "n1", **changes: object) -> Node:
    base = Node(
        id=node_id,
        provider="aws",
        endpoint="https://n1.example:7070",
        region="eu-west-1",
        capabilities=Capabilities(4.0, 8.0, 50.0, "1Gbps"),
        create_time=T0,
        update_time=T0,
        labels=frozen_map({"zone": "a", "tier": "web"}),
        credentials=Credentials(Secret("s3cret"), "github", 1_900_000_000_000),
        status=NodeStatus.READY,
        last_heartbeat_time=T0,
        revision=7,
        holder="replica-1",
        unschedulable=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def round_trip(n: Node) -> Node:
    return decode_node(n.id, n.revision, encode_node(n, SEALER), SEALER)


def test_every_field_round_trips() -> None:
    original = node()
    decoded = round_trip(original)

    assert decoded == original
    assert decoded.credentials is not None and decoded.credentials.oauth_token.reveal() == "s3cret"
    for status in NodeStatus:
        assert round_trip(node(status=status)).status is status


def test_what_orjson_refuses_still_decodes() -> None:
    nan = round_trip(node(capabilities=Capabilities(float("nan"), 8.0)))
    huge = round_trip(node(credentials=Credentials(Secret("t"), "github", 2**70)))

    assert math.isnan(nan.capabilities.cpu_cores)
    assert huge.credentials is not None and huge.credentials.oauth_expires_at_ms == 2**70


def test_nodes_of_one_shape_share_capabilities_but_ints_stay_ints() -> None:
    a, b = round_trip(node("a")), round_trip(node("b"))
    whole = round_trip(node("c", capabilities=Capabilities(4, 8, 50, "1Gbps")))

    assert a.capabilities is b.capabilities
    assert type(whole.capabilities.cpu_cores) is int
    assert type(a.capabilities.cpu_cores) is float
