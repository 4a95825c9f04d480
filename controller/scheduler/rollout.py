"""Rolling updates (issue 14): moving a deployment's replicas, a few at a time, to a new template,
with health gates and automatic rollback. Pure: functions of a `Deployment`, the time and the
nodes' readiness; the clock is the caller's.

Reusable API (a node drain moves replicas under the same rules):

    budget(dep) -> Budget
        max_surge (rounded up) and max_unavailable (rounded down) resolved against the replica
        count, as Kubernetes does; both 0 becomes max_unavailable 1.
    available(dep, replica, now, node_ready) -> bool
        RUNNING on a node that is not OFFLINE (node_ready), passing its health check if the
        template has one, and ready for at least `min_ready_seconds`.
    move(dep, should_move, now, node_ready, message, stay=True) -> Deployment
        First `finish_handovers`; then for each current placement (index < replicas) with
        should_move(placement) true, starts
        its replacement, within the budget: the new placement (the current template, unplaced,
        `prefer`ring the old node when `stay`, else avoiding it) becomes current; the old one is
        superseded as a *handover*:
          - it is not available anyway (starting, failing, unplaced):  stopped now;
          - fewer than replicas + max_surge placements run:           kept RUNNING; the
                scheduler stops it once its replacement is available (reconcile._superseded);
          - available ones stay >= replicas - max_unavailable without it: stopped now;
          - else it waits for a later step.
        Unavailable placements are moved first. "Run" counts every placement asked to run,
        placed or not: one backing off after a failure (a crash-looping replacement keeps its
        share of the surge) and one waiting for room (as Kubernetes counts pending pods against
        maxSurge), so room that appears for several at once never starts more than the surge.
        A surge whose replacement waits for room has its old placement stopped if
        max_unavailable allows (room for it: a full cluster still moves). So at every moment at
        most replicas + max_surge placements exist to run and at least replicas -
        max_unavailable are available (given they were).
    advance(dep, now, node_ready) -> Deployment
        One rollout step: observe the generation; if the rollout in progress fails, roll back;
        unless paused, `move` the placements of other templates.
    account(dep, now, node_ready) -> Deployment
        After the step's placements: count updated / ready / available replicas and record the
        rollout's progress or completion.
    settled(dep, now, node_ready) -> bool
        Whether `advance` and `account` would change nothing: no rollout in flight, every
        replica current, of the current template and available, and the counts say so. One
        pass over the replicas, so that a pass over many idle deployments costs little (the
        scheduler step skips both then).

A rollout fails when a replica of the new template fails its health check (the agent reported
UNHEALTHY after `failure_threshold` probes), when its replicas failed ROLLBACK_AFTER_FAILURES
times in all, or when it made no progress for `progress_deadline_seconds` (not counted while
paused). It is then ROLLED_BACK to the last template that completed (Nomad's auto_revert; a new
generation, as `kubectl rollout undo` makes one); with none, it is FAILED and goes on trying."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from controller.models import (
    Deployment,
    DesiredState,
    Health,
    Replica,
    ReplicaState,
    RolloutOutcome,
)
from controller.registry import rollouts
from controller.registry.replicas import ENDED
from controller.registry.rollouts import COMPLETE, PROGRESSING, ROLLED_BACK

FAILED = RolloutOutcome.FAILED

ROLLBACK_AFTER_FAILURES = 3  # failed starts of the new template's replicas, in all
GONE = ENDED | {ReplicaState.STOPPED, ReplicaState.LOST, ReplicaState.PENDING}
NodeReady = Callable[[str], bool]


@dataclass(frozen=True)
class Budget:
    max_surge: int
    max_unavailable: int


def budget(dep: Deployment) -> Budget:
    s = dep.update_strategy
    surge = s.max_surge.of(dep.replicas, round_up=True)
    unavailable = s.max_unavailable.of(dep.replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return Budget(surge, unavailable)


def ready(dep: Deployment, r: Replica, node_ready: NodeReady) -> bool:
    """Runs and passes its check (if its template has one) on a node whose agent's word still
    counts (not OFFLINE: `node_ready`)."""
    return (
        r.desired is DesiredState.RUN
        and r.state is ReplicaState.RUNNING
        and r.ready_time is not None
        and bool(r.node_id)
        and node_ready(r.node_id)
    )


def available(dep: Deployment, r: Replica, now: datetime, node_ready: NodeReady) -> bool:
    if not ready(dep, r, node_ready):
        return False
    assert r.ready_time is not None
    return (now - r.ready_time).total_seconds() >= dep.update_strategy.min_ready_s


def _serving(dep: Deployment) -> list[Replica]:
    """Placements that run or should run, below the replica count (handovers included)."""
    return [
        r
        for r in dep.replica_set
        if r.index < dep.replicas and r.desired is DesiredState.RUN and r.node_id
    ]


def move(
    dep: Deployment,
    should_move: Callable[[Replica], bool],
    now: datetime,
    node_ready: NodeReady,
    message: str,
    stay: bool = True,
) -> Deployment:
    if any(r.handover for r in dep.replica_set):
        dep = finish_handovers(dep, now, node_ready)
        dep = _make_room(dep, now, node_ready)
    candidates = [
        r for r in dep.replica_set if not r.superseded and r.index < dep.replicas and should_move(r)
    ]
    if not candidates:
        return dep  # the common case: nothing to move, nothing to count
    limits = budget(dep)
    # Placements asked to run, placed or not: one that waits out a backoff (a crash-looping
    # replacement keeps its share of the surge, as a pod in CrashLoopBackOff does) or waits for
    # room (as a pending pod counts against maxSurge: room that appears for several at once
    # must not start more than the surge).
    running = sum(1 for r in dep.replica_set if _takes_surge(r, dep.replicas))
    up = sum(1 for r in _serving(dep) if available(dep, r, now, node_ready))
    floor = dep.replicas - limits.max_unavailable
    ceiling = dep.replicas + limits.max_surge
    candidates.sort(key=lambda r: (available(dep, r, now, node_ready), r.index))
    replacements: dict[int, tuple[Replica, Replica | None]] = {}
    for old in candidates:
        fresh = Replica(
            old.index,
            message=message,
            state_time=now,
            generation=dep.template_generation,
            prefer=old.node_id if stay else "",
            avoid=() if stay or not old.node_id else (old.node_id,),
        )
        if not old.node_id:
            replacements[old.index] = (fresh, None)
            continue
        if not available(dep, old, now, node_ready):
            replacements[old.index] = (fresh, _handover(old, now, stop=True))
        elif running < ceiling:
            replacements[old.index] = (fresh, _handover(old, now, stop=False))
            running += 1
        elif up - 1 >= floor:
            replacements[old.index] = (fresh, _handover(old, now, stop=True))
            up -= 1
    if not replacements:
        return dep
    kept: list[Replica] = []
    for r in dep.replica_set:
        if not r.superseded and r.index in replacements:
            fresh, old_one = replacements[r.index]
            kept.append(fresh)
            if old_one is not None:
                kept.append(old_one)
        else:
            kept.append(r)
    kept.sort(key=lambda r: (r.index, not r.superseded))
    return replace(dep, replica_set=tuple(kept))


def _make_room(dep: Deployment, now: datetime, node_ready: NodeReady) -> Deployment:
    """A surge whose replacement found no room becomes a stop-first move while the budget
    allows: its old placement stops, freeing room (without this a full cluster would wait for
    the deadline; Kubernetes gets there by scaling the old ReplicaSet down)."""
    current = {r.index: r for r in dep.replica_set if not r.superseded}
    stuck = [
        r
        for r in dep.replica_set
        if r.handover
        and r.desired is DesiredState.RUN
        and r.index in current
        and not current[r.index].node_id
        and current[r.index].retry_at is None  # waits for room, not a backoff
    ]
    if not stuck:
        return dep
    up = sum(1 for r in _serving(dep) if available(dep, r, now, node_ready))
    floor = dep.replicas - budget(dep).max_unavailable
    stopping: set[int] = set()
    for r in sorted(stuck, key=lambda r: (available(dep, r, now, node_ready), r.index)):
        if not available(dep, r, now, node_ready):
            stopping.add(id(r))
        elif up - 1 >= floor:
            stopping.add(id(r))
            up -= 1
    if not stopping:
        return dep
    return replace(
        dep,
        replica_set=tuple(
            _handover(r, now, stop=True) if id(r) in stopping else r for r in dep.replica_set
        ),
    )


def _takes_surge(r: Replica, replicas: int) -> bool:
    if r.index >= replicas or r.desired is not DesiredState.RUN:
        return False
    if r.node_id:  # runs, starts, or failed there and is about to back off
        return r.state not in (ReplicaState.STOPPED, ReplicaState.LOST)
    return True  # unplaced: waits for room or backs off after a failure


def finish_handovers(dep: Deployment, now: datetime, node_ready: NodeReady) -> Deployment:
    """Stops each handover placement whose replacement is available (so the budget counts
    what will serve, not what is about to stop)."""
    current = {r.index: r for r in dep.replica_set if not r.superseded}
    done = [
        r
        for r in dep.replica_set
        if r.handover
        and r.desired is DesiredState.RUN
        and (
            r.index not in current
            or r.index >= dep.replicas
            or available(dep, current[r.index], now, node_ready)
        )
    ]
    if not done:
        return dep
    stopped = {id(r) for r in done}
    return replace(
        dep,
        replica_set=tuple(
            _handover(r, now, stop=True) if id(r) in stopped else r for r in dep.replica_set
        ),
    )


def _handover(r: Replica, now: datetime, stop: bool) -> Replica:
    if not stop:
        return replace(r, superseded=True, handover=True)
    return replace(
        r,
        superseded=True,
        handover=True,
        desired=DesiredState.STOP,
        state=ReplicaState.STOPPING if r.state not in GONE else r.state,
        state_time=now,
    )


def advance(dep: Deployment, now: datetime, node_ready: NodeReady) -> Deployment:
    if dep.observed_generation != dep.generation:
        dep = replace(dep, observed_generation=dep.generation)
    rollout = rollouts.current(dep)
    if rollout is not None and rollout.outcome is PROGRESSING and not dep.paused:
        failure = _failure(dep, now, node_ready)
        if failure is not None:
            dep = _roll_back(dep, now, *failure)
    if not dep.paused:
        target = dep.template_generation
        dep = _restore(dep, target, now)
        dep = move(
            dep,
            lambda r: bool(r.generation) and r.generation != target,
            now,
            node_ready,
            f"rolling update to generation {target}",
        )
    return dep


def _restore(dep: Deployment, target: int, now: datetime) -> Deployment:
    """After a rollback (or a change back to a template that still runs): a slot whose handover
    placement runs the target template gets it back as current, and its newer placement goes
    (as Kubernetes scales the old ReplicaSet back up instead of starting new pods)."""
    behind = {r.index for r in dep.replica_set if not r.superseded and r.generation != target}
    keep = {
        r.index: r
        for r in dep.replica_set
        if r.handover
        and r.desired is DesiredState.RUN
        and r.generation == target
        and r.index in behind
    }
    if not keep:
        return dep
    kept: list[Replica] = []
    for r in dep.replica_set:
        old = keep.get(r.index)
        if old is None or (r.superseded and r is not old):
            kept.append(r)
        elif r is old:
            kept.append(replace(r, superseded=False, handover=False))
        elif r.node_id and r.state not in GONE:  # the current one, of the template left
            kept.append(_handover(r, now, stop=True))
    return replace(dep, replica_set=tuple(sorted(kept, key=lambda r: (r.index, not r.superseded))))


def _failure(dep: Deployment, now: datetime, node_ready: NodeReady) -> tuple[str, str] | None:
    """(reason, message) if the rollout in progress has failed."""
    rollout = rollouts.current(dep)
    assert rollout is not None
    target = dep.template_generation
    new = [
        r
        for r in dep.replica_set
        if not r.superseded and r.index < dep.replicas and r.generation == target
    ]
    for r in new:
        if r.health is Health.UNHEALTHY:
            why = f": {r.message}" if r.message else ""
            return (
                "ROLLOUT_HEALTH_CHECK_FAILED",
                f"replica {r.index} of generation {target} failed its health check on node "
                f"{r.node_id}{why}",
            )
    failures = sum(r.failures for r in new)
    if failures >= ROLLBACK_AFTER_FAILURES:
        last = max(new, key=lambda r: (r.failures, r.state_time or now))
        why = f"; the last: {last.message}" if last.message else ""
        return (
            "ROLLOUT_REPLICAS_FAILING",
            f"replicas of generation {target} failed to run {failures} times{why}",
        )
    since = rollout.progress_time or rollout.start_time
    deadline = dep.update_strategy.progress_deadline_s
    # Without a template to go back to, a deadline changes nothing (see waits_on_time).
    has_target = rollouts.rollback_target(dep) is not None
    if has_target and (now - since).total_seconds() > deadline:
        up = sum(1 for r in new if available(dep, r, now, node_ready))
        return (
            "ROLLOUT_PROGRESS_DEADLINE_EXCEEDED",
            f"generation {target} made no progress for {deadline}s "
            f"({up}/{dep.replicas} replicas updated and available)",
        )
    return None


def _roll_back(dep: Deployment, now: datetime, reason: str, message: str) -> Deployment:
    target = rollouts.rollback_target(dep)
    if target is None:
        return rollouts.finish(dep, FAILED, now, reason, f"{message}; nothing to roll back to")
    failed = dep.template_generation
    ended = rollouts.finish(dep, ROLLED_BACK, now, reason, message)
    return rollouts.begin(
        replace(ended, generation=dep.generation + 1, observed_generation=dep.generation + 1),
        target.template,
        now,
        reason="ROLLBACK",
        message=(
            f"rolled back to generation {target.template_generation} because generation "
            f"{failed} failed: {message}"
        ),
    )


def account(dep: Deployment, now: datetime, node_ready: NodeReady) -> Deployment:
    """`dep` with its replica counts, and its rollout's progress or completion, brought up to
    date."""
    target = dep.template_generation
    min_ready = dep.update_strategy.min_ready_s
    updated = up_to_date = ready_count = available_count = 0
    for r in _serving(dep):  # one pass: this runs on every step of every deployment
        new = not r.superseded and r.generation in (0, target)
        updated += new
        if not ready(dep, r, node_ready):
            continue
        ready_count += 1
        assert r.ready_time is not None
        if (now - r.ready_time).total_seconds() >= min_ready:
            available_count += 1
            up_to_date += new
    if (dep.updated_replicas, dep.ready_replicas, dep.available_replicas) != (
        updated,
        ready_count,
        available_count,
    ):
        dep = replace(
            dep,
            updated_replicas=updated,
            ready_replicas=ready_count,
            available_replicas=available_count,
        )
    rollout = rollouts.current(dep)
    if rollout is None or rollout.outcome not in (PROGRESSING, FAILED):
        return dep
    leftovers = any(r.superseded and r.state not in GONE for r in dep.replica_set)
    if up_to_date >= dep.replicas and updated >= dep.replicas and not leftovers:
        if rollout.outcome is FAILED:  # it failed, but made it in the end
            done = replace(rollout, outcome=COMPLETE, end_time=now, reason="", message="")
            return replace(dep, rollouts=(*dep.rollouts[:-1], done))
        return rollouts.finish(dep, COMPLETE, now)
    mark = updated + up_to_date
    if rollout.outcome is PROGRESSING and mark > rollout.progress_mark:
        moved = replace(rollout, progress_time=now, progress_mark=mark)
        return replace(dep, rollouts=(*dep.rollouts[:-1], moved))
    return dep


def settled(dep: Deployment, now: datetime, node_ready: NodeReady) -> bool:
    n = dep.replicas
    if (
        dep.observed_generation != dep.generation
        or len(dep.replica_set) != n
        or dep.updated_replicas != n
        or dep.ready_replicas != n
        or dep.available_replicas != n
        or (dep.rollouts and dep.rollouts[-1].outcome in (PROGRESSING, FAILED))
    ):
        return False
    target = dep.template_generation
    min_ready = dep.update_strategy.min_ready_s
    for r in dep.replica_set:
        if (
            r.superseded
            or r.handover
            or r.index >= n
            or r.desired is not DesiredState.RUN
            or r.state is not ReplicaState.RUNNING
            or r.ready_time is None
            or (r.generation and r.generation != target)
            or not r.node_id
            or not node_ready(r.node_id)
            or (min_ready and (now - r.ready_time).total_seconds() < min_ready)
        ):
            return False
    return True


def waits_on_time(dep: Deployment, now: datetime) -> bool:
    """Whether time alone can change what `advance` does: a rollout in progress (its deadline)
    or a replica ready but not yet available for `min_ready_seconds`."""
    rollout = rollouts.current(dep)
    if (
        rollout is not None
        and rollout.outcome is PROGRESSING
        and not dep.paused
        and rollouts.rollback_target(dep) is not None  # else a deadline changes nothing
    ):
        return True
    min_ready = dep.update_strategy.min_ready_s
    return any(
        r.ready_time is not None and (now - r.ready_time).total_seconds() < min_ready
        for r in dep.replica_set
    )
