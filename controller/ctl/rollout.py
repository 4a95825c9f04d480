"""`automator67 deployments rollout status|history|undo|pause|resume NAME`, as `kubectl rollout`.

`status` says where the deployment's latest rollout stands, once, or with `--watch` follows it on
WatchDeployments (no polling; a progress line on stderr) until it ends. It succeeds (exit 0)
once the rollout COMPLETE or paused; it fails with the rollout's reason (exit 7) when the
rollout it follows was ROLLED_BACK or FAILED, and when the deployment's latest rollout is the
automatic rollback of a failed one (`kubectl rollout status` exits 1 on a missed progress
deadline; here a failed rollout is reverted on its own, so the revert is what is left to see).
`--watch` ends at `--timeout` (exit 5)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from automator67.client import Client
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds

from controller.ctl import resolve
from controller.ctl.failures import CommandError, ExitCode
from controller.ctl.output import (
    Column,
    Console,
    Format,
    age,
    ago,
    render_table,
    short,
    timestamp,
    to_json,
)
from controller.ctl.wait import Progress, closed_after

PROGRESSING = dpb.ROLLOUT_OUTCOME_PROGRESSING
ENDED_BADLY = (dpb.ROLLOUT_OUTCOME_ROLLED_BACK, dpb.ROLLOUT_OUTCOME_FAILED)
AUTOMATIC_ROLLBACK = "ROLLBACK"  # registry/rollouts.py: the reason of a rollback it started
HISTORY = [
    Column("GENERATION"),
    Column("TEMPLATE"),
    Column("OUTCOME"),
    Column("STARTED"),
    Column("ENDED"),
    Column("IMAGE/COMMAND", shrink=True, min_width=12),
    Column("REASON"),
    Column("MESSAGE", shrink=True, min_width=10),
]


@dataclass(frozen=True)
class Verdict:
    """Where a rollout stands: a line for people, and the exit code once it ended (None while
    it goes on)."""

    line: str
    code: ExitCode | None


def outcome_name(outcome: dpb.RolloutOutcome.ValueType) -> str:
    return short(dpb.RolloutOutcome.Name(outcome), "ROLLOUT_OUTCOME_")


def verdict(dep: dpb.Deployment, since: int) -> Verdict:
    """Where the rollouts of `dep` from generation `since` on stand."""
    name = dep.name or dep.id
    history = list(dep.rollout_history)
    if not history:
        return Verdict(f'deployment "{name}" has no rollout', ExitCode.OK)
    latest = history[-1]
    failed = [r for r in history if r.outcome in ENDED_BADLY and r.generation >= since]
    if (
        latest.reason == AUTOMATIC_ROLLBACK
        and len(history) > 1
        and history[-2].outcome in ENDED_BADLY
    ):
        failed.append(history[-2])  # the rollout that the rollback reverted
    if failed:
        bad = max(failed, key=lambda r: r.generation)
        return Verdict(
            f'deployment "{name}": the rollout of generation {bad.template_generation} '
            f"{outcome_name(bad.outcome).lower().replace('_', ' ')} ({bad.reason}): "
            f"{bad.message}",
            ExitCode.CANNOT_RUN,
        )
    if dep.observed_generation < dep.generation:
        return Verdict(
            f'waiting for deployment "{name}" generation {dep.generation} to be observed', None
        )
    counts = (
        f"{dep.updated_replicas} of {dep.replicas} updated replicas, "
        f"{dep.available_replicas} available"
    )
    if dep.paused and latest.outcome == PROGRESSING:
        return Verdict(
            f'deployment "{name}" rollout of generation {latest.template_generation} is '
            f"paused: {counts}",
            ExitCode.OK,
        )
    if latest.outcome == PROGRESSING:
        return Verdict(
            f'waiting for deployment "{name}" rollout of generation '
            f"{latest.template_generation} to finish: {counts}",
            None,
        )
    return Verdict(
        f'deployment "{name}" successfully rolled out (generation {latest.template_generation})',
        ExitCode.OK,
    )


def status(client: Client, args: argparse.Namespace, console: Console) -> int:
    dep = resolve.deployment(client, args.deployment)
    since = dep.rollout_history[-1].generation if dep.rollout_history else dep.generation
    now = verdict(dep, since)
    if not args.watch or now.code is not None:
        return _report(now, console)
    return _report(_follow(client, dep, since, args.timeout, Progress(console.err)), console)


def _report(result: Verdict, console: Console) -> int:
    if result.code is ExitCode.CANNOT_RUN:
        raise CommandError(result.line, result.code)
    console.print(result.line)
    return int(result.code or ExitCode.OK)


def _follow(
    client: Client, dep: dpb.Deployment, since: int, timeout_s: float, progress: Progress
) -> Verdict:
    name, started = dep.name or dep.id, time.monotonic()
    latest = verdict(dep, since)
    watch = client.watch_deployments()

    with closed_after(watch, timeout_s, progress) as timed_out:
        for event in watch:
            if event.deployment.id != dep.id:
                continue  # another deployment's, or a SYNCED / RESET marker
            if event.type == ds.DEPLOYMENT_EVENT_TYPE_DELETED:
                raise CommandError(f"{name} was deleted", ExitCode.CANNOT_RUN)
            latest = verdict(event.deployment, since)
            if latest.code is not None:
                return latest
            progress.show(latest.line, age(time.monotonic() - started))
        if timed_out.is_set():
            raise CommandError(
                f"timed out after {age(timeout_s)} waiting for the rollout of {name}; "
                f"last: {latest.line}",
                ExitCode.UNAVAILABLE,
            )
        raise CommandError("the watch ended", ExitCode.UNAVAILABLE)


def history(client: Client, args: argparse.Namespace, console: Console) -> None:
    dep = resolve.deployment(client, args.deployment)
    if Format(args.output) is Format.JSON:
        kept = dpb.Deployment(id=dep.id, name=dep.name, rollout_history=dep.rollout_history)
        console.print(to_json(kept))
        return
    if not dep.rollout_history:
        console.note(f'deployment "{dep.name}" has no rollout')
        return
    now = console.clock()
    rows = [
        [
            str(r.generation),
            str(r.template_generation),
            outcome_name(r.outcome),
            ago(timestamp(r.start_time), now, never="-"),
            ago(timestamp(r.end_time), now, never="-"),
            r.image or " ".join(r.command) or "-",
            r.reason or "-",
            r.message or "-",
        ]
        for r in dep.rollout_history
    ]
    console.print(render_table(HISTORY, rows, console.width))


def undo(client: Client, args: argparse.Namespace, console: Console) -> None:
    dep = resolve.deployment(client, args.deployment)
    back = client.rollback_deployment(dep.id, args.to_generation, etag=args.etag)
    _print(back, f"rolled back to generation {back.template_generation}", args, console)


def pause(client: Client, args: argparse.Namespace, console: Console) -> None:
    dep = resolve.deployment(client, args.deployment)
    _print(client.pause_deployment(dep.id), "paused", args, console)


def resume(client: Client, args: argparse.Namespace, console: Console) -> None:
    dep = resolve.deployment(client, args.deployment)
    _print(client.resume_deployment(dep.id), "resumed", args, console)


def _print(dep: dpb.Deployment, verb: str, args: argparse.Namespace, console: Console) -> None:
    if Format(args.output) is Format.JSON:
        console.print(to_json(dep))
    else:
        console.print(f"deployment/{dep.name} {verb}")
