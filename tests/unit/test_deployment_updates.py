"""UpdateDeployment in the registry, on a real SQLite store and a fake clock: the field mask, the
etag, which changes are spec changes, and what a deployment being deleted refuses. Also the
registry's side of the heartbeat stream: agents' reports and each node's assignments."""

from __future__ import annotations

import uuid
from dataclasses import replace
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
    Deployment,
    DeploymentSpec,
    DesiredState,
    PlacementConstraints,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
    frozen_map,
)
from controller.registry.deployments import DeploymentRegistry
from controller.registry.replicas import Report
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


@pytest_asyncio.fixture
async def web(registry: DeploymentRegistry) -> Deployment:
    return await registry.create(SPEC)


# name: (the new values, the mask, whether the template changes: a new rollout)
UPDATES: dict[str, tuple[DeploymentSpec, list[str], bool]] = {
    "the replica count alone": (spec(replicas=5), ["replicas"], False),
    "the image": (spec(image="nginx:1.28"), ["image"], True),
    "the command": (spec(command=("httpd",)), ["command"], True),
    "the args": (spec(args=()), ["args"], True),
    "the env": (spec(env=frozen_map({"PORT": "81"})), ["env"], True),
    "the resources": (spec(resources=Resources(1, 1, 1)), ["resources"], True),
    "the constraints": (
        spec(constraints=PlacementConstraints(region="eu-west-1")),
        ["constraints"],
        False,
    ),
    "the strategy": (spec(strategy=PlacementStrategy.BINPACK), ["strategy"], False),
    "the image to the value it has": (SPEC, ["image"], False),
    "the replica count and the image": (
        spec(replicas=1, image="busybox"),
        ["replicas", "image"],
        True,
    ),
}


@pytest.mark.parametrize("name", UPDATES)
async def test_an_update_changes_the_masked_fields_the_generation_and_maybe_the_template(
    registry: DeploymentRegistry, web: Deployment, clock: FakeClock, name: str
) -> None:
    values, paths, spec_changed = UPDATES[name]
    clock.advance(5)
    updated = await registry.update(web.id, values, paths, str(web.revision))
    for path in paths:
        assert getattr(updated, path) == getattr(values, path)
    changed = any(getattr(values, p) != getattr(web, p) for p in paths)
    assert updated.generation == web.generation + (1 if changed else 0)
    assert updated.template_generation == (
        updated.generation if spec_changed else web.template_generation
    )
    assert len(updated.rollouts) == len(web.rollouts) + (1 if spec_changed else 0)
    assert updated.update_time == clock.now()
    assert updated.revision > web.revision
    assert registry.get(web.id) == updated


async def test_fields_outside_the_mask_keep_their_values(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    other = DeploymentSpec(name="other", image="httpd", replicas=9)
    updated = await registry.update(web.id, other, ["replicas"])
    assert updated == replace(
        web,
        replicas=9,
        generation=2,
        revision=updated.revision,
        update_time=updated.update_time,
    )


async def test_an_update_is_durable(
    registry: DeploymentRegistry, web: Deployment, store: Store, clock: FakeClock
) -> None:
    updated = await registry.update(web.id, spec(image="busybox"), ["image"])
    fresh = await registry_on(store, clock)
    assert fresh.get(web.id) == updated
    assert (fresh.get(web.id).image, fresh.get(web.id).template_generation) == ("busybox", 2)


async def test_an_update_wakes_the_scheduler(registry: DeploymentRegistry, web: Deployment) -> None:
    registry.changed.clear()
    await registry.update(web.id, spec(replicas=1), ["replicas"])
    assert registry.changed.is_set()


# name: the mask
BAD_MASKS: dict[str, list[str]] = {
    "an empty mask": [],
    "the name": ["name"],
    "an unknown field": ["colour"],
    "an output-only field": ["status"],
    "the id": ["id"],
    "a nested path": ["resources.cpu_cores"],
    "an unknown field among known ones": ["replicas", "colour"],
}


@pytest.mark.parametrize("name", BAD_MASKS)
async def test_a_bad_mask_is_an_invalid_argument_on_update_mask_and_changes_nothing(
    registry: DeploymentRegistry, web: Deployment, name: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.update(web.id, spec(name="renamed", replicas=1), BAD_MASKS[name])
    assert [v.field for v in caught.value.violations] == ["update_mask"]
    assert registry.get(web.id) == web


async def test_the_error_names_the_updatable_fields(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    with pytest.raises(InvalidArgumentError, match="'name'") as caught:
        await registry.update(web.id, spec(name="renamed"), ["name"])
    description = caught.value.violations[0].description
    for field in ("args", "command", "constraints", "env", "image", "replicas", "resources"):
        assert field in description
    assert "strategy" in description


async def test_an_invalid_new_value_is_an_invalid_argument_on_that_field(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.update(web.id, spec(replicas=-1), ["replicas"])
    assert [v.field for v in caught.value.violations] == ["deployment.replicas"]
    assert registry.get(web.id) == web


async def test_a_stale_etag_is_a_conflict_and_changes_nothing(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    first = await registry.update(web.id, spec(replicas=4), ["replicas"], str(web.revision))
    with pytest.raises(ConflictError):
        await registry.update(web.id, spec(replicas=5), ["replicas"], str(web.revision))
    assert registry.get(web.id) == first
    second = await registry.update(web.id, spec(replicas=5), ["replicas"], str(first.revision))
    assert second.replicas == 5


async def test_without_an_etag_the_update_applies_to_the_latest(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    await registry.update(web.id, spec(replicas=4), ["replicas"])
    latest = await registry.update(web.id, spec(image="busybox"), ["image"])
    assert (latest.replicas, latest.image) == (4, "busybox")


@pytest.mark.parametrize("etag", ["x", "-1", "1.0"])
async def test_a_garbage_etag_is_an_invalid_argument_on_etag(
    registry: DeploymentRegistry, web: Deployment, etag: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.update(web.id, spec(replicas=1), ["replicas"], etag)
    assert [v.field for v in caught.value.violations] == ["etag"]


async def test_updating_an_unknown_deployment_is_not_found(registry: DeploymentRegistry) -> None:
    with pytest.raises(NotFoundError):
        await registry.update(str(uuid.uuid4()), SPEC, ["replicas"])


async def test_updating_with_a_malformed_id_is_an_invalid_argument_on_deployment_id(
    registry: DeploymentRegistry,
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.update("web", SPEC, ["replicas"])
    assert [v.field for v in caught.value.violations] == ["deployment.id"]


async def test_a_deployment_being_deleted_cannot_be_updated(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    stopping = await registry.delete(web.id)
    with pytest.raises(FailedPreconditionError):
        await registry.update(web.id, spec(replicas=1), ["replicas"])
    assert registry.get(web.id) == stopping


# The heartbeat stream's side: reports and assignments


async def placed(registry: DeploymentRegistry, dep: Deployment, *nodes: str) -> Deployment:
    """`dep` with replica i assigned to nodes[i], as the scheduler stages and persists it."""
    replicas = tuple(Replica(i, n, ReplicaState.ASSIGNED) for i, n in enumerate(nodes))
    registry.stage(replace(dep, replica_set=replicas))
    await registry.persist()
    return registry.get(dep.id)


async def test_a_report_is_applied_at_once_and_persisted_with_the_next_batch(
    registry: DeploymentRegistry, web: Deployment, store: Store, clock: FakeClock
) -> None:
    dep = await placed(registry, web, "n1", "n2", "n3")
    registry.changed.clear()
    clock.advance(2)
    registry.report("n2", [Report(dep.id, 1, ReplicaState.RUNNING, "up")])
    assert registry.changed.is_set()
    ((_, replica),) = registry.assignments("n2")
    assert (replica.state, replica.message, replica.state_time) == (
        ReplicaState.RUNNING,
        "up",
        clock.now(),
    )
    assert await registry.persist() == 1
    stored = await store.deployments.get(dep.id)
    assert stored is not None
    assert stored.replica_set[1].state is ReplicaState.RUNNING


REPORTS_IGNORED: dict[str, tuple[str, Report]] = {
    # name: (the reporting node, the report)
    "a report for an unknown deployment": (
        "n1",
        Report(str(uuid.uuid4()), 0, ReplicaState.RUNNING),
    ),
    "a report from a node the replica is not on": ("n9", Report("", 0, ReplicaState.RUNNING)),
    "a report for an index the deployment lacks": ("n1", Report("", 7, ReplicaState.RUNNING)),
    "a report that changes nothing": ("n1", Report("", 0, ReplicaState.ASSIGNED)),
}


@pytest.mark.parametrize("name", REPORTS_IGNORED)
async def test_reports_that_match_no_placement_change_nothing(
    registry: DeploymentRegistry, web: Deployment, name: str
) -> None:
    dep = await placed(registry, web, "n1")
    node_id, report = REPORTS_IGNORED[name]
    report = replace(report, deployment_id=report.deployment_id or dep.id)
    registry.changed.clear()
    registry.report(node_id, [report])
    assert not registry.changed.is_set()
    assert await registry.persist() == 0
    assert registry.get(dep.id) == dep


async def test_assignments_are_every_placement_on_the_node_with_its_deployment(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    other = await registry.create(spec(name="api", replicas=1))
    dep = await placed(registry, web, "n1", "n2", "n1")
    await placed(registry, other, "n2")
    on_n1 = [(d.id, r.index) for d, r in registry.assignments("n1")]
    on_n2 = sorted((d.name, r.index) for d, r in registry.assignments("n2"))
    assert on_n1 == [(dep.id, 0), (dep.id, 2)]
    assert on_n2 == [("api", 0), ("web", 1)]
    assert registry.assignments("n3") == []


async def test_a_deleted_deployment_s_assignments_remain_until_it_is_removed(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    dep = await placed(registry, web, "n1")
    await registry.delete(dep.id)
    assert [r.desired for _, r in registry.assignments("n1")] == [DesiredState.RUN]
    assert registry.drain_touched_nodes() == {"n1"}
    await registry.remove(dep.id)
    assert registry.assignments("n1") == []


async def test_an_update_tells_the_nodes_of_its_placements(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    dep = await placed(registry, web, "n1", "n2")
    registry.drain_touched_nodes()
    await registry.update(dep.id, spec(image="busybox"), ["image"])
    assert registry.drain_touched_nodes() == {"n1", "n2"}
    assert registry.drain_touched_nodes() == set()
