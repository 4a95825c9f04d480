"""`automator67 deployments rollout status`'s decision (controller/ctl/rollout.py `verdict`): a
table of deployments as the API returns them, from where the rollout is followed (`since`)."""

from __future__ import annotations

import pytest
from automator67.v1 import deployment_pb2 as dpb

from controller.ctl.failures import ExitCode
from controller.ctl.rollout import verdict

COMPLETE, PROGRESSING = dpb.ROLLOUT_OUTCOME_COMPLETE, dpb.ROLLOUT_OUTCOME_PROGRESSING
ROLLED_BACK, FAILED = dpb.ROLLOUT_OUTCOME_ROLLED_BACK, dpb.ROLLOUT_OUTCOME_FAILED
Step = tuple[int, int, "dpb.RolloutOutcome.ValueType", str]  # generation, template, outcome, why


def deployment(*rollouts: Step, observed: int = 0, paused: bool = False) -> dpb.Deployment:
    generation = max(r[0] for r in rollouts)
    dep = dpb.Deployment(
        name="web",
        replicas=4,
        generation=generation,
        observed_generation=observed or generation,
        paused=paused,
        updated_replicas=2,
        available_replicas=3,
    )
    for gen, template, outcome, reason in rollouts:
        dep.rollout_history.add(
            generation=gen,
            template_generation=template,
            outcome=outcome,
            reason=reason,
            message=f"{reason or 'rollout'} of {template}",
        )
    return dep


# name: (deployment, since, exit code or None while it goes on, words in the line)
CASES: dict[str, tuple[dpb.Deployment, int, ExitCode | None, str]] = {
    "complete": (
        deployment((1, 1, COMPLETE, ""), (2, 2, COMPLETE, "")),
        2,
        ExitCode.OK,
        "successfully rolled out (generation 2)",
    ),
    "in progress": (
        deployment((1, 1, COMPLETE, ""), (2, 2, PROGRESSING, "")),
        2,
        None,
        "2 of 4 updated replicas, 3 available",
    ),
    "not observed yet": (
        deployment((1, 1, COMPLETE, ""), (2, 2, COMPLETE, ""), observed=1),
        2,
        None,
        "generation 2 to be observed",
    ),
    "paused": (
        deployment((1, 1, COMPLETE, ""), (2, 2, PROGRESSING, ""), paused=True),
        2,
        ExitCode.OK,
        "is paused",
    ),
    "rolled back while followed": (
        deployment(
            (1, 1, COMPLETE, ""),
            (2, 2, ROLLED_BACK, "ROLLOUT_HEALTH_CHECK_FAILED"),
            (3, 1, PROGRESSING, "ROLLBACK"),
        ),
        2,
        ExitCode.CANNOT_RUN,
        "generation 2 rolled back (ROLLOUT_HEALTH_CHECK_FAILED)",
    ),
    "the automatic rollback ended": (
        deployment(
            (1, 1, COMPLETE, ""),
            (2, 2, ROLLED_BACK, "ROLLOUT_PROGRESS_DEADLINE_EXCEEDED"),
            (3, 1, COMPLETE, "ROLLBACK"),
        ),
        3,
        ExitCode.CANNOT_RUN,
        "ROLLOUT_PROGRESS_DEADLINE_EXCEEDED",
    ),
    "failed with nothing to roll back to": (
        deployment((1, 1, FAILED, "ROLLOUT_REPLICAS_FAILING")),
        1,
        ExitCode.CANNOT_RUN,
        "generation 1 failed (ROLLOUT_REPLICAS_FAILING)",
    ),
    "an older failure, then a good update": (
        deployment(
            (2, 2, ROLLED_BACK, "ROLLOUT_HEALTH_CHECK_FAILED"),
            (3, 1, COMPLETE, "ROLLBACK"),
            (4, 4, COMPLETE, ""),
        ),
        4,
        ExitCode.OK,
        "successfully rolled out (generation 4)",
    ),
    "a requested rollback that completed": (
        deployment(
            (1, 1, COMPLETE, ""), (2, 2, COMPLETE, ""), (3, 1, COMPLETE, "ROLLBACK_REQUESTED")
        ),
        3,
        ExitCode.OK,
        "successfully rolled out (generation 1)",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_where_a_rollout_stands(name: str) -> None:
    dep, since, code, says = CASES[name]
    found = verdict(dep, since)
    assert found.code == code, found
    assert says in found.line, found
