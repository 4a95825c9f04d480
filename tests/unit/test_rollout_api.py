"""The API side of rolling updates: the registry's generations, rollback and pause on a real
SQLite store and a fake clock, and the conversion and validation of the update strategy and
health check (bad values are INVALID_ARGUMENT naming the field)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_asyncio
from automator67.v1 import deployment_pb2, deployment_service_pb2
from google.protobuf import duration_pb2, field_mask_pb2

from controller.api import convert
from controller.clock import FakeClock
from controller.errors import FailedPreconditionError, InvalidArgumentError
from controller.models import (
    Deployment,
    HealthCheck,
    IntOrPercent,
    RolloutOutcome,
    UpdateStrategy,
)
from controller.registry.deployments import DeploymentRegistry
from controller.store.base import Store

from .test_deployment_updates import SPEC, registry_on, spec


@pytest_asyncio.fixture
async def registry(store: Store, clock: FakeClock) -> DeploymentRegistry:
    return await registry_on(store, clock)


@pytest_asyncio.fixture
async def web(registry: DeploymentRegistry) -> Deployment:
    return await registry.create(SPEC)


async def test_a_new_deployment_is_generation_1_with_its_first_rollout(web: Deployment) -> None:
    assert (web.generation, web.observed_generation, web.template_generation) == (1, 0, 1)
    [first] = web.rollouts
    assert (first.generation, first.template_generation, first.outcome) == (
        1,
        1,
        RolloutOutcome.PROGRESSING,
    )
    assert first.template == web.template


async def test_the_generation_grows_with_spec_changes_only(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    scaled = await registry.update(web.id, spec(replicas=5), ["replicas"])
    assert (scaled.generation, scaled.template_generation) == (2, 1)
    same = await registry.update(web.id, spec(replicas=5), ["replicas"])
    assert same.generation == 2  # no change, no new generation
    paused = await registry.update(web.id, spec(paused=True), ["paused"])
    assert paused.generation == 3 and paused.paused
    check = HealthCheck(tcp_port=8080)
    checked = await registry.update(web.id, spec(health_check=check), ["health_check"])
    assert (checked.generation, checked.template_generation) == (4, 4)
    assert checked.rollouts[-1].template.health_check == check
    assert checked.rollouts[0].outcome is RolloutOutcome.SUPERSEDED


async def test_a_rollback_restores_an_earlier_template_as_a_new_generation(
    registry: DeploymentRegistry, web: Deployment, clock: FakeClock
) -> None:
    done = replace(web.rollouts[0], outcome=RolloutOutcome.COMPLETE, end_time=clock.now())
    registry.stage(replace(registry.get(web.id), rollouts=(done,)))
    v2 = await registry.update(web.id, spec(image="nginx:1.28"), ["image"])
    assert v2.template_generation == 2

    back = await registry.rollback(web.id)

    assert (back.image, back.generation, back.template_generation) == ("nginx:1.27", 3, 1)
    assert [(r.template_generation, r.outcome, r.reason) for r in back.rollouts] == [
        (1, RolloutOutcome.COMPLETE, ""),
        (2, RolloutOutcome.ROLLED_BACK, "ROLLBACK_REQUESTED"),
        (1, RolloutOutcome.PROGRESSING, "ROLLBACK_REQUESTED"),
    ]
    assert registry.get(web.id) == back  # durable like any update
    again = await registry.rollback(web.id, template_generation=2)
    assert (again.image, again.template_generation) == ("nginx:1.28", 2)


async def test_a_rollback_to_a_generation_not_kept_names_the_field(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.rollback(web.id, template_generation=7)
    [violation] = caught.value.violations
    assert violation.field == "rollback.template_generation"
    assert "kept: [1]" in violation.description


async def test_a_paused_deployment_is_resumed_before_a_rollback(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    await registry.update(web.id, spec(paused=True), ["paused"])
    with pytest.raises(FailedPreconditionError, match="resume it"):
        await registry.rollback(web.id)


async def test_resuming_restarts_the_progress_deadline(
    registry: DeploymentRegistry, web: Deployment, clock: FakeClock
) -> None:
    await registry.update(web.id, spec(paused=True), ["paused"])
    clock.advance(3600)
    resumed = await registry.update(web.id, spec(paused=False), ["paused"])
    assert resumed.rollouts[-1].progress_time == clock.now()


def request(**fields: object) -> deployment_service_pb2.CreateDeploymentRequest:
    dep = deployment_pb2.Deployment(name="web", image="nginx", **fields)  # type: ignore[arg-type]
    return deployment_service_pb2.CreateDeploymentRequest(deployment=dep)


def test_the_strategy_and_check_convert_with_kubernetes_defaults() -> None:
    plain = convert.deployment_spec(request())
    assert plain.update_strategy == UpdateStrategy()
    assert plain.health_check is None
    s = deployment_pb2.UpdateStrategy(
        max_unavailable=deployment_pb2.IntOrPercent(count=0),
        max_surge=deployment_pb2.IntOrPercent(percent="50%"),
        min_ready_seconds=5,
        progress_deadline_seconds=60,
    )
    h = deployment_pb2.HealthCheck(
        command=["true"], interval=duration_pb2.Duration(nanos=500_000_000)
    )
    got = convert.deployment_spec(request(update_strategy=s, health_check=h))
    assert got.update_strategy == UpdateStrategy(
        max_unavailable=IntOrPercent(0),
        max_surge=IntOrPercent(50, percent=True),
        min_ready_s=5,
        progress_deadline_s=60,
    )
    assert got.health_check == HealthCheck(command=("true",), interval_s=0.5)


def test_the_rollout_fields_come_back_out() -> None:
    s = deployment_pb2.UpdateStrategy(max_surge=deployment_pb2.IntOrPercent(percent="50%"))
    dep = convert.deployment_to_pb(
        Deployment(
            id="d",
            name="web",
            create_time=FakeClock().now(),
            update_time=FakeClock().now(),
            update_strategy=convert.deployment_spec(request(update_strategy=s)).update_strategy,
            generation=4,
            observed_generation=3,
            template_generation=2,
        )
    )
    assert dep.update_strategy.max_surge.percent == "50%"
    assert dep.update_strategy.max_unavailable.percent == "25%"
    assert dep.update_strategy.progress_deadline_seconds == 600
    assert (dep.generation, dep.observed_generation, dep.template_generation) == (4, 3, 2)


IP = deployment_pb2.IntOrPercent
US = deployment_pb2.UpdateStrategy
HC = deployment_pb2.HealthCheck
# name: (the fields of the request's deployment, the field named in the violation)
BAD: dict[str, tuple[dict[str, object], str]] = {
    "a percentage that is not one": (
        {"update_strategy": US(max_surge=IP(percent="lots"))},
        "deployment.update_strategy.max_surge.percent",
    ),
    "over 100%": (
        {"update_strategy": US(max_unavailable=IP(percent="150%"))},
        "deployment.update_strategy.max_unavailable",
    ),
    "a negative count": (
        {"update_strategy": US(max_surge=IP(count=-1))},
        "deployment.update_strategy.max_surge",
    ),
    "both zero": (
        {"update_strategy": US(max_surge=IP(count=0), max_unavailable=IP(percent="0%"))},
        "deployment.update_strategy.max_unavailable",
    ),
    "a deadline of 0": (
        {"update_strategy": US(progress_deadline_seconds=0)},
        "deployment.update_strategy.progress_deadline_seconds",
    ),
    "a deadline within min ready": (
        {"update_strategy": US(min_ready_seconds=30, progress_deadline_seconds=30)},
        "deployment.update_strategy.progress_deadline_seconds",
    ),
    "a negative min ready": (
        {"update_strategy": US(min_ready_seconds=-1)},
        "deployment.update_strategy.min_ready_seconds",
    ),
    "no history": (
        {"update_strategy": US(revision_history_limit=0)},
        "deployment.update_strategy.revision_history_limit",
    ),
    "a check with neither command nor port": ({"health_check": HC()}, "deployment.health_check"),
    "a check with both": (
        {"health_check": HC(command=["true"], tcp_port=80)},
        "deployment.health_check",
    ),
    "a port out of range": (
        {"health_check": HC(tcp_port=70000)},
        "deployment.health_check.tcp_port",
    ),
    "an interval too short": (
        {"health_check": HC(tcp_port=80, interval=duration_pb2.Duration(nanos=1000))},
        "deployment.health_check.interval",
    ),
    "a negative threshold": (
        {"health_check": HC(tcp_port=80, failure_threshold=-2)},
        "deployment.health_check.failure_threshold",
    ),
}


@pytest.mark.parametrize("name", BAD)
async def test_a_bad_strategy_or_check_is_refused_naming_the_field(
    registry: DeploymentRegistry, name: str
) -> None:
    fields, field = BAD[name]
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.create(convert.deployment_spec(request(**fields)))
    assert field in [v.field for v in caught.value.violations]
    assert registry.count() == 0


async def test_an_update_with_a_bad_strategy_changes_nothing(
    registry: DeploymentRegistry, web: Deployment
) -> None:
    bad = replace(
        SPEC,
        update_strategy=UpdateStrategy(max_surge=IntOrPercent(0), max_unavailable=IntOrPercent(0)),
    )
    with pytest.raises(InvalidArgumentError):
        await registry.update(web.id, bad, ["update_strategy"])
    assert registry.get(web.id) == web


def test_the_update_mask_paths_include_the_rollout_fields() -> None:
    mask = field_mask_pb2.FieldMask(paths=["update_strategy", "health_check", "paused"])
    req = deployment_service_pb2.UpdateDeploymentRequest(
        deployment=deployment_pb2.Deployment(id="d", paused=True), update_mask=mask
    )
    _, values, paths, _ = convert.deployment_update(req)
    assert paths == ["update_strategy", "health_check", "paused"] and values.paused
