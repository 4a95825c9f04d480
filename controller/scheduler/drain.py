"""What a node drain does to one deployment, and what it says of a node: pure functions of
deployments, the draining nodes' deadlines and the time.

A drain moves a deployment's placements off the draining nodes under the rules of a rolling
update (`rollout.move`, with the deployment's max_surge / max_unavailable; Kubernetes'
defaults): each replacement is placed elsewhere (the node is cordoned, and avoided) and the old
placement is a handover that keeps running until its replacement is available (RUNNING, its
health check passing, for min_ready_seconds), then stops; a placement that serves nothing anyway
is stopped at once; a running one is stopped before its replacement is up only while the
deployment keeps `replicas - max_unavailable` available. What cannot move (no room elsewhere)
keeps running on the node until the drain's deadline; at the deadline every placement still on
the node is stopped (Nomad's drain deadline, `kubectl drain --timeout`), and a replacement of a
current one is placed wherever it fits, or waits PENDING.

`step()` runs inside the scheduler's reconcile step (scheduler/reconcile.py), right after a
rolling update's own moves; `progress()` says, after a pass, where each drain stands, for the
leader to record on the node (scheduler/drainer.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from controller.models import (
    Deployment,
    DeploymentStatus,
    DesiredState,
    Drain,
    DrainState,
    Replica,
    ReplicaState,
)
from controller.scheduler import rollout

NodeReady = Callable[[str], bool]
# A placement in one of these states holds nothing on its node any more.
GONE = frozenset(
    {ReplicaState.STOPPED, ReplicaState.EXITED, ReplicaState.FAILED, ReplicaState.LOST}
)


def step(
    dep: Deployment, deadlines: Mapping[str, datetime], now: datetime, node_ready: NodeReady
) -> Deployment:
    """`dep` with its placements on draining nodes (node id -> drain deadline) moved or, past
    a deadline, stopped."""
    if not deadlines or dep.status is DeploymentStatus.STOPPING:
        return dep
    if not any(r.node_id in deadlines and r.desired is DesiredState.RUN for r in dep.replica_set):
        return dep
    expired = {node_id for node_id, deadline in deadlines.items() if now >= deadline}
    if expired:
        dep = _stop_at_deadline(dep, expired, now)
    return rollout.move(
        dep,
        lambda r: r.node_id in deadlines,
        now,
        node_ready,
        "moving off a draining node",
        stay=False,
    )


def _stop_at_deadline(dep: Deployment, expired: set[str], now: datetime) -> Deployment:
    kept: list[Replica] = []
    changed = False
    for r in dep.replica_set:
        if r.node_id not in expired or r.desired is not DesiredState.RUN:
            kept.append(r)
            continue
        changed = True
        stopped = replace(
            r,
            superseded=True,
            handover=True,
            desired=DesiredState.STOP,
            state=r.state if r.state in GONE else ReplicaState.STOPPING,
            message="stopped at its node's drain deadline",
            state_time=now,
        )
        kept.append(stopped)
        if not r.superseded and r.index < dep.replicas:
            kept.append(
                Replica(
                    r.index,
                    message="replacing a replica stopped at its node's drain deadline",
                    state_time=now,
                    generation=r.generation,
                    avoid=(r.node_id,),
                )
            )
    if not changed:
        return dep
    kept.sort(key=lambda r: (r.index, not r.superseded))
    return replace(dep, replica_set=tuple(kept))


@dataclass(frozen=True)
class Moves:
    """What steps did on one node: placements stopped there because they moved (their
    replacement took over, or they stopped first within max_unavailable) and placements
    stopped by the deadline."""

    moved: int = 0
    stopped: int = 0


def moves(
    before: Deployment, after: Deployment, deadlines: Mapping[str, datetime], now: datetime
) -> dict[str, Moves]:
    """Per draining node (id -> deadline), what the step from `before` to `after` did to its
    placements: each one asked to stop in this step (desired RUN before, STOP after; told apart
    by placement id) moved, or was stopped if its node's deadline had passed."""
    was = {
        r.placement_id
        for r in before.replica_set
        if r.node_id in deadlines and r.placement_id and r.desired is DesiredState.RUN
    }
    if not was:
        return {}
    found: dict[str, Moves] = {}
    for r in after.replica_set:
        if r.placement_id not in was or r.desired is not DesiredState.STOP:
            continue
        counted = found.get(r.node_id, Moves())
        if now >= deadlines[r.node_id]:
            found[r.node_id] = replace(counted, stopped=counted.stopped + 1)
        else:
            found[r.node_id] = replace(counted, moved=counted.moved + 1)
    return found


def remaining(placements: Iterable[tuple[Deployment, Replica]]) -> tuple[int, int, str]:
    """Of a node's placements (with their deployments): how many still hold something there,
    how many of those wait for their replacement to be placed elsewhere, and why (the first
    replacement's reason)."""
    on_node = waiting = 0
    why = ""
    for dep, r in placements:
        if r.state in GONE:
            continue
        on_node += 1
        if not r.superseded:
            continue
        replacement = next(
            (c for c in dep.replica_set if c.index == r.index and not c.superseded), None
        )
        if replacement is not None and not replacement.node_id:
            waiting += 1
            why = why or replacement.message
    return on_node, waiting, why


def progress(
    drain: Drain, on_node: int, waiting: int, done: Moves, now: datetime, why_waiting: str = ""
) -> Drain:
    """The drain's next report: its counts, its state (COMPLETE once nothing is left on the
    node) and a message for people."""
    moved, stopped = drain.moved + done.moved, drain.stopped + done.stopped
    if on_node == 0:
        return replace(
            drain,
            state=DrainState.COMPLETE,
            end_time=drain.end_time or now,
            remaining=0,
            moved=moved,
            stopped=stopped,
            message=f"drained: {moved} replicas moved, {stopped} stopped at the deadline",
        )
    message = f"{on_node} replicas left on the node"
    if waiting:
        message += f"; {waiting} wait for room elsewhere" + (
            f" ({why_waiting})" if why_waiting else ""
        )
    return replace(
        drain,
        state=DrainState.DRAINING,
        end_time=None,
        remaining=on_node,
        moved=moved,
        stopped=stopped,
        message=message,
    )
