"""A node read with a recorded heartbeat time has the newer of that time and its document's,
compared as times whatever their text looks like (with or without microseconds, other UTC
offsets, none in the document); a delete logs the document with the newer time in it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.models import Capabilities, Node
from controller.store.codec import decode_node, encode_node, with_heartbeat
from controller.store.sealing import PlaintextSealer

T0 = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
SEALER = PlaintextSealer()
NODE = Node(
    id="n1",
    provider="aws",
    endpoint="https://n1.example:7070",
    region="eu-west-1",
    capabilities=Capabilities(4.0, 8.0),
    create_time=T0,
    update_time=T0,
    last_heartbeat_time=T0,
)
WHOLE_SECOND = T0.replace(microsecond=0)

CASES = {
    "no recorded time": (T0, None, T0),
    "no time in the document": (None, T0, T0),
    "recorded later": (T0, T0 + timedelta(microseconds=1), T0 + timedelta(microseconds=1)),
    "recorded earlier": (T0, T0 - timedelta(seconds=1), T0),
    "the same time": (T0, T0, T0),
    "a whole second after its fraction": (
        WHOLE_SECOND - timedelta(microseconds=1),
        WHOLE_SECOND,
        WHOLE_SECOND,
    ),
    "a fraction after a whole second": (
        WHOLE_SECOND,
        WHOLE_SECOND + timedelta(microseconds=1),
        WHOLE_SECOND + timedelta(microseconds=1),
    ),
    "another offset, later": (
        T0,
        (T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5))),
        T0 + timedelta(minutes=1),
    ),
    "another offset, earlier though its text sorts later": (
        T0,
        (T0 - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=5))),
        T0,
    ),
}


@pytest.mark.parametrize(("stored", "recorded", "newest"), CASES.values(), ids=CASES.keys())
def test_a_read_has_the_newer_time(
    stored: datetime | None, recorded: datetime | None, newest: datetime
) -> None:
    document = encode_node(replace(NODE, last_heartbeat_time=stored), SEALER)
    text = recorded.isoformat() if recorded else None

    read = decode_node(NODE.id, 1, document, SEALER, text)
    logged = decode_node(NODE.id, 1, with_heartbeat(document, text), SEALER)

    assert read.last_heartbeat_time == newest
    assert read == replace(NODE, last_heartbeat_time=read.last_heartbeat_time, revision=1)
    assert logged == read


def test_a_document_with_the_newer_time_is_logged_as_it_is() -> None:
    document = encode_node(NODE, SEALER)
    assert with_heartbeat(document, (T0 - timedelta(seconds=1)).isoformat()) is document
    assert json.loads(with_heartbeat(document, None)) == json.loads(document)
