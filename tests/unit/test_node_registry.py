"""The node registry on a real SQLite store and a fake clock: register, get, list, delete, stats,
idempotent registration, and a restart that loads the same state."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio

from controller.clock import FakeClock
from controller.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from controller.models import (
    Capabilities,
    Credentials,
    Node,
    NodeSpec,
    NodeStatus,
    Resources,
    Secret,
    frozen_map,
)
from controller.registry.collection import PARSED_FILTERS
from controller.registry.nodes import NodeRegistry
from controller.store.base import Store

SPEC = NodeSpec(
    provider="render",
    endpoint="https://api.render.com",
    region="us-east-1",
    capabilities=Capabilities(
        cpu_cores=4.0, memory_gb=8.0, disk_gb=50.0, network_bandwidth="1Gbps"
    ),
    labels=frozen_map({"zone": "a"}),
    credentials=Credentials(Secret("token123"), "github", 1_700_000_000_000),
)


def spec(**changes: Any) -> NodeSpec:
    return replace(SPEC, **changes)


async def registry_on(store: Store, clock: FakeClock) -> NodeRegistry:
    registry = NodeRegistry(store, clock)
    await registry.load()
    return registry


@pytest_asyncio.fixture
async def registry(store: Store, clock: FakeClock) -> NodeRegistry:
    return await registry_on(store, clock)


def is_canonical_uuid(text: str) -> bool:
    return str(uuid.UUID(text)) == text


async def test_a_registered_node_is_pending_with_the_clock_s_time_and_a_uuid(
    registry: NodeRegistry, clock: FakeClock
) -> None:
    node = await registry.register(SPEC)

    assert node.status is NodeStatus.PENDING
    assert node.create_time == node.update_time == clock.now()
    assert is_canonical_uuid(node.id)
    assert node.revision > 0
    assert node.last_heartbeat_time is None
    assert (node.provider, node.endpoint, node.region) == (
        SPEC.provider,
        SPEC.endpoint,
        SPEC.region,
    )
    assert node.capabilities == SPEC.capabilities
    assert node.labels == {"zone": "a"}
    assert node.credentials == SPEC.credentials
    assert registry.get(node.id) == node


async def test_each_registration_makes_a_new_node_at_the_time_it_happened(
    registry: NodeRegistry, clock: FakeClock
) -> None:
    first = await registry.register(SPEC)
    clock.advance(90)
    second = await registry.register(SPEC)

    assert first.id != second.id
    assert second.create_time - first.create_time == timedelta(seconds=90)
    assert second.revision > first.revision
    assert registry.stats().total == 2


async def test_an_invalid_spec_registers_nothing(registry: NodeRegistry, store: Store) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.register(spec(provider="", capabilities=None))
    assert sorted(v.field for v in caught.value.violations) == [
        "node.capabilities",
        "node.provider",
    ]
    assert registry.stats().total == 0
    assert await store.nodes.list_all() == []


async def test_getting_an_unknown_node_is_not_found(registry: NodeRegistry) -> None:
    await registry.register(SPEC)
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as caught:
        registry.get(unknown)
    assert (caught.value.kind, caught.value.resource_id) == ("node", unknown)


MALFORMED_IDS = {
    "empty": "",
    "a word": "node-1",
    "upper case": "123E4567-E89B-12D3-A456-426614174000",
    "no dashes": "123e4567e89b12d3a456426614174000",
    "braces": "{123e4567-e89b-12d3-a456-426614174000}",
    "a urn": "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
    "one character short": "123e4567-e89b-12d3-a456-42661417400",
    "spaces around": " 123e4567-e89b-12d3-a456-426614174000 ",
    "ten megabytes": "a" * 10_000_000,
}


@pytest.mark.parametrize("node_id", MALFORMED_IDS.values(), ids=list(MALFORMED_IDS))
async def test_a_malformed_id_is_an_invalid_argument_on_node_id(
    registry: NodeRegistry, node_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as get_error:
        registry.get(node_id)
    with pytest.raises(InvalidArgumentError) as delete_error:
        await registry.delete(node_id)
    for error in (get_error.value, delete_error.value):
        [violation] = error.violations
        assert violation.field == "node_id"


# A fleet to list: (provider, region, zone label or None, status)
FLEET: list[tuple[str, str, str | None, NodeStatus]] = [
    ("aws", "us-east-1", "a", NodeStatus.READY),
    ("aws", "us-east-1", "b", NodeStatus.READY),
    ("aws", "eu-west-1", "a", NodeStatus.PENDING),
    ("gcp", "us-east-1", None, NodeStatus.OFFLINE),
    ("gcp", "eu-west-1", "b", NodeStatus.SUSPECT),
    ("render", "", "c", NodeStatus.READY),
    ("render", "", None, NodeStatus.PENDING),
]


def fleet_node(
    clock: FakeClock, provider: str, region: str, zone: str | None, status: NodeStatus
) -> Node:
    return Node(
        id=str(uuid.uuid4()),
        provider=provider,
        endpoint=f"{provider}.example:7070",
        region=region,
        capabilities=Capabilities(cpu_cores=2.0, memory_gb=4.0, disk_gb=10.0),
        labels=frozen_map({"zone": zone} if zone else {}),
        status=status,
        create_time=clock.now(),
        update_time=clock.now(),
    )


@pytest_asyncio.fixture
async def fleet(store: Store, clock: FakeClock) -> tuple[NodeRegistry, list[Node]]:
    """A registry loaded from a store holding FLEET, with statuses only the store can give."""
    stored = [await store.nodes.create(fleet_node(clock, *row)) for row in FLEET]
    return await registry_on(store, clock), stored


def keys(nodes: list[Node]) -> list[tuple[str, str, str | None, NodeStatus]]:
    return sorted(
        ((n.provider, n.region, n.labels.get("zone"), n.status) for n in nodes),
        key=repr,
    )


FILTERS: dict[str, tuple[str, list[int]]] = {
    "no filter": ("", [0, 1, 2, 3, 4, 5, 6]),
    "by status": ("status = READY", [0, 1, 5]),
    "by status in the full form": ("status = NODE_STATUS_PENDING", [2, 6]),
    "by status in lower case": ("status = offline", [3]),
    "by provider": ("provider = gcp", [3, 4]),
    "by region": ("region = eu-west-1", [2, 4]),
    "by empty region": ('region = ""', [5, 6]),
    "by label": ("labels.zone = a", [0, 2]),
    "by an unknown label": ("labels.rack = 1", []),
    "by provider and status": ("provider = aws AND status = READY", [0, 1]),
    "by region and label": ('region = "us-east-1" AND labels.zone = b', [1]),
    "by three terms": ("provider = aws AND region = us-east-1 AND labels.zone = a", [0]),
    "by a provider nobody has": ("provider = azure", []),
}


@pytest.mark.parametrize(("text", "expected"), FILTERS.values(), ids=list(FILTERS))
async def test_listing_with_a_filter_returns_exactly_the_matching_nodes(
    fleet: tuple[NodeRegistry, list[Node]], text: str, expected: list[int]
) -> None:
    registry, stored = fleet
    page = registry.list(text)
    assert keys(page.items) == keys([stored[i] for i in expected])
    assert page.next_page_token == ""


async def test_the_same_filter_listed_again_and_again_gives_the_same_nodes(
    fleet: tuple[NodeRegistry, list[Node]],
) -> None:
    # Each filter's terms are parsed once and kept (a bounded number of distinct filters).
    registry, stored = fleet
    wanted = keys([stored[0], stored[1]])
    for _ in range(2):
        assert keys(registry.list("provider = aws AND status = READY").items) == wanted
    for i in range(PARSED_FILTERS + 10):  # more distinct filters than are kept
        assert registry.list(f"labels.n{i} = x").items == []
    assert keys(registry.list("provider = aws AND status = READY").items) == wanted
    for _ in range(2):  # an invalid filter is refused every time, never kept
        with pytest.raises(InvalidArgumentError):
            registry.list("colour = red")


async def test_listing_orders_nodes_by_id(fleet: tuple[NodeRegistry, list[Node]]) -> None:
    registry, stored = fleet
    assert [n.id for n in registry.list().items] == sorted(n.id for n in stored)


async def test_listing_an_invalid_filter_is_an_invalid_argument_on_filter(
    registry: NodeRegistry,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list("colour = red")
    assert [v.field for v in caught.value.violations] == ["filter"]


def walk(registry: NodeRegistry, filter_text: str, page_size: int) -> list[list[Node]]:
    pages = []
    token = ""
    while True:
        page = registry.list(filter_text, page_size, token)
        pages.append(page.items)
        token = page.next_page_token
        if not token:
            return pages


WALKS: dict[str, tuple[str, int, list[int]]] = {
    "pages of one": ("", 1, [1] * 7),
    "pages of three": ("", 3, [3, 3, 1]),
    "a size that divides the total leaves no empty page": ("status = READY", 3, [3]),
    "pages of two of a filtered list": ("provider = aws", 2, [2, 1]),
    "one page bigger than the list": ("", 100, [7]),
    "the default size": ("", 0, [7]),
    "an empty list is one empty page": ("provider = azure", 2, [0]),
}


@pytest.mark.parametrize(("text", "size", "sizes"), WALKS.values(), ids=list(WALKS))
async def test_paging_walks_every_matching_node_exactly_once(
    fleet: tuple[NodeRegistry, list[Node]], text: str, size: int, sizes: list[int]
) -> None:
    registry, _ = fleet
    pages = walk(registry, text, size)
    assert [len(p) for p in pages] == sizes
    walked = [n.id for page in pages for n in page]
    assert walked == [n.id for n in registry.list(text, 1000).items]


async def test_paging_survives_a_deletion_between_pages(
    fleet: tuple[NodeRegistry, list[Node]],
) -> None:
    registry, stored = fleet
    everything = sorted(n.id for n in stored)
    first = registry.list("", 3)
    await registry.delete(first.items[-1].id)
    await registry.delete(everything[3])
    second = registry.list("", 3, first.next_page_token)
    assert [n.id for n in second.items] == everything[4:7]
    assert second.next_page_token == ""


async def test_a_page_token_is_refused_with_another_filter(
    fleet: tuple[NodeRegistry, list[Node]],
) -> None:
    registry, _ = fleet
    token = registry.list("provider = aws", 1).next_page_token
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list("provider = gcp", 1, token)
    assert [v.field for v in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize("token", ["garbage", "AAAA", "e30"])
async def test_a_garbage_page_token_is_an_invalid_argument_on_page_token(
    registry: NodeRegistry, token: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list("", 10, token)
    assert [v.field for v in caught.value.violations] == ["page_token"]


async def test_a_negative_page_size_is_an_invalid_argument_on_page_size(
    registry: NodeRegistry,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list("", -1)
    assert [v.field for v in caught.value.violations] == ["page_size"]


async def test_deleting_without_an_etag_removes_the_node(
    registry: NodeRegistry, store: Store
) -> None:
    node = await registry.register(SPEC)
    await registry.delete(node.id)

    with pytest.raises(NotFoundError):
        registry.get(node.id)
    assert registry.list().items == []
    assert registry.stats().total == 0
    assert await store.nodes.get(node.id) is None


async def test_deleting_with_the_current_etag_removes_the_node(registry: NodeRegistry) -> None:
    node = await registry.register(SPEC)
    await registry.delete(node.id, str(node.revision))
    with pytest.raises(NotFoundError):
        registry.get(node.id)


async def test_deleting_with_a_stale_etag_is_a_conflict_and_keeps_the_node(
    fleet: tuple[NodeRegistry, list[Node]], store: Store
) -> None:
    registry, stored = fleet
    node = stored[0]
    stale = str(node.revision - 1) if node.revision > 1 else str(node.revision + 100)
    with pytest.raises(ConflictError):
        await registry.delete(node.id, stale)
    assert registry.get(node.id) == node
    assert await store.nodes.get(node.id) == node


GARBAGE_ETAGS = {
    "a word": "abc",
    "a negative number": "-1",
    "a decimal": "1.5",
    "spaces around": " 1 ",
    "a quoted etag": '"1"',
    "a weak etag": 'W/"1"',
}


@pytest.mark.parametrize("etag", GARBAGE_ETAGS.values(), ids=list(GARBAGE_ETAGS))
async def test_deleting_with_a_garbage_etag_is_an_invalid_argument_on_etag(
    registry: NodeRegistry, etag: str
) -> None:
    node = await registry.register(SPEC)
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.delete(node.id, etag)
    assert [v.field for v in caught.value.violations] == ["etag"]
    assert registry.get(node.id) == node


@pytest.mark.parametrize("etag", ["²", "9" * 5000], ids=["a superscript digit", "5000 digits"])
async def test_deleting_with_a_digit_like_etag_is_an_invalid_argument_on_etag(
    registry: NodeRegistry, etag: str
) -> None:
    node = await registry.register(SPEC)
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.delete(node.id, etag)
    assert [v.field for v in caught.value.violations] == ["etag"]


async def test_deleting_an_unknown_node_is_not_found(registry: NodeRegistry) -> None:
    with pytest.raises(NotFoundError):
        await registry.delete(str(uuid.uuid4()))


async def test_deleting_twice_is_not_found_the_second_time(registry: NodeRegistry) -> None:
    node = await registry.register(SPEC)
    await registry.delete(node.id)
    with pytest.raises(NotFoundError):
        await registry.delete(node.id)


async def test_a_malformed_request_id_is_an_invalid_argument_and_registers_nothing(
    registry: NodeRegistry,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.register(SPEC, request_id="not valid!")
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert registry.stats().total == 0


async def test_the_same_request_id_and_spec_return_the_same_node_and_create_nothing(
    registry: NodeRegistry, clock: FakeClock, store: Store
) -> None:
    first = await registry.register(SPEC, request_id="req-1")
    clock.advance(5)
    again = await registry.register(SPEC, request_id="req-1")

    assert again == first
    assert registry.stats().total == 1
    assert len(await store.nodes.list_all()) == 1


async def test_the_same_request_id_with_another_spec_is_an_invalid_argument_on_request_id(
    registry: NodeRegistry,
) -> None:
    await registry.register(SPEC, request_id="req-1")
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.register(spec(endpoint="https://other"), request_id="req-1")
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert registry.stats().total == 1


async def test_the_same_request_id_with_another_token_is_another_request(
    registry: NodeRegistry,
) -> None:
    await registry.register(SPEC, request_id="req-1")
    other_token = spec(credentials=Credentials(Secret("token456"), "github", 1_700_000_000_000))
    with pytest.raises(InvalidArgumentError):
        await registry.register(other_token, request_id="req-1")


async def test_the_request_id_of_a_deleted_node_is_a_failed_precondition(
    registry: NodeRegistry,
) -> None:
    node = await registry.register(SPEC, request_id="req-1")
    await registry.delete(node.id)
    with pytest.raises(FailedPreconditionError):
        await registry.register(SPEC, request_id="req-1")
    assert registry.stats().total == 0


async def test_a_request_id_is_remembered_across_a_restart(
    registry: NodeRegistry, store: Store, clock: FakeClock
) -> None:
    first = await registry.register(SPEC, request_id="req-1")
    restarted = await registry_on(store, clock)
    assert await restarted.register(SPEC, request_id="req-1") == first
    assert restarted.stats().total == 1


async def test_stats_count_nodes_and_sum_capacity(
    fleet: tuple[NodeRegistry, list[Node]],
) -> None:
    registry, _ = fleet
    stats = registry.stats()

    assert stats.total == 7
    assert stats.by_status == {"READY": 3, "PENDING": 2, "OFFLINE": 1, "SUSPECT": 1}
    assert stats.by_provider == {"aws": 3, "gcp": 2, "render": 2}
    assert stats.by_region == {"us-east-1": 3, "eu-west-1": 2, "": 2}
    assert stats.total_capacity == Resources(cpu_cores=14.0, memory_gb=28.0, disk_gb=70.0)
    assert stats.ready_capacity == Resources(cpu_cores=6.0, memory_gb=12.0, disk_gb=30.0)


async def test_stats_of_an_empty_registry_are_zero(registry: NodeRegistry) -> None:
    stats = registry.stats()
    assert stats.total == 0
    assert not stats.by_status
    assert stats.total_capacity == stats.ready_capacity == Resources()


async def test_stats_follow_registrations_and_deletions(registry: NodeRegistry) -> None:
    a = await registry.register(SPEC)
    await registry.register(spec(provider="gcp", capabilities=Capabilities(1.0, 2.0)))
    await registry.delete(a.id)

    stats = registry.stats()
    assert stats.total == 1
    assert stats.by_provider == {"gcp": 1}
    assert stats.by_status == {"PENDING": 1}
    assert stats.total_capacity == Resources(cpu_cores=1.0, memory_gb=2.0, disk_gb=0.0)
    assert stats.ready_capacity == Resources()


async def test_a_registry_loaded_from_the_same_store_sees_the_same_nodes(
    registry: NodeRegistry, store: Store, clock: FakeClock
) -> None:
    kept = await registry.register(SPEC)
    clock.advance(1)
    other = await registry.register(spec(provider="gcp", labels=frozen_map({"zone": "b"})))
    clock.advance(1)
    gone = await registry.register(spec(provider="aws"))
    await registry.delete(gone.id)

    restarted = await registry_on(store, clock)

    assert restarted.get(kept.id) == kept
    assert restarted.get(other.id) == other
    with pytest.raises(NotFoundError):
        restarted.get(gone.id)
    assert restarted.list().items == registry.list().items
    assert restarted.list("labels.zone = b").items == [other]
    assert restarted.stats() == registry.stats()
