"""Rolling updates with real exec agents (issue 14): 4 replicas of a stand-in TCP service
(standin_service.py) whose health check is a real command; a `Sampler` connects to every
running service over and over while the deployment is updated, and records how many answered.

- an update never leaves fewer than `replicas - max_unavailable` services answering, never runs
  more than `replicas + max_surge` placements, and ends with every service on the new version;
- a new version whose health check fails is rolled back on its own, with the reason, and the
  services keep answering throughout;
- a paused rollout makes no progress (while the scheduler demonstrably runs: another
  deployment is placed meanwhile), and resumes to completion.

Waits are for watch events with generous timeouts; the sampler's cadence is an observation
rate, not a wait for state."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio
from automator67.aio import AsyncClient
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds
from google.protobuf import duration_pb2

from .test_orchestration import (  # noqa: F401  (fixtures)
    Cluster,
    Env,
    StartAgent,
    cluster_client,
    start_agent,
    start_fleet,
)

STANDIN = Path(__file__).with_name("standin_service.py")
REPLICAS = 4
ROLLOUT_S = 180.0  # a whole rollout on a loaded 2-core machine, generously
COMPLETE = dpb.ROLLOUT_OUTCOME_COMPLETE
ROLLED_BACK = dpb.ROLLOUT_OUTCOME_ROLLED_BACK
PROGRESSING = dpb.ROLLOUT_OUTCOME_PROGRESSING
SERVING = (dpb.REPLICA_STATE_ASSIGNED, dpb.REPLICA_STATE_STARTING, dpb.REPLICA_STATE_RUNNING)


class Sampler:
    """Connects to every stand-in whose port file exists, again and again; `samples` holds,
    per round, the versions that answered. `on_sample` is called after each round (the
    cluster's waiters wake on it: no watch event says that a stand-in answers)."""

    def __init__(self, port_dir: Path, on_sample: Callable[[], None]) -> None:
        self.port_dir = port_dir
        self.samples: list[list[str]] = []
        self._on_sample = on_sample
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def since(self, start: int) -> list[int]:
        return [len(sample) for sample in self.samples[start:]]

    async def _run(self) -> None:
        while True:
            files = [p for p in self.port_dir.iterdir() if not p.name.startswith(".")]
            answers = await asyncio.gather(*(_ask(p) for p in files))
            self.samples.append(sorted(a for a in answers if a is not None))
            self._on_sample()
            await asyncio.sleep(0.05)


async def _ask(port_file: Path) -> str | None:
    """The version a stand-in answers, or None if it refuses. The timeouts are generous: a
    loaded machine may be slow to schedule a stand-in, which is not the same as not serving."""
    try:
        port = int(await asyncio.to_thread(port_file.read_text))
        connecting = asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.wait_for(connecting, 15)
    except (OSError, ValueError, TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), 15)
    except (OSError, TimeoutError):
        line = b""
    finally:
        writer.close()
    return line.decode().strip() if line else None


class Placements:
    """Follows one deployment's watch events; `most` is the most placements that ran or were
    on their way to run (desired RUN) in any event."""

    def __init__(self, client: AsyncClient, deployment_id: str) -> None:
        self.most = 0
        self._id = deployment_id
        self._watch = client.watch_deployments()
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self._watch.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async for event in self._watch:
            dep = event.deployment
            if event.type != ds.DEPLOYMENT_EVENT_TYPE_CHANGED or dep.id != self._id:
                continue
            active = [
                r
                for r in dep.replica_statuses
                if r.desired_state == dpb.REPLICA_DESIRED_STATE_RUN and r.state in SERVING
            ]
            self.most = max(self.most, len(active))


@pytest_asyncio.fixture
async def fleet(
    cluster_client: Env,  # noqa: F811
    start_agent: StartAgent,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[tuple[AsyncClient, Cluster, Sampler]]:
    """Two exec agents and a sampler of the stand-ins' port folder."""
    client, cluster, _ = cluster_client
    await start_fleet(cluster_client, start_agent, 2, driver="exec", cpu_cores=4)
    port_dir = tmp_path / "ports"
    port_dir.mkdir()
    sampler = Sampler(port_dir, cluster.notify)
    try:
        yield client, cluster, sampler
    finally:
        await sampler.close()


def service(port_dir: Path, surge: int, unavailable: int, min_ready_s: int = 1) -> dpb.Deployment:
    second = duration_pb2.Duration
    return dpb.Deployment(
        name="svc",
        command=[sys.executable, str(STANDIN), "serve"],
        env={"PORT_DIR": str(port_dir), "VERSION": "1"},
        replicas=REPLICAS,
        resources=dpb.Resources(cpu_cores=0.5, memory_gb=0.25),
        update_strategy=dpb.UpdateStrategy(
            max_surge=dpb.IntOrPercent(count=surge),
            max_unavailable=dpb.IntOrPercent(count=unavailable),
            min_ready_seconds=min_ready_s,
            progress_deadline_seconds=300,
        ),
        health_check=dpb.HealthCheck(
            command=[sys.executable, str(STANDIN), "check"],
            interval=second(nanos=200_000_000),
            timeout=second(seconds=5),
            failure_threshold=2,
        ),
    )


def settled(dep: dpb.Deployment | None, template_generation: int) -> bool:
    if dep is None or dep.observed_generation < dep.generation or not dep.rollout_history:
        return False
    last = dep.rollout_history[-1]
    return (
        last.outcome == COMPLETE
        and last.template_generation == template_generation
        and dep.updated_replicas == dep.available_replicas == REPLICAS
    )


async def serving(cluster: Cluster, sampler: Sampler, versions: list[str]) -> None:
    """Waits until a sampling round saw exactly `versions` answer."""
    await cluster.until(
        f"services answering {versions}",
        lambda: bool(sampler.samples) and sampler.samples[-1] == versions,
        wait_s=ROLLOUT_S,
    )


async def started(
    client: AsyncClient, cluster: Cluster, sampler: Sampler, spec: dpb.Deployment
) -> dpb.Deployment:
    dep = await client.create_deployment(spec)
    await cluster.until(
        "the first rollout complete",
        lambda: settled(cluster.deployments.get(dep.id), 1),
        wait_s=ROLLOUT_S,
    )
    await serving(cluster, sampler, ["1"] * REPLICAS)
    return dep


async def test_an_update_keeps_enough_replicas_serving_and_ends_on_the_new_version(
    fleet: tuple[AsyncClient, Cluster, Sampler],
) -> None:
    client, cluster, sampler = fleet
    dep = await started(client, cluster, sampler, service(sampler.port_dir, 1, 1))
    placements = Placements(client, dep.id)
    start = len(sampler.samples)
    try:
        env = {"PORT_DIR": str(sampler.port_dir), "VERSION": "2"}
        updated = await client.update_deployment(dpb.Deployment(id=dep.id, env=env), ["env"])
        assert (updated.generation, updated.template_generation) == (2, 2)

        done = await client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        assert settled(done, 2), done
        await serving(cluster, sampler, ["2"] * REPLICAS)
    finally:
        await placements.close()

    counts = sampler.since(start)
    assert min(counts) >= REPLICAS - 1, counts  # max_unavailable 1
    assert 0 < placements.most <= REPLICAS + 1  # max_surge 1
    assert cluster.violations == []  # RUNNING within replicas + max_surge throughout
    assert [r.outcome for r in done.rollout_history] == [COMPLETE, COMPLETE]


async def test_a_version_that_fails_its_health_check_is_rolled_back_on_its_own(
    fleet: tuple[AsyncClient, Cluster, Sampler],
) -> None:
    client, cluster, sampler = fleet
    dep = await started(client, cluster, sampler, service(sampler.port_dir, 1, 1))
    start = len(sampler.samples)

    env = {"PORT_DIR": str(sampler.port_dir), "VERSION": "2", "BROKEN": "1"}
    await client.update_deployment(dpb.Deployment(id=dep.id, env=env), ["env"])
    await cluster.until(
        "rolled back to generation 1 and complete",
        lambda: (
            settled(cluster.deployments.get(dep.id), 1)
            and len(cluster.deployments[dep.id].rollout_history) == 3
        ),
        wait_s=ROLLOUT_S,
    )
    await serving(cluster, sampler, ["1"] * REPLICAS)

    back = cluster.deployments[dep.id]
    failed = back.rollout_history[1]
    assert (failed.template_generation, failed.outcome, failed.reason) == (
        2,
        ROLLED_BACK,
        "ROLLOUT_HEALTH_CHECK_FAILED",
    )
    assert "failed its health check" in failed.message and "not serving" in failed.message
    assert back.generation == 3 and back.rollout_history[2].reason == "ROLLBACK"
    assert "rolled back to generation 1 because generation 2 failed" in back.status_reason
    assert "BROKEN" not in back.env  # the template restored
    counts = sampler.since(start)
    assert min(counts) >= REPLICAS - 1, counts


async def test_a_paused_rollout_makes_no_progress_until_resumed(
    fleet: tuple[AsyncClient, Cluster, Sampler],
) -> None:
    client, cluster, sampler = fleet
    spec = service(sampler.port_dir, 1, 0, min_ready_s=2)
    dep = await started(client, cluster, sampler, spec)
    start = len(sampler.samples)

    env = {"PORT_DIR": str(sampler.port_dir), "VERSION": "2"}
    await client.update_deployment(dpb.Deployment(id=dep.id, env=env), ["env"])

    def moving() -> bool:  # counts are the scheduler's once it has observed generation 2
        d = cluster.deployments[dep.id]
        return d.observed_generation >= 2 and d.updated_replicas >= 1

    await cluster.until("the first replica moving", moving)
    paused = await client.pause_deployment(dep.id)
    assert paused.paused

    def still() -> bool:  # the moves begun before the pause have finished
        d = cluster.deployments[dep.id]
        return d.paused and not any(r.superseded for r in d.replica_statuses)

    await cluster.until("the moves in flight done", still, wait_s=ROLLOUT_S)
    moved = cluster.deployments[dep.id].updated_replicas
    # The scheduler keeps working meanwhile: another deployment is placed and runs.
    canary = await client.create_deployment(
        dpb.Deployment(
            name="canary",
            command=[sys.executable, "-c", "import time; time.sleep(600)"],
            resources=dpb.Resources(cpu_cores=0.1, memory_gb=0.1),
        )
    )
    await cluster.until(
        "the canary running",
        lambda: cluster.deployments[canary.id].status == dpb.DEPLOYMENT_STATUS_RUNNING,
        wait_s=ROLLOUT_S,
    )
    now = cluster.deployments[dep.id]
    assert 1 <= now.updated_replicas == moved < REPLICAS
    assert now.rollout_history[-1].outcome == PROGRESSING
    assert "(paused)" in now.status_reason

    await client.resume_deployment(dep.id)
    done = await client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
    assert settled(done, 2), done
    await serving(cluster, sampler, ["2"] * REPLICAS)
    counts = sampler.since(start)
    assert min(counts) >= REPLICAS, counts  # max_unavailable 0
