"""`--wait`: follow one deployment on WatchDeployments (no polling) until it runs every replica,
or until it is gone, printing a progress line on stderr as its status changes.

What counts (as `kubectl rollout status` and `nomad job run` decide):
- RUNNING: the deployment says RUNNING and every replica index below `replicas` has a current
  placement that RUNNING, in a version at or after the write that started the wait (a scale
  writes the new count before the scheduler recomputes the status, so the status alone would
  still say RUNNING for the old count).
- It cannot get there, and the wait fails at once with the controller's reason (exit 7): the
  deployment is FAILED (its replicas failed too often), or a replica is unplaced because no
  node fits it (`status_reason_code` UNSCHEDULABLE, the unplaced replica's message says why;
  nomad's `job run` reports such placement failures at once too), or it is being deleted.
  Only versions written after the write that started the wait are judged so, since the status
  written with it is the old one.
- Gone: a DELETED event, or a state without it.
The wait ends at `--timeout` (exit 5) with the last status seen."""

from __future__ import annotations

import contextlib
import enum
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds

from controller.ctl import interrupt
from controller.ctl.failures import CommandError, ExitCode
from controller.ctl.output import age, short

if TYPE_CHECKING:
    from automator67.client import Client

# Deployment.status_reason_code of a deployment with a replica no node fits
# (controller/registry/replicas.py).
UNSCHEDULABLE = "UNSCHEDULABLE"
# Statuses whose reason the progress line shows (for the others, the counts say it all).
EXPLAINED = (
    dpb.DEPLOYMENT_STATUS_PENDING,
    dpb.DEPLOYMENT_STATUS_FAILED,
    dpb.DEPLOYMENT_STATUS_STOPPING,
)


class Goal(enum.Enum):
    RUNNING = "running"
    GONE = "gone"


def revision_of(deployment: dpb.Deployment) -> int:
    """The deployment's version as a number (its etag is the store revision that wrote it); 0
    when the etag is not a number, which makes every version count."""
    return int(deployment.etag) if deployment.etag.isdigit() else 0


def runs_every_replica(dep: dpb.Deployment) -> bool:
    return dep.status == dpb.DEPLOYMENT_STATUS_RUNNING and running(dep) == dep.replicas


def why_it_cannot_run(dep: dpb.Deployment) -> str | None:
    """The reason the deployment cannot reach RUNNING without a change, or None."""
    if dep.status == dpb.DEPLOYMENT_STATUS_FAILED:
        return f"FAILED: {dep.status_reason}"
    if dep.status == dpb.DEPLOYMENT_STATUS_STOPPING:
        return f"it is being deleted ({dep.status_reason})"
    if dep.status_reason_code == UNSCHEDULABLE:
        for r in dep.replica_statuses:
            if not r.superseded and r.state == dpb.REPLICA_STATE_PENDING and not r.node_id:
                return f"unschedulable: replica {r.index}: {r.message}"
        return f"unschedulable: {dep.status_reason}"
    return None


def running(dep: dpb.Deployment) -> int:
    """How many replica indexes (below `replicas`) have a current placement that runs."""
    return len(
        {
            r.index
            for r in dep.replica_statuses
            if not r.superseded and r.state == dpb.REPLICA_STATE_RUNNING and r.index < dep.replicas
        }
    )


def describe(dep: dpb.Deployment | None) -> str:
    """`RUNNING, 3/3 running`, with the reason when it says what is wrong or pending."""
    if dep is None:
        return "not seen yet"
    status = short(dpb.DeploymentStatus.Name(dep.status), "DEPLOYMENT_STATUS_")
    text = f"{status}, {running(dep)}/{dep.replicas} running"
    if dep.status in EXPLAINED and dep.status_reason:
        text += f" ({dep.status_reason})"
    return text


class Progress:
    """The progress line: rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._last = ""

    def show(self, text: str, elapsed: str) -> None:
        """Shows `text (elapsed)`, unless `text` is what the line already says."""
        if text == self._last:
            return
        self._last = text
        line = f"{text} ({elapsed})"
        if self._tty:
            self._stream.write(f"\r\x1b[K{line}")
        else:
            self._stream.write(f"{line}\n")
        self._stream.flush()

    def done(self) -> None:
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()


@contextlib.contextmanager
def closed_after(
    watch: interrupt.Closable, timeout_s: float, progress: Progress
) -> Iterator[threading.Event]:
    """For a command that follows a watch until something happens: closes the watch after
    `timeout_s` (from a timer thread, since iterating a sync watch blocks), so its loop ends;
    the event it yields says whether the timeout is why. Ctrl-C closes it too, and ends the
    command with KeyboardInterrupt (`interrupt.py`). On exit the timer is cancelled, the watch
    closed and the progress line ended."""
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        watch.close()

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        with interrupt.closing(watch):
            yield timed_out
    finally:
        timer.cancel()
        watch.close()
        progress.done()


def wait_for(
    client: Client,
    deployment: dpb.Deployment,
    goal: Goal,
    timeout_s: float,
    progress: Progress | None = None,
) -> dpb.Deployment | None:
    """Follows `deployment` (as a write returned it) until `goal`; returns its last version
    (None once gone). Raises CommandError when it cannot get there or on the timeout."""
    progress = progress or Progress()
    name, since = deployment.name or deployment.id, revision_of(deployment)
    started = time.monotonic()
    latest: dpb.Deployment | None = None
    seen = synced = False
    watch = client.watch_deployments()

    with closed_after(watch, timeout_s, progress) as timed_out:
        for event in watch:
            if event.type == ds.DEPLOYMENT_EVENT_TYPE_RESET:
                latest, synced = None, False
            elif event.type == ds.DEPLOYMENT_EVENT_TYPE_SYNCED:
                synced = True
            elif event.deployment.id != deployment.id:
                continue
            elif event.type == ds.DEPLOYMENT_EVENT_TYPE_DELETED:
                latest = None
                if goal is Goal.RUNNING:
                    raise CommandError(f"{name} was deleted while waiting", ExitCode.CANNOT_RUN)
            else:
                latest = event.deployment
                seen = seen or revision_of(latest) >= since
            if not synced:
                continue
            elapsed = age(time.monotonic() - started)
            if goal is Goal.GONE:
                if latest is None:
                    progress.show(f"{name}: gone", elapsed)
                    return None
                progress.show(f"{name}: {describe(latest)}", elapsed)
                continue
            if latest is None or revision_of(latest) < since:
                continue  # this replica has not caught up with the write yet
            progress.show(f"{name}: {describe(latest)}", elapsed)
            if runs_every_replica(latest):
                return latest
            why = why_it_cannot_run(latest) if revision_of(latest) > since else None
            if why is not None:
                raise CommandError(f"{name} cannot run: {why}", ExitCode.CANNOT_RUN)
        if timed_out.is_set():
            last = describe(latest) if seen or goal is Goal.GONE else "not seen yet"
            raise CommandError(
                f"timed out after {age(timeout_s)} waiting for {name} to be {goal.value}; "
                f"last status {last}",
                ExitCode.UNAVAILABLE,
            )
        raise CommandError("the watch ended", ExitCode.UNAVAILABLE)
