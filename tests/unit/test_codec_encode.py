"""A node's document is written with orjson where that writes the values json writes, and with
json where it would not (a NaN or infinite number, an integer past 64 bits): read back, the
document holds the same values either way."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from controller.models import Capabilities, Drain, DrainState, Node, frozen_map
from controller.store.codec import decode_node, encode_node

from .test_codec_decode import SEALER, T0, node

NODES = {
    "plain": node(),
    "text past ASCII": node(region="eu-zoë", labels=frozen_map({"équipe": "✓"})),
    "tiny and huge numbers": node(capabilities=Capabilities(1e-07, 1e16, 0.1, "x")),
    "integer capabilities": node(capabilities=Capabilities(4, 8, 50, "1Gbps")),
    "draining": node(
        drain=Drain(start_time=T0, deadline=T0, state=DrainState.DRAINING, remaining=2**63 - 1)
    ),
}


@pytest.mark.parametrize("value", NODES.values(), ids=list(NODES))
def test_a_document_reads_back_as_the_node_it_was(value: Node) -> None:
    document = encode_node(value, SEALER)
    assert decode_node(value.id, value.revision, document, SEALER) == value
    assert json.loads(document)["region"] == value.region  # plain JSON to any reader


def test_a_number_orjson_cannot_write_is_written_by_json() -> None:
    nan = replace(node(), capabilities=Capabilities(math.nan, 8.0, 50.0, "x"))
    assert '"capabilities":[NaN,8.0,50.0,"x"]' in encode_node(nan, SEALER)
    big = node(drain=Drain(start_time=T0, deadline=T0, state=DrainState.DRAINING, moved=2**70))
    assert str(2**70) in encode_node(big, SEALER)
