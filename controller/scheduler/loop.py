"""The scheduler loop: one task that reconciles every deployment when something changed (a
deployment, a node's status, an agent's report) and at least every `tick_s` (backoffs and
timeouts expire with time).

One pass: build a capacity snapshot from the nodes and the placements; reconcile each
deployment (pure, no await, so the pass sees one consistent state); stage what changed and
persist it in one transaction; then tell the heartbeat streams of every node whose assignments
changed. Replicas on OFFLINE nodes are replaced at most `eviction_rate_per_s` nodes per second
(a burst of `eviction_burst`), and not at all while the controller suspects itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from controller import metrics
from controller.clock import Clock
from controller.models import (
    Capabilities,
    NodeStatus,
    PlacementStrategy,
    Replica,
    ReplicaState,
    Resources,
)
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.replicas import nodes_of
from controller.registry.sessions import Sessions
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import Context, reconcile

log = logging.getLogger("controller.scheduler")
FREE_STATES = frozenset(
    {ReplicaState.PENDING, ReplicaState.STOPPED, ReplicaState.EXITED, ReplicaState.FAILED}
)


@dataclass(frozen=True)
class SchedulerSettings:
    default_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    eviction_rate_per_s: float = 1.0
    eviction_burst: int = 10
    stop_timeout_s: float = 30.0
    tick_s: float = 1.0
    min_pass_interval_s: float = 0.05


class Evictions:
    """Which OFFLINE nodes may have their replicas replaced: a token bucket of nodes."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate, self._burst, self._clock = rate_per_s, burst, clock
        self._tokens = float(burst)
        self._at = clock.monotonic()
        self._admitted: set[str] = set()
        self.paused = False  # while the controller suspects itself

    def forget_returned(self, ready: set[str]) -> None:
        self._admitted -= ready

    def may_evict(self, node_id: str) -> bool:
        if self.paused:
            return False
        if node_id in self._admitted:
            return True
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self._admitted.add(node_id)
        log.warning(
            "replacing the replicas of an OFFLINE node", extra={"fields": {"node_id": node_id}}
        )
        return True


class Scheduler:
    def __init__(
        self,
        deployments: DeploymentRegistry,
        nodes: NodeRegistry,
        sessions: Sessions,
        clock: Clock,
        settings: SchedulerSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._deployments = deployments
        self._nodes = nodes
        self._sessions = sessions
        self._clock = clock
        self._settings = settings
        self._rng = rng or random.Random()
        self._evictions = Evictions(settings.eviction_rate_per_s, settings.eviction_burst, clock)
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._deployments.persist()

    async def _run(self) -> None:
        wake = self._deployments.changed
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._settings.tick_s)
            # A pass costs O(nodes): let a burst of changes (a fleet connecting) accumulate
            # instead of running one pass per change and starving the event loop.
            await asyncio.sleep(self._settings.min_pass_interval_s)
            wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("scheduling pass failed; retrying")

    async def run_once(self) -> None:
        """One reconciliation pass over every deployment."""
        started = time.perf_counter()
        if not self._deployments.count():
            return  # nothing to place or move: skip the O(nodes) snapshot
        nodes = self._nodes.latest()
        status = {node.id: node.status for node in nodes}
        self._evictions.paused = self._nodes.liveness.self_suspected
        self._evictions.forget_returned({n for n, s in status.items() if s is NodeStatus.READY})
        deployments = self._deployments.latest()
        used: dict[str, Resources] = defaultdict(Resources)
        for dep in deployments:
            for r in dep.replica_set:
                if r.node_id and r.state not in FREE_STATES:
                    used[r.node_id] = used[r.node_id].plus(dep.resources)
        views = [
            NodeView(n.id, n.status, n.provider, n.region, n.labels, _capacity(n.capabilities))
            for n in nodes
        ]
        ctx = Context(
            now=self._clock.now(),
            snapshot=Snapshot(views, used),
            node_status=status.get,
            may_evict=self._evictions.may_evict,
            default_strategy=self._settings.default_strategy,
            rng=self._rng,
            stop_timeout_s=self._settings.stop_timeout_s,
        )
        touched = self._deployments.drain_touched_nodes()
        removable: list[str] = []
        placements = 0
        for dep in deployments:
            new, remove = reconcile(dep, ctx)
            if remove:
                removable.append(dep.id)
            if new is not dep:
                self._deployments.stage(new)
                placements += _placements(dep.replica_set, new.replica_set)
            if new.replica_set != dep.replica_set or new.spec_version != dep.spec_version:
                touched |= nodes_of(dep.replica_set) | nodes_of(new.replica_set)
        await self._deployments.persist()
        for deployment_id in removable:
            last = self._deployments.snapshot_of(deployment_id)  # its nodes, as assigned
            if last is not None:
                touched |= nodes_of(last.replica_set)
            await self._deployments.remove(deployment_id)
            log.info("deployment removed", extra={"fields": {"deployment_id": deployment_id}})
        self._sessions.assignments_changed(touched)
        self.passes += 1
        if placements:
            metrics.SCHEDULER_PLACEMENTS.inc(placements)
        metrics.SCHEDULER_PASS_DURATION.observe(time.perf_counter() - started)
        log.debug(
            "scheduling pass",
            extra={
                "fields": {
                    "deployments": len(deployments),
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
            },
        )


def _placements(old: Iterable[Replica], new: Iterable[Replica]) -> int:
    """Replicas newly assigned to a node: (index, node) pairs in `new` that `old` lacks."""
    before = {(r.index, r.node_id) for r in old if r.node_id}
    return sum(1 for r in new if r.node_id and (r.index, r.node_id) not in before)


def _capacity(caps: Capabilities) -> Resources:
    return Resources(caps.cpu_cores, caps.memory_gb, caps.disk_gb)
