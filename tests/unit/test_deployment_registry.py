"""The deployment registry on a real SQLite store and a fake clock: create, unique names, get,
list, delete, stats, idempotent creation, and a restart that loads the same state."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio

from controller.clock import FakeClock
from controller.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from controller.models import (
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    PlacementConstraints,
    PlacementStrategy,
    Replica,
    Resources,
    frozen_map,
)
from controller.registry.deployments import DeploymentRegistry
from controller.store.base import Store

SPEC = DeploymentSpec(
    name="web",
    image="nginx:1.27",
    command=("nginx",),
    args=("-g", "daemon off;"),
    env=frozen_map({"PORT": "80"}),
    resources=Resources(cpu_cores=0.5, memory_gb=1.0, disk_gb=2.0),
    replicas=3,
    constraints=PlacementConstraints("aws", "us-east-1", frozen_map({"zone": "a"})),
    strategy=PlacementStrategy.SPREAD,
)


def spec(**changes: Any) -> DeploymentSpec:
    return replace(SPEC, **changes)


async def registry_on(store: Store, clock: FakeClock) -> DeploymentRegistry:
    registry = DeploymentRegistry(store, clock)
    await registry.load()
    return registry


@pytest_asyncio.fixture
async def registry(store: Store, clock: FakeClock) -> DeploymentRegistry:
    return await registry_on(store, clock)


async def test_a_new_deployment_is_pending_with_the_clock_s_time_and_a_uuid(
    registry: DeploymentRegistry, clock: FakeClock
) -> None:
    dep = await registry.create(SPEC)

    assert dep.status is DeploymentStatus.PENDING
    assert dep.status_reason
    assert dep.node_ids == ()
    assert dep.create_time == dep.update_time == clock.now()
    assert str(uuid.UUID(dep.id)) == dep.id
    assert dep.revision > 0
    assert (dep.name, dep.image, dep.command, dep.args) == (
        SPEC.name,
        SPEC.image,
        SPEC.command,
        SPEC.args,
    )
    assert dep.env == {"PORT": "80"}
    assert (dep.resources, dep.replicas, dep.strategy) == (
        SPEC.resources,
        SPEC.replicas,
        SPEC.strategy,
    )
    assert dep.constraints == SPEC.constraints
    assert registry.get(dep.id) == dep


async def test_an_invalid_spec_creates_nothing(registry: DeploymentRegistry, store: Store) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.create(spec(name="Web", replicas=-1))
    fields = sorted(v.field for v in caught.value.violations)
    assert fields == ["deployment.name", "deployment.replicas"]
    assert registry.stats().total == 0
    assert await store.deployments.list_all() == []


async def test_a_duplicate_name_already_exists(registry: DeploymentRegistry, store: Store) -> None:
    await registry.create(SPEC)
    with pytest.raises(AlreadyExistsError, match="web"):
        await registry.create(spec(image="httpd"))
    assert registry.stats().total == 1
    assert len(await store.deployments.list_all()) == 1


async def test_a_name_is_free_again_once_its_deployment_is_deleted(
    registry: DeploymentRegistry,
) -> None:
    first = await registry.create(SPEC)
    await registry.delete(first.id)
    with pytest.raises(AlreadyExistsError):  # STOPPING: the name is still in use
        await registry.create(SPEC)
    await registry.remove(first.id)  # what the scheduler does once its replicas stopped
    second = await registry.create(SPEC)
    assert second.id != first.id
    assert registry.get(second.id).name == "web"


async def test_concurrent_creates_of_one_name_make_exactly_one_deployment(
    registry: DeploymentRegistry, store: Store
) -> None:
    results = await asyncio.gather(
        *(registry.create(spec(image=f"img-{i}")) for i in range(5)), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, Deployment)]
    refused = [r for r in results if isinstance(r, AlreadyExistsError)]
    assert (len(created), len(refused)) == (1, 4)
    assert await store.deployments.list_all() == created


async def test_a_name_taken_only_in_the_store_is_refused_after_a_restart(
    registry: DeploymentRegistry, store: Store, clock: FakeClock
) -> None:
    await registry.create(SPEC)
    restarted = await registry_on(store, clock)
    with pytest.raises(AlreadyExistsError):
        await restarted.create(SPEC)


async def test_getting_an_unknown_deployment_is_not_found(registry: DeploymentRegistry) -> None:
    with pytest.raises(NotFoundError) as caught:
        registry.get(str(uuid.uuid4()))
    assert caught.value.kind == "deployment"


MALFORMED_IDS = {
    "empty": "",
    "a name": "web",
    "upper case": "123E4567-E89B-12D3-A456-426614174000",
    "no dashes": "123e4567e89b12d3a456426614174000",
    "ten megabytes": "f" * 10_000_000,
}


@pytest.mark.parametrize("deployment_id", MALFORMED_IDS.values(), ids=list(MALFORMED_IDS))
async def test_a_malformed_id_is_an_invalid_argument_on_deployment_id(
    registry: DeploymentRegistry, deployment_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as get_error:
        registry.get(deployment_id)
    with pytest.raises(InvalidArgumentError) as delete_error:
        await registry.delete(deployment_id)
    for error in (get_error.value, delete_error.value):
        assert [v.field for v in error.violations] == ["deployment_id"]


# Deployments to list: (name, status, constraint provider, constraint region, replicas, placed)
FLEET: list[tuple[str, DeploymentStatus, str, str, int, int]] = [
    ("api", DeploymentStatus.RUNNING, "aws", "us-east-1", 3, 3),
    ("web", DeploymentStatus.RUNNING, "aws", "eu-west-1", 2, 2),
    ("batch", DeploymentStatus.PENDING, "", "", 1, 0),
    ("cron", DeploymentStatus.SCHEDULED, "gcp", "us-east-1", 2, 1),
    ("old", DeploymentStatus.STOPPED, "gcp", "", 0, 0),
    ("bad", DeploymentStatus.FAILED, "aws", "", 4, 0),
]


def fleet_deployment(
    clock: FakeClock,
    name: str,
    status: DeploymentStatus,
    provider: str,
    region: str,
    replicas: int,
    placed: int,
) -> Deployment:
    return Deployment(
        id=str(uuid.uuid4()),
        name=name,
        image="busybox",
        replicas=replicas,
        constraints=PlacementConstraints(provider, region),
        status=status,
        replica_set=tuple(Replica(i, str(uuid.uuid4())) for i in range(placed)),
        create_time=clock.now(),
        update_time=clock.now(),
    )


@pytest_asyncio.fixture
async def fleet(store: Store, clock: FakeClock) -> tuple[DeploymentRegistry, list[Deployment]]:
    """A registry loaded from a store holding FLEET, with statuses only the store can give."""
    stored = [await store.deployments.create(fleet_deployment(clock, *row)) for row in FLEET]
    return await registry_on(store, clock), stored


def names(deployments: list[Deployment]) -> list[str]:
    return sorted(d.name for d in deployments)


FILTERS: dict[str, tuple[str, list[str]]] = {
    "no filter": ("", ["api", "bad", "batch", "cron", "old", "web"]),
    "by name": ("name = cron", ["cron"]),
    "by a quoted name": ('name = "web"', ["web"]),
    "by an unknown name": ("name = nope", []),
    "by status": ("status = RUNNING", ["api", "web"]),
    "by status in the full form": ("status = DEPLOYMENT_STATUS_FAILED", ["bad"]),
    "by status in lower case": ("status = stopped", ["old"]),
    "by provider": ("provider = gcp", ["cron", "old"]),
    "by empty provider": ('provider = ""', ["batch"]),
    "by region": ("region = us-east-1", ["api", "cron"]),
    "by provider and status": ("provider = aws AND status = RUNNING", ["api", "web"]),
    "by provider and region": ('provider = aws AND region = ""', ["bad"]),
}


@pytest.mark.parametrize(("text", "expected"), FILTERS.values(), ids=list(FILTERS))
async def test_listing_with_a_filter_returns_exactly_the_matching_deployments(
    fleet: tuple[DeploymentRegistry, list[Deployment]], text: str, expected: list[str]
) -> None:
    registry, _ = fleet
    page = registry.list(text)
    assert names(page.items) == expected
    assert page.next_page_token == ""


@pytest.mark.parametrize("text", ["labels.zone = a", "status = READY", "image = nginx"])
async def test_listing_by_a_field_deployments_lack_is_an_invalid_argument_on_filter(
    registry: DeploymentRegistry, text: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list(text)
    assert [v.field for v in caught.value.violations] == ["filter"]


@pytest.mark.parametrize("size", [1, 2, 4, 5, 6, 7])
async def test_paging_walks_every_deployment_exactly_once_in_id_order(
    fleet: tuple[DeploymentRegistry, list[Deployment]], size: int
) -> None:
    registry, stored = fleet
    walked: list[str] = []
    token = ""
    pages = 0
    while True:
        page = registry.list("", size, token)
        assert len(page.items) <= size
        walked += [d.id for d in page.items]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert walked == sorted(d.id for d in stored)
    assert pages == -(-len(stored) // size)


async def test_a_page_token_is_refused_with_another_filter(
    fleet: tuple[DeploymentRegistry, list[Deployment]],
) -> None:
    registry, _ = fleet
    token = registry.list("", 1).next_page_token
    with pytest.raises(InvalidArgumentError) as caught:
        registry.list("status = RUNNING", 1, token)
    assert [v.field for v in caught.value.violations] == ["page_token"]


async def test_deleting_marks_the_deployment_stopping_with_its_reason(
    registry: DeploymentRegistry, clock: FakeClock, store: Store
) -> None:
    dep = await registry.create(SPEC)
    clock.advance(2)
    stopping = await registry.delete(dep.id, str(dep.revision))
    assert stopping.status is DeploymentStatus.STOPPING
    assert [(h.status, h.time) for h in stopping.history] == [
        (DeploymentStatus.PENDING, dep.create_time),
        (DeploymentStatus.STOPPING, clock.now()),
    ]
    assert await store.deployments.get(dep.id) == stopping
    assert await registry.delete(dep.id) == stopping  # deleting again changes nothing


async def test_deleting_with_the_current_etag_then_removing_removes_the_deployment(
    registry: DeploymentRegistry, store: Store
) -> None:
    dep = await registry.create(SPEC)
    await registry.delete(dep.id, str(dep.revision))
    await registry.remove(dep.id)
    with pytest.raises(NotFoundError):
        registry.get(dep.id)
    assert registry.list().items == []
    assert await store.deployments.get(dep.id) is None


async def test_deleting_with_a_stale_etag_is_a_conflict_and_keeps_the_deployment(
    registry: DeploymentRegistry,
) -> None:
    dep = await registry.create(SPEC)
    with pytest.raises(ConflictError):
        await registry.delete(dep.id, str(dep.revision + 1))
    assert registry.get(dep.id) == dep


@pytest.mark.parametrize("etag", ["x", "-3", "1e3", "0x1"])
async def test_deleting_with_a_garbage_etag_is_an_invalid_argument_on_etag(
    registry: DeploymentRegistry, etag: str
) -> None:
    dep = await registry.create(SPEC)
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.delete(dep.id, etag)
    assert [v.field for v in caught.value.violations] == ["etag"]
    assert registry.get(dep.id) == dep


async def test_deleting_an_unknown_deployment_is_not_found(registry: DeploymentRegistry) -> None:
    with pytest.raises(NotFoundError):
        await registry.delete(str(uuid.uuid4()), "1")


async def test_the_same_request_id_and_spec_return_the_same_deployment_and_create_nothing(
    registry: DeploymentRegistry, clock: FakeClock, store: Store
) -> None:
    first = await registry.create(SPEC, request_id="req-1")
    clock.advance(5)
    # The name is taken by now: a replay must answer before the name check.
    again = await registry.create(SPEC, request_id="req-1")
    assert again == first
    assert len(await store.deployments.list_all()) == 1


async def test_the_same_request_id_with_another_spec_is_an_invalid_argument_on_request_id(
    registry: DeploymentRegistry,
) -> None:
    await registry.create(SPEC, request_id="req-1")
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.create(spec(name="other"), request_id="req-1")
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert registry.stats().total == 1


async def test_the_request_id_of_a_deleted_deployment_is_a_failed_precondition(
    registry: DeploymentRegistry,
) -> None:
    dep = await registry.create(SPEC, request_id="req-1")
    await registry.delete(dep.id)
    await registry.remove(dep.id)
    with pytest.raises(FailedPreconditionError):
        await registry.create(SPEC, request_id="req-1")
    assert registry.stats().total == 0


async def test_a_malformed_request_id_is_an_invalid_argument_on_request_id(
    registry: DeploymentRegistry,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.create(SPEC, request_id="x" * 129)
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert registry.stats().total == 0


async def test_stats_count_deployments_and_replicas(
    fleet: tuple[DeploymentRegistry, list[Deployment]],
) -> None:
    registry, _ = fleet
    stats = registry.stats()
    assert stats.total == 6
    assert stats.by_status == {
        "RUNNING": 2,
        "PENDING": 1,
        "SCHEDULED": 1,
        "STOPPED": 1,
        "FAILED": 1,
    }
    assert stats.replicas_requested == 12
    assert stats.replicas_placed == 6


async def test_stats_follow_creates_and_deletes(registry: DeploymentRegistry) -> None:
    a = await registry.create(SPEC)
    await registry.create(spec(name="db", replicas=0))
    await registry.delete(a.id)
    await registry.remove(a.id)
    stats = registry.stats()
    assert (stats.total, stats.by_status, stats.replicas_requested) == (1, {"PENDING": 1}, 0)


async def test_a_registry_loaded_from_the_same_store_sees_the_same_deployments(
    registry: DeploymentRegistry, store: Store, clock: FakeClock
) -> None:
    kept = await registry.create(SPEC)
    clock.advance(3)
    other = await registry.create(spec(name="db", strategy=PlacementStrategy.BINPACK))
    gone = await registry.create(spec(name="tmp"))
    await registry.delete(gone.id)
    await registry.remove(gone.id)

    restarted = await registry_on(store, clock)

    assert restarted.get(kept.id) == kept
    assert restarted.get(other.id) == other
    with pytest.raises(NotFoundError):
        restarted.get(gone.id)
    assert restarted.list().items == registry.list().items
    assert restarted.list("name = db").items == [other]
    assert restarted.stats() == registry.stats()
