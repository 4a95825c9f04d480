"""A deployment's rollout history, as pure functions on `Deployment` values (issue 14).

A *template* is what a replica runs (image, command, args, env, resources, health check). It is
named by the generation that introduced it (`template_generation`); every placement records the
template it runs (`Replica.generation`), so during a rollout old placements keep being assigned
their old template while new ones get the new one.

    a spec change of the template   generation + 1; a new rollout (the previous one, if still
                                    PROGRESSING, is SUPERSEDED); a template equal to one still in
                                    the history reuses its name (Kubernetes reuses a ReplicaSet
                                    whose pod template hash matches)
    a rollback (asked, or automatic) generation + 1; the template of an earlier rollout, under its
                                    old name; a new rollout with reason ROLLBACK(_REQUESTED)
    any other spec change           generation + 1 only

The history keeps every unfinished rollout and the last `revision_history_limit` finished ones,
and never drops one whose template a placement still runs (its agent needs that template)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime

from controller.models import Deployment, Rollout, RolloutOutcome, Template
from controller.store.rollout_codec import encode_template

PROGRESSING, COMPLETE = RolloutOutcome.PROGRESSING, RolloutOutcome.COMPLETE
ROLLED_BACK, SUPERSEDED = RolloutOutcome.ROLLED_BACK, RolloutOutcome.SUPERSEDED


def spec_hash(template: Template) -> str:
    encoded = json.dumps(encode_template(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def with_template(dep: Deployment, template: Template) -> Deployment:
    return replace(
        dep,
        image=template.image,
        command=template.command,
        args=template.args,
        env=template.env,
        resources=template.resources,
        health_check=template.health_check,
    )


def template_for(dep: Deployment, generation: int) -> Template:
    """The template of the placements that run `generation` (0, from before generations were
    recorded: the current one)."""
    if generation and generation != dep.template_generation:
        for rollout in reversed(dep.rollouts):
            if rollout.template_generation == generation:
                return rollout.template
    return dep.template


def first(dep: Deployment, now: datetime) -> Deployment:
    """A new deployment with its first rollout."""
    rollout = Rollout(1, 1, dep.template, now, progress_time=now)
    return replace(dep, generation=1, template_generation=1, rollouts=(rollout,))


def begin(
    dep: Deployment, template: Template, now: datetime, reason: str = "", message: str = ""
) -> Deployment:
    """`dep` (whose generation was already raised) moving to `template`: a new rollout. A
    rollout still PROGRESSING ends SUPERSEDED, unless the caller already ended it."""
    known = next(
        (r.template_generation for r in reversed(dep.rollouts) if r.template == template), None
    )
    template_generation = known if known is not None else dep.generation
    ended = tuple(
        replace(r, outcome=SUPERSEDED, end_time=now) if r.outcome is PROGRESSING else r
        for r in dep.rollouts
    )
    rollout = Rollout(
        dep.generation,
        template_generation,
        template,
        now,
        reason=reason,
        message=message,
        progress_time=now,
    )
    moved = replace(
        with_template(dep, template),
        template_generation=template_generation,
        rollouts=(*ended, rollout),
    )
    return trim(moved)


def finish(
    dep: Deployment, outcome: RolloutOutcome, now: datetime, reason: str = "", message: str = ""
) -> Deployment:
    """`dep` with its latest rollout ended with `outcome`."""
    if not dep.rollouts:
        return dep
    last = dep.rollouts[-1]
    ended = replace(
        last,
        outcome=outcome,
        end_time=now,
        reason=reason or last.reason,
        message=message or last.message,
    )
    return trim(replace(dep, rollouts=(*dep.rollouts[:-1], ended)))


def resumed(dep: Deployment, now: datetime) -> Deployment:
    """A resumed rollout's progress deadline counts from now (paused time is not counted)."""
    last = current(dep)
    if last is None or last.outcome is not PROGRESSING:
        return dep
    return replace(dep, rollouts=(*dep.rollouts[:-1], replace(last, progress_time=now)))


def current(dep: Deployment) -> Rollout | None:
    """The latest rollout if it is of the current template."""
    if dep.rollouts and dep.rollouts[-1].template_generation == dep.template_generation:
        return dep.rollouts[-1]
    return None


def rollback_target(dep: Deployment, template_generation: int = 0) -> Rollout | None:
    """The rollout whose template a rollback restores: of `template_generation`, or (0) the
    latest one that completed with another template than the current."""
    for rollout in reversed(dep.rollouts):
        if rollout.template_generation == dep.template_generation:
            continue
        if template_generation and rollout.template_generation == template_generation:
            return rollout
        if not template_generation and rollout.outcome is COMPLETE:
            return rollout
    return None


def trim(dep: Deployment) -> Deployment:
    limit = dep.update_strategy.revision_history_limit
    in_use = {r.generation for r in dep.replica_set} | {dep.template_generation}
    finished = [r for r in dep.rollouts if r.outcome is not PROGRESSING]
    drop = len(finished) - limit
    if drop <= 0:
        return dep
    kept: list[Rollout] = []
    for rollout in dep.rollouts:
        if (
            drop > 0
            and rollout.outcome is not PROGRESSING
            and rollout.template_generation not in in_use
        ):
            drop -= 1
            continue
        kept.append(rollout)
    return replace(dep, rollouts=tuple(kept))


def note(dep: Deployment) -> str:
    """What the status reason says of the rollouts: one in progress, or the last rollback."""
    rollout = dep.rollouts[-1] if dep.rollouts else None
    if rollout is None:
        return ""
    if rollout.outcome is PROGRESSING and len(dep.rollouts) > 1:
        paused = " (paused)" if dep.paused else ""
        return (
            f"rolling out generation {rollout.template_generation}{paused}: "
            f"{dep.updated_replicas}/{dep.replicas} updated, "
            f"{dep.available_replicas} available"
        )
    if rollout.reason and rollout.outcome is not PROGRESSING:
        return rollout.message
    if rollout.reason.startswith("ROLLBACK"):
        return rollout.message
    return ""
