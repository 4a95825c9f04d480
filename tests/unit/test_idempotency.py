"""AIP-155 request ids: the key and fingerprint of a request, and how a collection replays a
create whose request id it has seen before."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from controller.models import (
    Capabilities,
    Credentials,
    DeploymentSpec,
    Node,
    NodeSpec,
    PlacementConstraints,
    Secret,
)
from controller.registry.collection import Collection
from controller.registry.feed import ChangeFeed
from controller.registry.idempotency import request_key
from controller.registry.index import Term
from controller.store.base import RequestKey, Store

# Plain dicts, not `frozen_map`s: see test_a_spec_with_frozen_maps_gets_a_fingerprint.
NODE = NodeSpec(
    provider="aws",
    endpoint="10.0.0.1:7070",
    region="eu",
    capabilities=Capabilities(2.0, 4.0),
    labels={"zone": "a", "tier": "gold"},
    credentials=Credentials(Secret("token-1"), "github", 5),
)
DEPLOYMENT = DeploymentSpec(
    name="web", image="nginx", env={}, constraints=PlacementConstraints(labels={})
)


def test_no_request_id_means_no_key() -> None:
    assert request_key("", NODE) is None
    assert request_key("", NodeSpec("aws", "e", "", None)) is None


VALID_IDS = {
    "one character": "a",
    "128 characters": "x" * 128,
    "every allowed punctuation mark": "A-z_0.9:x",
    "a UUID": "123e4567-e89b-12d3-a456-426614174000",
}


@pytest.mark.parametrize("request_id", VALID_IDS.values(), ids=list(VALID_IDS))
def test_a_valid_request_id_is_kept_as_the_key(request_id: str) -> None:
    key = request_key(request_id, NODE)
    assert key is not None
    assert key.request_id == request_id
    assert len(key.fingerprint) == 64


INVALID_IDS = {
    "129 characters": "x" * 129,
    "a space": "a b",
    "a slash": "a/b",
    "a trailing newline": "abc\n",
    "a non-ASCII letter": "é",
    "ten megabytes": "x" * 10_000_000,
}


@pytest.mark.parametrize("request_id", INVALID_IDS.values(), ids=list(INVALID_IDS))
def test_an_invalid_request_id_is_an_invalid_argument_on_request_id(request_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        request_key(request_id, NODE)
    [violation] = caught.value.violations
    assert violation.field == "request_id"


def fingerprint(spec: object) -> str:
    key = request_key("r", spec)
    assert key is not None
    return key.fingerprint


def test_equal_specs_have_equal_fingerprints() -> None:
    assert fingerprint(NODE) == fingerprint(replace(NODE))
    assert fingerprint(DEPLOYMENT) == fingerprint(replace(DEPLOYMENT))


def test_label_order_does_not_change_the_fingerprint() -> None:
    reordered = replace(NODE, labels={"tier": "gold", "zone": "a"})
    assert fingerprint(reordered) == fingerprint(NODE)


DIFFERENT_NODES: dict[str, NodeSpec] = {
    "another endpoint": replace(NODE, endpoint="10.0.0.2:7070"),
    "another cpu count": replace(NODE, capabilities=Capabilities(3.0, 4.0)),
    "another label value": replace(NODE, labels={"zone": "b", "tier": "gold"}),
    "another token": replace(NODE, credentials=Credentials(Secret("token-2"), "github", 5)),
    "no credentials": replace(NODE, credentials=None),
}


@pytest.mark.parametrize("spec", DIFFERENT_NODES.values(), ids=list(DIFFERENT_NODES))
def test_a_different_spec_has_a_different_fingerprint(spec: NodeSpec) -> None:
    assert fingerprint(spec) != fingerprint(NODE)


def test_the_fingerprint_does_not_reveal_the_token() -> None:
    spec = replace(NODE, credentials=Credentials(Secret("abcdef0123"), "", 0))
    assert "abcdef0123" not in fingerprint(spec)


@pytest.mark.parametrize(
    "spec",
    [NodeSpec("aws", "e", "", Capabilities(1.0, 1.0)), DeploymentSpec(name="web", image="i")],
    ids=["a node spec", "a deployment spec"],
)
def test_a_spec_with_frozen_maps_gets_a_fingerprint(spec: object) -> None:
    # Every spec has frozen maps: they are the defaults, and api/convert.py makes them.
    key = request_key("r", spec)
    assert key is not None
    assert len(key.fingerprint) == 64


# A collection replaying creates, driven with explicit request keys.

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def terms(node: Node) -> Iterable[Term]:
    yield ("provider", node.provider)


def new_node() -> Node:
    return Node(
        id=str(uuid.uuid4()),
        provider="aws",
        endpoint="e",
        region="",
        capabilities=Capabilities(1.0, 1.0),
        create_time=T0,
        update_time=T0,
    )


class Calls:
    """Counts the builds and checks a create makes."""

    def __init__(self) -> None:
        self.builds = 0
        self.checks = 0

    def build(self) -> Node:
        self.builds += 1
        return new_node()

    async def check(self) -> None:
        self.checks += 1


async def loaded(store: Store) -> Collection[Node]:
    feed = ChangeFeed(store)
    collection = Collection[Node]("node", store.nodes, terms, {"provider": None}, feed)
    revision = await store.revision()
    await collection.load()
    feed.start_at(revision)
    return collection


async def test_a_replayed_request_returns_what_it_created_and_builds_nothing(store: Store) -> None:
    collection = await loaded(store)
    calls = Calls()
    first = await collection.create(calls.build, RequestKey("r1", "fp"), calls.check)
    again = await collection.create(calls.build, RequestKey("r1", "fp"), calls.check)

    assert again == first
    assert (calls.builds, calls.checks) == (1, 1)
    assert len(await store.nodes.list_all()) == 1


async def test_a_replay_is_answered_after_a_restart(store: Store) -> None:
    first = await (await loaded(store)).create(new_node, RequestKey("r1", "fp"), Calls().check)
    again = await (await loaded(store)).create(new_node, RequestKey("r1", "fp"), Calls().check)
    assert again == first


async def test_a_request_id_reused_for_another_request_is_an_invalid_argument(
    store: Store,
) -> None:
    collection = await loaded(store)
    await collection.create(new_node, RequestKey("r1", "fp-a"), Calls().check)
    with pytest.raises(InvalidArgumentError) as caught:
        await collection.create(new_node, RequestKey("r1", "fp-b"), Calls().check)
    [violation] = caught.value.violations
    assert violation.field == "request_id"
    assert len(await store.nodes.list_all()) == 1


async def test_a_request_id_whose_resource_was_deleted_is_a_failed_precondition(
    store: Store,
) -> None:
    collection = await loaded(store)
    created = await collection.create(new_node, RequestKey("r1", "fp"), Calls().check)
    await collection.delete(created.id, "", "node_id")
    with pytest.raises(FailedPreconditionError, match="r1"):
        await collection.create(new_node, RequestKey("r1", "fp"), Calls().check)
    assert await store.nodes.list_all() == []


async def test_a_failed_check_creates_nothing_and_records_no_request(store: Store) -> None:
    collection = await loaded(store)

    async def refuse() -> None:
        raise AlreadyExistsError("taken")

    with pytest.raises(AlreadyExistsError):
        await collection.create(new_node, RequestKey("r1", "fp"), refuse)
    assert await store.nodes.find_request("r1") is None
    created = await collection.create(new_node, RequestKey("r1", "fp"), Calls().check)
    assert await store.nodes.list_all() == [created]


async def test_creates_without_a_key_are_never_replayed(store: Store) -> None:
    collection = await loaded(store)
    first = await collection.create(new_node, None, Calls().check)
    second = await collection.create(new_node, None, Calls().check)
    assert first.id != second.id
    assert len(collection.index) == 2
