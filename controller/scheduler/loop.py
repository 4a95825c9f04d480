"""The scheduler loop: one task that reconciles deployments when something changed (a
deployment, a node's status, an agent's report) and at least every `tick_s` (backoffs and
timeouts expire with time).

One pass: bring the capacity (capacity.py) up to date with what changed since the last pass;
reconcile each deployment that needs it (pure); stage what changed and persist it in one
transaction; then tell the heartbeat streams of every node whose assignments changed. Replicas
on OFFLINE nodes are replaced at most `eviction_rate_per_s` nodes per second (a burst of
`eviction_burst`), and not at all while the controller suspects itself.

A deployment that a step left unchanged is parked: it is not reconciled again until it changes,
a node it is placed on changes status or goes away, or (if a replica waits for a node) capacity
grows; unless it waits on time (`reconcile.waits_on_time`). So a deployment that cannot be
placed costs nothing per tick, and is retried when a node joins or turns READY or resources are
released.

A pass yields to the event loop whenever it has held it for `pass_slice_s`, between two
deployments. Each deployment is reconciled from its latest state, read in the same slice in
which its result is staged, so a concurrent change (a report, an update) is never overwritten;
and after a yield, if nodes or deployments changed meanwhile, the capacity is brought up to date
and a new snapshot taken before the next deployment, so placements never use a node that left
or capacity that was taken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.background import BackgroundLoop
from controller.clock import Clock
from controller.errors import FencedError
from controller.models import Deployment, NodeStatus, PlacementStrategy, Replica
from controller.registry.deployments import DeploymentRegistry
from controller.registry.leadership import Leadership
from controller.registry.nodes import NodeRegistry
from controller.registry.replicas import nodes_of
from controller.registry.sessions import Sessions
from controller.scheduler.capacity import Capacity
from controller.scheduler.drainer import Drainer
from controller.scheduler.reconcile import Context, reconcile, unplaced, waits_on_time
from controller.store.base import Fence
from controller.token_bucket import TokenBucket
from controller.tracing import Span, SpanFactory, no_span

log = logging.getLogger("controller.scheduler")


@dataclass(frozen=True)
class SchedulerSettings:
    default_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    eviction_rate_per_s: float = 1.0
    eviction_burst: int = 10
    stop_timeout_s: float = 30.0
    tick_s: float = 1.0
    min_pass_interval_s: float = 0.05
    pass_slice_s: float = 0.02  # a pass gives the event loop back after holding it this long
    max_placements_per_step: int = 200  # per deployment per pass (see reconcile.Context)


class Evictions:
    """Which OFFLINE nodes may have their replicas replaced: a token bucket of nodes."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._bucket = TokenBucket(burst, rate_per_s, clock)
        self._admitted: set[str] = set()
        self.paused = False  # while the controller suspects itself

    def forget_returned(self, ready: set[str]) -> None:
        self._admitted -= ready

    def may_evict(self, node_id: str) -> bool:
        if self.paused:
            return False
        if node_id in self._admitted:
            return True
        if not self._bucket.take():
            return False
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
        leadership: Leadership | None = None,
        trace: SpanFactory = no_span,
    ) -> None:
        # Only the leader places, moves and evicts; None: this process is the only replica.
        self._leadership = leadership
        self._deployments = deployments
        self._nodes = nodes
        self._sessions = sessions
        self._clock = clock
        self._settings = settings
        self._rng = rng or random.Random()
        self._trace = trace  # a span around each pass that reconciles (its writes nest in it)
        self._evictions = Evictions(settings.eviction_rate_per_s, settings.eviction_burst, clock)
        self._capacity = Capacity()
        self._drainer = Drainer(nodes, deployments, clock)  # node drains (scheduler/drain.py)
        self._parked: dict[str, _Parked] = {}
        self._nodes_changed = True  # by a status transition, since the last sync
        self._node_revision = -1  # of the node registry at the last sync (joins and deletes)
        nodes.on_transition.append(self._node_transition)
        self._loop = BackgroundLoop(
            "scheduler",
            self.run_once,
            deployments.changed,
            settings.tick_s,
            log,
            # A pass may reconcile many deployments: let a burst of changes (a fleet
            # connecting) accumulate instead of running one pass per change.
            settle_s=settings.min_pass_interval_s,
        )
        self.passes = 0
        # Called after each pass with its placements and its duration in seconds.
        self.on_pass: list[Callable[[int, float], None]] = []
        self.reconciled = 0  # deployments reconciled, over all passes
        self.yields = 0  # times a pass gave the event loop back, over all passes

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        fence = self._leadership.fence() if self._leadership is not None else None
        if self._leadership is None or fence is not None:
            with contextlib.suppress(FencedError):
                await self._deployments.persist(fence)

    async def run_once(self) -> None:
        """One reconciliation pass over every deployment that needs it."""
        started = time.perf_counter()
        if not self._deployments.count():
            await self._drains_without_deployments()
            return  # nothing to place or move: skip even the capacity's upkeep
        fence = None
        if self._leadership is not None:
            fence = self._leadership.fence()
            if fence is None:
                self._parked.clear()  # the state moved on under another leader
                # Agents' reports to this replica are staged here; a follower persists them
                # (the leader, with its placements). Nothing else stages on a follower.
                await self._deployments.persist()
                return
        self.passes += 1
        self._sync_nodes()
        self._unpark_draining()
        deployments = {dep.id: dep for dep in self._deployments.latest()}
        self._capacity.sync_deployments(deployments.values())
        for gone in self._parked.keys() - deployments.keys():
            del self._parked[gone]
        paused = self._nodes.liveness.self_suspected
        if paused is not self._evictions.paused:
            self._parked.clear()  # replicas of OFFLINE nodes may be replaced now, or not
        self._evictions.paused = paused
        now = self._clock.now()
        due = [dep_id for dep_id, dep in deployments.items() if self._due(dep, now)]
        with self._trace("scheduler.pass") if due else no_span("") as span:
            await self._reconcile(deployments, due, now, fence, started, span)

    async def _reconcile(
        self,
        deployments: dict[str, Deployment],
        due: list[str],
        now: datetime,
        fence: Fence | None,
        started: float,
        span: Span,
    ) -> None:
        """Reconciles the `due` deployments and persists what changed (the rest of a pass)."""
        touched = self._deployments.drain_touched_nodes()
        removable: list[str] = []
        placements = reconciled = 0
        ctx: Context | None = None
        slice_started = time.perf_counter()
        for dep_id in due:
            if time.perf_counter() - slice_started >= self._settings.pass_slice_s:
                await asyncio.sleep(0)  # let the loop serve others between two deployments
                self.yields += 1
                slice_started = time.perf_counter()
                if self._revalidate(deployments):
                    ctx = None  # the snapshot is stale: take a new one
            dep = deployments.get(dep_id)
            if dep is None:
                continue  # removed meanwhile
            if ctx is None:
                ctx = self._context(now)
            new, remove = reconcile(dep, ctx)
            self._drainer.observe(dep, new)
            reconciled += 1
            if remove:
                removable.append(dep.id)
            if new is not dep:
                self._deployments.stage(new)
                deployments[dep_id] = new
                self._capacity.sync_deployment(new)
                placements += _placements(dep.replica_set, new.replica_set)
                self._parked.pop(dep_id, None)
            elif not remove:
                self._park(dep, ctx)
            if (
                new.replica_set != dep.replica_set
                or new.template_generation != dep.template_generation
            ):
                touched |= nodes_of(dep.replica_set) | nodes_of(new.replica_set)
        try:
            await self._deployments.persist(fence)
        except FencedError as exc:
            assert self._leadership is not None  # only fenced writes are refused
            self._leadership.step_down(str(exc))
            self._parked.clear()
            self._drainer.forget()  # this pass's moves were not written
            return
        for deployment_id in removable:
            last = self._deployments.snapshot_of(deployment_id)  # its nodes, as assigned
            if last is not None:
                touched |= nodes_of(last.replica_set)
            try:
                await self._deployments.remove(deployment_id, fence)
            except FencedError as exc:
                assert self._leadership is not None  # only fenced writes are refused
                self._leadership.step_down(str(exc))
                self._drainer.forget()
                return
            self._parked.pop(deployment_id, None)
            log.info("deployment removed", extra={"fields": {"deployment_id": deployment_id}})
        if not await self._report_drains(fence):
            return
        self._sessions.assignments_changed(touched)
        span.set_attribute("automator67.scheduler.deployments", len(deployments))
        span.set_attribute("automator67.scheduler.reconciled", reconciled)
        span.set_attribute("automator67.scheduler.placements", placements)
        span.set_attribute("automator67.scheduler.removed", len(removable))
        self.reconciled += reconciled
        for listener in self.on_pass:
            listener(placements, time.perf_counter() - started)
        log.debug(
            "scheduling pass",
            extra={
                "fields": {
                    "deployments": len(deployments),
                    "reconciled": reconciled,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
            },
        )

    def _node_transition(self, old: NodeStatus, new: NodeStatus) -> None:
        self._nodes_changed = True

    def _sync_nodes(self) -> None:
        """Brings the capacity up to date with the nodes if they changed, and unparks the
        deployments placed on nodes whose status changed."""
        if not self._nodes_changed and self._node_revision == self._nodes.revision:
            return
        self._nodes_changed = False
        self._node_revision = self._nodes.revision
        nodes = self._nodes.latest()
        self._capacity.sync_nodes(nodes)
        self._drainer.sync(nodes)
        for node_id in self._capacity.drain_changed_nodes():
            for dep_id in self._capacity.placed_on.get(node_id, ()):
                self._parked.pop(dep_id, None)
        self._evictions.forget_returned(self._capacity.drain_turned_ready())

    def _revalidate(self, deployments: dict[str, Deployment]) -> bool:
        """After a yield: brings `deployments` (and what they hold) and the nodes up to date
        with what changed meanwhile; True if anything did. Every deployment is read again: a
        user's change is staged before it is persisted and announced, so no flag tells."""
        nodes_changed = self._nodes_changed or self._node_revision != self._nodes.revision
        if nodes_changed:
            self._sync_nodes()
        fresh = self._deployments.latest()
        changed = len(fresh) != len(deployments) or any(
            deployments.get(dep.id) is not dep for dep in fresh
        )
        if changed:
            deployments.clear()
            deployments.update((dep.id, dep) for dep in fresh)
            self._capacity.sync_deployments(fresh)
        return nodes_changed or changed

    def _context(self, now: datetime) -> Context:
        return Context(
            now=now,
            snapshot=self._capacity.snapshot(),
            node_status=self._capacity.status.get,
            may_evict=self._evictions.may_evict,
            default_strategy=self._settings.default_strategy,
            rng=self._rng,
            stop_timeout_s=self._settings.stop_timeout_s,
            max_placements=self._settings.max_placements_per_step,
            drains=self._drainer.deadlines,
        )

    def _unpark_draining(self) -> None:
        """The deployments on draining nodes are reconciled every pass (a drain's moves wait
        on replacements and on its deadline)."""
        for node_id in self._drainer.deadlines:
            for dep_id in self._capacity.placed_on.get(node_id, ()):
                self._parked.pop(dep_id, None)

    async def _report_drains(self, fence: Fence | None) -> bool:
        """Records the drains' progress on their nodes; False if this replica was deposed."""
        try:
            await self._drainer.report(fence)
        except FencedError as exc:
            assert self._leadership is not None  # only fenced writes are refused
            self._leadership.step_down(str(exc))
            self._parked.clear()
            self._drainer.forget()  # the next leader counts from its own passes
            return False
        return True

    async def _drains_without_deployments(self) -> None:
        """With no deployment a drain has nothing to move; the leader still completes it."""
        fence = self._leadership.fence() if self._leadership is not None else None
        if self._leadership is not None and fence is None:
            return
        if not self._nodes.draining and not self._drainer.deadlines:
            return  # a fleet joining with no deployment costs no walk over it per pass
        self._sync_nodes()
        if self._drainer.deadlines:
            await self._report_drains(fence)

    def _due(self, dep: Deployment, now: datetime) -> bool:
        parked = self._parked.get(dep.id)
        if parked is None or parked.deployment is not dep:
            return True
        if parked.timed:
            return True
        return parked.unplaced and parked.grown != self._capacity.grown

    def _park(self, dep: Deployment, ctx: Context) -> None:
        self._parked[dep.id] = _Parked(
            dep,
            self._capacity.grown,
            unplaced(dep),
            waits_on_time(dep, ctx.now, ctx.node_status),
        )


@dataclass(frozen=True)
class _Parked:
    """A deployment that its last step left unchanged, and what would make a step worthwhile."""

    deployment: Deployment  # as reconciled: any change to it makes a new object
    grown: int  # the capacity's `grown` then
    unplaced: bool  # a replica waits for a node: more capacity may place it
    timed: bool  # waits on time: reconciled every pass


def _placements(old: Iterable[Replica], new: Iterable[Replica]) -> int:
    """Replicas newly assigned to a node: (index, node) pairs in `new` that `old` lacks."""
    before = {(r.index, r.node_id) for r in old if r.node_id}
    return sum(1 for r in new if r.node_id and (r.index, r.node_id) not in before)
