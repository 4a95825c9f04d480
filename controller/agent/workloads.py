"""What the agent runs: the replicas of this node, converged to the controller's latest
`Assignments`, and reported in every beat.

    assign(set)  the desired state, all of it (sent after every (re)connect and whenever it
                 changes; it replaces the previous set), then converge
    reports()    converge, then the status of every replica known here: level-triggered, in
                 EVERY beat, so a lost message or a new stream leaves the controller out of
                 date for one beat at most

Converging, per placement (deployment id, replica index, placement id; the id is "" from
controllers that predate placement ids, and then one process serves an index):
    RUN, not started here               start it
    RUN, its deployment's etag changed  stop it; once it ended, start the new spec
    RUN, stopped by us before           once it ended, start it again
    RUN, ended on its own               leave it: the controller re-places it after a backoff
    STOP                                stop it, report STOPPED (also when it never ran here,
                                        e.g. after an agent restart, so the controller moves on)
    in no assignment                    stop it; forget it once it ended
It never blocks: it asks for stops and reads their outcome at the next call (a beat at the
latest). The rules are the agent's half of controller/registry/replicas.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb

from controller.agent.drivers.base import (
    ENDED,
    MAX_MESSAGE,
    STARTING,
    STOPPED,
    Driver,
    Failed,
    Status,
    Workload,
)
from controller.agent.drivers.base import (
    RUNNING as RUNNING_STATE,
)
from controller.agent.health import UNSPECIFIED, Prober, probe_for
from controller.agent.state import WorkloadRecord

log = logging.getLogger("controller.agent.workloads")
RUN = deployment_pb2.REPLICA_DESIRED_STATE_RUN
MAX_REPORTS = 1000  # the controller's limit per beat
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
Key = tuple[str, int, str]  # (deployment id, replica index, placement id)


@dataclass
class _Replica:
    assignment: hb.Assignment  # the latest one of this replica
    assigned: bool = True  # in the latest set
    workload: Workload | None = None
    etag: str = ""  # the spec version `workload` runs
    stopping: bool = False  # we asked `workload` to stop
    reported: Status | None = None  # the status last logged ...
    reported_etag: str = ""  # ... and the spec version it was of
    prober: Prober | None = None  # probes `workload` if its spec has a health check


class Workloads:
    """The replicas of one agent, across its heartbeat streams. Not thread-safe: one event
    loop calls it (the session's reader assigns, its beat loop reports)."""

    def __init__(
        self,
        driver: Driver,
        save_records: Callable[[tuple[WorkloadRecord, ...]], None] | None = None,
    ) -> None:
        self.driver = driver
        self._replicas: dict[Key, _Replica] = {}
        # What runs, for a restarted agent to adopt (agent/drivers/adoption.py): saved whenever a
        # driver that can adopt (the exec driver) spawned or lost a process.
        self._save_records = save_records
        self._records: tuple[WorkloadRecord, ...] = ()
        if save_records is not None and hasattr(driver, "on_change"):
            driver.on_change = self._record

    def adopt(self, records: Iterable[WorkloadRecord]) -> int:
        """Takes over the recorded processes that still run (before any assignment arrives:
        they are reported RUNNING, and the first assignments keep or stop them); returns how
        many."""
        adopt = getattr(self.driver, "adopt", None)
        if adopt is None:
            return 0  # a driver whose workloads end with the agent (simulated)
        adopted = 0
        for record in records:
            key = (record.deployment_id, record.replica_index, record.placement_id)
            workload = adopt(record)
            if workload is None or key in self._replicas:
                continue
            spec = deployment_pb2.Deployment(id=record.deployment_id, etag=record.etag)
            assignment = hb.Assignment(
                deployment=spec,
                replica_index=record.replica_index,
                desired_state=RUN,
                placement_id=record.placement_id,
            )
            self._replicas[key] = _Replica(assignment, workload=workload, etag=record.etag)
            adopted += 1
            fields = {"deployment_id": key[0], "replica_index": key[1], "placement_id": key[2]}
            log.info("replica adopted", extra={"fields": {**fields, "pid": record.pid}})
        self._record()
        return adopted

    def _record(self) -> None:
        if self._save_records is None:
            return
        records = []
        for key, replica in sorted(self._replicas.items()):
            workload = replica.workload
            pid = getattr(workload, "pid", None)
            started = getattr(workload, "create_time", None)
            if workload is None or pid is None or started is None:
                continue
            if workload.status.state in ENDED:
                continue
            records.append(WorkloadRecord(key[0], key[1], key[2], replica.etag, pid, started))
        if tuple(records) != self._records:
            self._records = tuple(records)
            try:
                self._save_records(self._records)
            except OSError as error:
                log.warning("cannot record workloads", extra={"fields": {"error": str(error)}})

    def assign(self, assignments: hb.Assignments) -> None:
        wanted: dict[Key, hb.Assignment] = {}
        for assignment in assignments.assignments:
            key = (assignment.deployment.id, assignment.replica_index, assignment.placement_id)
            # Without placement ids, two placements of one replica on one node (a superseded one
            # and its replacement) cannot be told apart: one process serves both, so RUN wins.
            if key not in wanted or assignment.desired_state == RUN:
                wanted[key] = assignment
        for key, replica in self._replicas.items():
            replica.assigned = key in wanted
        for key, assignment in wanted.items():
            known = self._replicas.get(key)
            if known is None:
                self._replicas[key] = _Replica(assignment)
            else:
                known.assignment = assignment
        self._converge()

    def reports(self) -> list[hb.ReplicaReport]:
        self._converge()
        reports = []
        for key in sorted(self._replicas):
            replica = self._replicas[key]
            status = _status_of(replica)
            # A restart onto a new spec version can be too quick for a beat to see it STARTING:
            # the same state of a new version is news too.
            if status != replica.reported or replica.etag != replica.reported_etag:
                replica.reported, replica.reported_etag = status, replica.etag
                _log_status(key, status, replica.etag)
            prober = replica.prober
            unhealthy = prober is not None and prober.message and status.state == RUNNING_STATE
            reports.append(
                hb.ReplicaReport(
                    deployment_id=key[0],
                    replica_index=key[1],
                    state=status.state,
                    message=(prober.message if unhealthy and prober else status.message)[
                        :MAX_MESSAGE
                    ],
                    placement_id=key[2],
                    generation=replica.assignment.deployment.template_generation,
                    health=prober.health if prober is not None else UNSPECIFIED,
                )
            )
        if len(reports) > MAX_REPORTS:
            log.warning("too many replicas to report", extra={"fields": {"count": len(reports)}})
        return reports[:MAX_REPORTS]

    async def shutdown(self, timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> int:
        """Stops every replica and waits until all have ended, at most `timeout_s`; returns
        how many were still running."""
        running = [
            r.workload
            for r in self._replicas.values()
            if r.workload is not None and r.workload.status.state not in ENDED
        ]
        for replica in self._replicas.values():
            _stop_probing(replica)
        self._replicas.clear()
        for workload in running:
            workload.stop()
        if running:
            waits = [asyncio.ensure_future(w.wait_for(ENDED)) for w in running]
            _, late = await asyncio.wait(waits, timeout=timeout_s)
            for wait in late:
                wait.cancel()
            if late:
                log.warning("replicas did not stop in time", extra={"fields": {"count": len(late)}})
        return len(running)

    def _converge(self) -> None:
        for key, replica in list(self._replicas.items()):
            workload = replica.workload
            ended = workload is not None and workload.status.state in ENDED
            if not (replica.assigned and replica.assignment.desired_state == RUN):
                if workload is not None and not ended and not replica.stopping:
                    why = "asked to stop" if replica.assigned else "no longer assigned"
                    self._stop(key, replica, workload, why)
                    ended = workload.status.state in ENDED
                if not replica.assigned and (workload is None or ended):
                    _stop_probing(replica)
                    del self._replicas[key]
                continue
            spec = replica.assignment.deployment
            if (
                workload is not None
                and not ended
                and not replica.stopping
                and (replica.etag != spec.etag)
            ):
                self._stop(
                    key, replica, workload, f"spec version {spec.etag} replaces {replica.etag}"
                )
                ended = workload.status.state in ENDED
            if workload is None or (ended and (replica.stopping or replica.etag != spec.etag)):
                self._start(key, replica)
            self._probe(key, replica)

    def _probe(self, key: Key, replica: _Replica) -> None:
        """Starts probing a placement that runs and has a health check (also one adopted after
        a restart), once per workload."""
        spec, workload = replica.assignment.deployment, replica.workload
        if replica.prober is not None or workload is None or replica.stopping:
            return
        if not spec.HasField("health_check") or workload.status.state in ENDED:
            return
        environment = getattr(self.driver, "environment", None)
        env = environment(spec, key[1], key[2]) if environment is not None else dict(spec.env)
        probe = probe_for(spec.health_check, self.driver.name, env)
        replica.prober = Prober(spec.health_check, probe, workload)

    def _start(self, key: Key, replica: _Replica) -> None:
        spec = replica.assignment.deployment
        try:
            replica.workload = self.driver.start(spec, key[1], key[2])
        except Exception as error:  # the driver's contract says never; a bug must still show
            log.exception("driver failed to start a replica")
            replica.workload = Failed(f"driver error: {error!r}")
        replica.etag, replica.stopping = spec.etag, False
        _stop_probing(replica)  # a new workload gets a new prober
        fields = {"deployment_id": key[0], "replica_index": key[1], "etag": spec.etag}
        if key[2]:
            fields["placement_id"] = key[2]
        log.info("replica starting", extra={"fields": {**fields, "driver": self.driver.name}})

    def _stop(self, key: Key, replica: _Replica, workload: Workload, why: str) -> None:
        workload.stop()
        replica.stopping = True
        _stop_probing(replica)
        fields = {"deployment_id": key[0], "replica_index": key[1], "reason": why}
        if key[2]:
            fields["placement_id"] = key[2]
        log.info("replica stopping", extra={"fields": fields})


def _stop_probing(replica: _Replica) -> None:
    if replica.prober is not None:
        replica.prober.stop()
        replica.prober = None


def _status_of(replica: _Replica) -> Status:
    """What to report of `replica`: the workload's status, seen through what was asked of it."""
    workload = replica.workload
    run = replica.assignment.desired_state == RUN
    if workload is None:  # a STOP for a replica that never ran here
        return Status(STARTING) if run and replica.assigned else Status(STOPPED)
    status = workload.status
    if not replica.assigned:
        return status
    if not run:
        # Asked to stop and not running: STOPPED, however it ended.
        return Status(STOPPED, status.message) if status.state in ENDED else status
    if replica.stopping:
        return Status(STARTING, "restarting")
    return status


def _log_status(key: Key, status: Status, etag: str) -> None:
    state = deployment_pb2.ReplicaState.Name(status.state).removeprefix("REPLICA_STATE_")
    fields = {
        "deployment_id": key[0],
        "replica_index": key[1],
        "placement_id": key[2],
        "state": state,
        "message": status.message,
        "etag": etag,
    }
    log.info("replica state", extra={"fields": fields})
