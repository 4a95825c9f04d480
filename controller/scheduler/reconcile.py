"""What the scheduler does to one deployment: a pure function of the deployment, the nodes'
statuses and a capacity snapshot, at one moment.

For each replica index below the replica count there is one current placement:
- unplaced, and past its backoff: placed (placement.py), or told why nothing fits;
- on a node that is gone, or OFFLINE and admitted by the eviction limiter: superseded (LOST)
  and replaced by a new placement;
- FAILED or EXITED: placed again after an exponential backoff, avoiding the nodes it failed on;
- RUNNING for a while: its failure count is forgiven.
A superseded placement keeps running until its replacement runs (a node that comes back
never loses work before the replacement is up), then it is stopped. Indexes at or above the
replica count are stopped and dropped. A deployment being deleted has every replica stopped;
once all are stopped (or their nodes are gone for `stop_timeout_s`) it can be removed."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from controller.models import (
    Deployment,
    DeploymentStatus,
    DesiredState,
    NodeStatus,
    PlacementStrategy,
    Replica,
    ReplicaState,
)
from controller.registry.replicas import ENDED, with_status
from controller.scheduler import drain, rollout
from controller.scheduler.placement import Ask, NoFit, Snapshot, fits, place

ACTIVE = frozenset({ReplicaState.ASSIGNED, ReplicaState.STARTING, ReplicaState.RUNNING})
FORGIVE_AFTER_S = 60.0  # a replica running this long has its failure count reset
MAX_BACKOFF_S = 300.0
MAX_AVOID = 5


@dataclass
class Context:
    now: datetime
    snapshot: Snapshot
    node_status: Callable[[str], NodeStatus | None]  # None: the node is gone
    may_evict: Callable[[str], bool]  # may this OFFLINE node's replicas be replaced now?
    default_strategy: PlacementStrategy
    rng: random.Random
    stop_timeout_s: float = 30.0
    # Replicas one step may try to place: a deployment of thousands is placed over several
    # passes (each step stays a few tens of milliseconds), the rest wait PENDING for the next.
    max_placements: int = 200
    # Draining nodes and their drains' deadlines: their replicas move (scheduler/drain.py).
    drains: Mapping[str, datetime] = field(default_factory=dict)


def backoff_s(failures: int, rng: random.Random) -> float:
    """1 s, 2 s, 4 s ... up to 5 min, +-20% jitter."""
    base = min(MAX_BACKOFF_S, 2.0 ** max(0, failures - 1))
    return base * rng.uniform(0.8, 1.2)


def reconcile(dep: Deployment, ctx: Context) -> tuple[Deployment, bool]:
    """The deployment after one scheduling step, and whether it can now be removed."""
    if dep.status is DeploymentStatus.STOPPING:
        replicas = tuple(_stopping(r, ctx) for r in dep.replica_set)
        done = all(r.state is ReplicaState.STOPPED for r in replicas)
        return with_status(_with_replicas(dep, replicas), ctx.now), done

    def node_ready(node_id: str) -> bool:  # its agent's word still counts
        return ctx.node_status(node_id) not in (None, NodeStatus.OFFLINE)

    def is_available(r: Replica) -> bool:
        return rollout.available(dep, r, ctx.now, node_ready)

    start = dep
    # Nothing rolls out and every replica serves (the common case): skip the rollout's step
    # and count (one pass over the replicas instead of several).
    settled = rollout.settled(dep, ctx.now, node_ready)
    if not settled:
        dep = rollout.advance(dep, ctx.now, node_ready)  # a rolling update's next moves
    dep = drain.step(dep, ctx.drains, ctx.now, node_ready)  # moves off draining nodes
    current = {r.index: r for r in dep.replica_set if not r.superseded}
    kept: list[Replica] = []
    for old in (r for r in dep.replica_set if r.superseded):
        outcome = _superseded(old, current.get(old.index), dep.replicas, ctx, is_available)
        if outcome is not None and not outcome.superseded:  # restored: its replacement goes
            current[old.index] = outcome
        elif outcome is not None:
            kept.append(outcome)
    collocated: Counter[str] | None = None  # built at the first placement (most steps have none)
    tried = 0
    for index in sorted(set(range(dep.replicas)) | set(current)):
        replica = current.get(index) or Replica(index, state_time=ctx.now)
        if index >= dep.replicas:
            stopped = _scale_down(replica, ctx)
            if stopped is not None:
                kept.append(stopped)
            continue
        if replica.desired is DesiredState.STOP:  # scaled down, then up again before it stopped
            replica = (
                Replica(index, state_time=ctx.now)
                if replica.state is ReplicaState.STOPPED
                else replace(replica, desired=DesiredState.RUN, state=ReplicaState.ASSIGNED)
            )
        elif replica.state is ReplicaState.STOPPED and replica.node_id:
            # Its stop raced a new RUN: its agent starts it again.
            replica = replace(replica, state=ReplicaState.ASSIGNED, state_time=ctx.now)
        replica, lost = _judge_node(replica, ctx)
        if lost is not None:
            kept.append(lost)
        replica = _after_failure(replica, ctx)
        if not replica.node_id and tried < ctx.max_placements:
            if collocated is None:
                collocated = Counter(r.node_id for r in current.values() if r.node_id)
            replica = _place(dep, replica, collocated, ctx)
            tried += 1
        kept.append(replica)
    replicas = tuple(sorted(kept, key=lambda r: (r.index, not r.superseded)))
    counted = _with_replicas(dep, replicas)
    if not settled or counted is not start:
        counted = rollout.account(counted, ctx.now, node_ready)
    return with_status(counted, ctx.now), False


def _with_replicas(dep: Deployment, replicas: tuple[Replica, ...]) -> Deployment:
    return dep if replicas == dep.replica_set else replace(dep, replica_set=replicas)


def _stopping(r: Replica, ctx: Context) -> Replica:
    if r.state is ReplicaState.STOPPED:
        return r
    status = ctx.node_status(r.node_id) if r.node_id else None
    stopped = replace(r, desired=DesiredState.STOP, state=ReplicaState.STOPPED, state_time=ctx.now)
    if status is None or r.state in ENDED or r.state is ReplicaState.LOST:
        return stopped  # nothing runs, or nothing is left to say so
    if r.desired is DesiredState.RUN:  # the stop timeout counts from the stop request
        return replace(
            r, desired=DesiredState.STOP, state=ReplicaState.STOPPING, state_time=ctx.now
        )
    waited = (ctx.now - (r.state_time or ctx.now)).total_seconds()
    if status is not NodeStatus.READY and waited >= ctx.stop_timeout_s:
        return stopped
    return r


def _superseded(
    old: Replica,
    replacement: Replica | None,
    count: int,
    ctx: Context,
    is_available: Callable[[Replica], bool],
) -> Replica | None:
    """What becomes of a superseded placement (None: dropped). It runs until its replacement is
    available (runs, passes its health check, for the update strategy's min ready time)."""
    status = ctx.node_status(old.node_id)
    if status is None or old.state is ReplicaState.STOPPED or old.state in ENDED:
        return None
    replaced = replacement is None or old.index >= count or is_available(replacement)
    if replaced:
        if status is not NodeStatus.READY:
            return None  # its agent stops it when it returns: it is in no assignment any more
        if old.desired is DesiredState.RUN:
            return replace(
                old, desired=DesiredState.STOP, state=ReplicaState.STOPPING, state_time=ctx.now
            )
        return old
    assert replacement is not None
    if status is NodeStatus.READY and not replacement.node_id and not old.handover:
        # Its node came back before the replacement was even placed: keep the original (its
        # agent reports its state again on the next beat).
        state = ReplicaState.ASSIGNED if old.state is ReplicaState.LOST else old.state
        return replace(old, superseded=False, state=state, message="its node came back")
    return old


def _scale_down(r: Replica, ctx: Context) -> Replica | None:
    status = ctx.node_status(r.node_id) if r.node_id else None
    if not r.node_id or r.state is ReplicaState.STOPPED or status is None or r.state in ENDED:
        return None
    if status is not NodeStatus.READY:
        return None  # not in any assignment any more: stopped by its agent if it returns
    if r.desired is DesiredState.RUN:
        return replace(
            r, desired=DesiredState.STOP, state=ReplicaState.STOPPING, state_time=ctx.now
        )
    return r


def _judge_node(r: Replica, ctx: Context) -> tuple[Replica, Replica | None]:
    """(the current placement, a superseded one) after looking at the replica's node."""
    if not r.node_id:
        return r, None
    status = ctx.node_status(r.node_id)
    if status is None:
        return _fresh(r, "its node was removed", ctx), None
    if status is NodeStatus.OFFLINE and r.state not in ENDED and ctx.may_evict(r.node_id):
        lost = replace(
            r,
            superseded=True,
            state=ReplicaState.LOST,
            message="its node went OFFLINE",
            state_time=ctx.now,
        )
        return _fresh(r, "replacing a replica lost with its node", ctx), lost
    return r, None


def _after_failure(r: Replica, ctx: Context) -> Replica:
    if r.state in ENDED and r.desired is DesiredState.RUN and r.node_id:
        wait = backoff_s(r.failures, ctx.rng)
        avoid = (*[n for n in r.avoid if n != r.node_id], r.node_id)[-MAX_AVOID:]
        why = f"{r.state.value.lower()}: {r.message}" if r.message else r.state.value.lower()
        return replace(
            _fresh(r, f"{why}; placing it again in {wait:.0f}s", ctx),
            retry_at=ctx.now + timedelta(seconds=wait),
            avoid=avoid,
        )
    running_s = (ctx.now - (r.state_time or ctx.now)).total_seconds()
    if r.state is ReplicaState.RUNNING and r.failures and running_s >= FORGIVE_AFTER_S:
        return replace(r, failures=0)
    return r


def _place(dep: Deployment, r: Replica, collocated: Counter[str], ctx: Context) -> Replica:
    if r.retry_at is not None and r.retry_at > ctx.now:
        return r
    strategy = (
        dep.strategy if dep.strategy is not PlacementStrategy.DEFAULT else ctx.default_strategy
    )
    ask = Ask(dep.resources, dep.constraints, strategy, frozenset(r.avoid))
    # During a rolling update the new placement goes beside the one it replaces if it fits.
    chosen = (
        r.prefer
        if r.prefer and fits(ask, ctx.snapshot, r.prefer)
        else place(ask, ctx.snapshot, collocated, ctx.rng)
    )
    if isinstance(chosen, NoFit):
        if r.message == chosen.reason and r.unschedulable:
            return r
        return replace(r, message=chosen.reason, unschedulable=True)
    ctx.snapshot.take(chosen, dep.resources)
    collocated[chosen] += 1
    return replace(
        r,
        node_id=chosen,
        state=ReplicaState.ASSIGNED,
        desired=DesiredState.RUN,
        message="",
        unschedulable=False,
        retry_at=None,
        state_time=ctx.now,
        # A paused rollout moves nothing: a replacement runs what the replica ran.
        generation=r.generation if dep.paused and r.generation else dep.template_generation,
        prefer="",
        placement_id=new_placement_id(ctx.rng, {p.placement_id for p in dep.replica_set}),
    )


def new_placement_id(rng: random.Random, taken: set[str]) -> str:
    """A placement's id: 64 random bits in hex, none of `taken` (its deployment's ids: ids
    are matched within a deployment; a seeded rng must not repeat one across steps)."""
    while (placement_id := f"{rng.getrandbits(64):016x}") in taken:
        pass
    return placement_id


def _fresh(r: Replica, message: str, ctx: Context) -> Replica:
    """A new, unplaced placement of the same index that remembers its failures."""
    return Replica(
        r.index,
        message=message,
        failures=r.failures,
        avoid=r.avoid,
        state_time=ctx.now,
        generation=r.generation,
    )


def waits_on_time(
    dep: Deployment, now: datetime, node_status: Callable[[str], NodeStatus | None]
) -> bool:
    """Whether a later step, with nothing else changed, could do more to `dep` than this one
    did: a backoff or a stop timeout to expire, a failure count to forgive, a replica on an
    OFFLINE node that the eviction limiter may admit later. A deployment for which this is False
    and that a step left unchanged needs no step until it, its nodes or the capacity change."""
    if dep.status is DeploymentStatus.STOPPING:
        return any(r.state is not ReplicaState.STOPPED for r in dep.replica_set)
    if rollout.waits_on_time(dep, now):
        return True
    for r in dep.replica_set:
        if r.retry_at is not None and r.retry_at > now:
            return True
        if r.state is ReplicaState.RUNNING and r.failures:
            return True
        if (
            r.node_id
            and not r.superseded
            and r.state not in ENDED
            and node_status(r.node_id) is NodeStatus.OFFLINE
        ):
            return True
    return False


def unplaced(dep: Deployment) -> bool:
    """Whether a replica of `dep` waits for a node (more capacity may place it)."""
    if dep.status is DeploymentStatus.STOPPING:
        return False
    placed = {r.index for r in dep.replica_set if r.node_id and not r.superseded}
    return len({i for i in placed if i < dep.replicas}) < dep.replicas
