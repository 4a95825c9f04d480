"""How the agent converges its replicas to the controller's Assignments (workloads.py), with a
fake driver whose workloads the tests move by hand; then the wiring: a session hands the stream's
assignments over and puts the reports in every beat, and the agent advertises its driver and
stops its replicas when it stops. No sockets, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb

from controller.agent.drivers.base import (
    ENDED,
    FAILED,
    RUNNING,
    STOPPED,
    Progress,
    State,
    Status,
)
from controller.agent.runner import Agent
from controller.agent.session import EndKind, run_session
from controller.agent.workloads import Workloads

from .test_agent_runner import FakeClient, FakeController, settings
from .test_agent_session import FakeStream, load

RUN = deployment_pb2.REPLICA_DESIRED_STATE_RUN
STOP = deployment_pb2.REPLICA_DESIRED_STATE_STOP
Row = tuple[str, int, str, str]  # deployment id, index, state name, message


class FakeWorkload:
    """Moves only when the test moves it; a stop ends it at once unless `slow_stop`."""

    def __init__(self, spec: deployment_pb2.Deployment, index: int, slow_stop: bool) -> None:
        self.spec, self.index, self.slow_stop = spec, index, slow_stop
        self.progress = Progress()
        self.stops = 0

    @property
    def status(self) -> Status:
        return self.progress.status

    def stop(self) -> None:
        self.stops += 1
        if not self.slow_stop:
            self.progress.move(STOPPED)

    async def wait_for(self, states: Iterable[State]) -> Status:
        return await self.progress.wait_for(states)

    def move(self, state: State, message: str = "") -> None:
        self.progress.move(state, message)


class FakeDriver:
    name = "fake"

    def __init__(self, slow_stop: bool = False) -> None:
        self.slow_stop = slow_stop
        self.started: list[FakeWorkload] = []

    def start(
        self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
    ) -> FakeWorkload:
        workload = FakeWorkload(deployment, replica_index, self.slow_stop)
        self.started.append(workload)
        return workload

    def of(self, deployment_id: str, index: int = 0) -> list[FakeWorkload]:
        return [w for w in self.started if (w.spec.id, w.index) == (deployment_id, index)]


def assignment(
    deployment_id: str = "d1", index: int = 0, etag: str = "1", desired: Any = RUN
) -> hb.Assignment:
    spec = deployment_pb2.Deployment(id=deployment_id, name=deployment_id, etag=etag)
    return hb.Assignment(deployment=spec, replica_index=index, desired_state=desired)


def the_set(*assignments: hb.Assignment) -> hb.Assignments:
    return hb.Assignments(assignments=assignments)


def rows(reports: Iterable[hb.ReplicaReport]) -> list[Row]:
    return [
        (
            r.deployment_id,
            r.replica_index,
            deployment_pb2.ReplicaState.Name(r.state).removeprefix("REPLICA_STATE_"),
            r.message,
        )
        for r in reports
    ]


def converged(driver: FakeDriver | None = None) -> tuple[Workloads, FakeDriver]:
    driver = driver or FakeDriver()
    return Workloads(driver), driver


# Converging


async def test_a_run_assignment_starts_its_replica_once_however_often_the_set_comes() -> None:
    workloads, driver = converged()

    for _ in range(3):
        workloads.assign(the_set(assignment("d1", 0), assignment("d1", 1)))

    assert [(w.spec.id, w.index) for w in driver.started] == [("d1", 0), ("d1", 1)]


async def test_every_report_lists_every_replica_known_in_a_stable_order() -> None:
    workloads, driver = converged()
    workloads.assign(the_set(assignment("d2", 0), assignment("d1", 1), assignment("d1", 0)))
    driver.of("d1", 1)[0].move(RUNNING)

    first, second = workloads.reports(), workloads.reports()

    assert (
        rows(first)
        == rows(second)
        == [
            ("d1", 0, "STARTING", ""),
            ("d1", 1, "RUNNING", ""),
            ("d2", 0, "STARTING", ""),
        ]
    )


async def test_a_replica_that_ended_on_its_own_is_reported_and_not_restarted() -> None:
    workloads, driver = converged()
    workloads.assign(the_set(assignment()))
    [workload] = driver.started
    workload.move(RUNNING)
    workload.move(FAILED, "exit code 1")

    workloads.assign(the_set(assignment()))  # the same set again, before the controller acts

    assert rows(workloads.reports()) == [("d1", 0, "FAILED", "exit code 1")]
    assert len(driver.started) == 1  # the controller re-places it, after a backoff


async def test_a_new_spec_version_restarts_the_replica() -> None:
    workloads, driver = converged()
    workloads.assign(the_set(assignment(etag="1")))
    old = driver.started[0]
    old.move(RUNNING)

    workloads.assign(the_set(assignment(etag="2")))

    assert old.status == Status(STOPPED)
    [new] = driver.started[1:]
    assert new.spec.etag == "2"
    assert rows(workloads.reports()) == [("d1", 0, "STARTING", "")]


async def test_a_restart_waits_for_the_old_run_to_end_and_says_so_meanwhile() -> None:
    workloads, driver = converged(FakeDriver(slow_stop=True))
    workloads.assign(the_set(assignment(etag="1")))
    old = driver.started[0]
    old.move(RUNNING)

    workloads.assign(the_set(assignment(etag="2")))

    assert (old.stops, len(driver.started)) == (1, 1)
    assert rows(workloads.reports()) == [("d1", 0, "STARTING", "restarting")]
    old.move(STOPPED)
    assert rows(workloads.reports()) == [("d1", 0, "STARTING", "")]  # the new run, started
    assert [w.spec.etag for w in driver.started] == ["1", "2"]
    assert old.stops == 1


async def test_a_stop_assignment_stops_the_replica_and_reports_it_stopped() -> None:
    workloads, driver = converged()
    workloads.assign(the_set(assignment()))
    driver.started[0].move(RUNNING)

    workloads.assign(the_set(assignment(desired=STOP)))

    assert driver.started[0].stops == 1
    assert rows(workloads.reports()) == [("d1", 0, "STOPPED", "")]


async def test_a_replica_stopping_slowly_is_reported_running_until_it_stopped() -> None:
    workloads, driver = converged(FakeDriver(slow_stop=True))
    workloads.assign(the_set(assignment()))
    driver.started[0].move(RUNNING)

    workloads.assign(the_set(assignment(desired=STOP)))

    # The controller shows it STOPPING: it still runs, on its way out.
    assert rows(workloads.reports()) == [("d1", 0, "RUNNING", "")]
    driver.started[0].move(STOPPED)
    assert rows(workloads.reports()) == [("d1", 0, "STOPPED", "")]


async def test_a_stop_of_a_replica_that_never_ran_here_is_reported_stopped_without_a_start() -> (
    None
):
    # E.g. a deployment deleted while the agent was restarting: the controller waits for it.
    workloads, driver = converged()

    workloads.assign(the_set(assignment(desired=STOP)))

    assert driver.started == []
    assert rows(workloads.reports()) == [("d1", 0, "STOPPED", "")]


async def test_a_replica_that_ended_on_its_own_and_is_then_stopped_is_reported_stopped() -> None:
    # What the controller asked for holds: it does not run. EXITED would leave it waiting.
    workloads, driver = converged()
    workloads.assign(the_set(assignment()))
    driver.started[0].move(FAILED, "exit code 2")

    workloads.assign(the_set(assignment(desired=STOP)))

    assert rows(workloads.reports()) == [("d1", 0, "STOPPED", "exit code 2")]


async def test_a_replica_in_no_assignment_is_stopped_then_forgotten() -> None:
    workloads, driver = converged(FakeDriver(slow_stop=True))
    workloads.assign(the_set(assignment("d1"), assignment("d2")))
    for workload in driver.started:
        workload.move(RUNNING)

    workloads.assign(the_set(assignment("d2")))

    [d1] = driver.of("d1")
    assert d1.stops == 1
    assert rows(workloads.reports()) == [("d1", 0, "RUNNING", ""), ("d2", 0, "RUNNING", "")]
    d1.move(STOPPED)
    assert rows(workloads.reports()) == [("d2", 0, "RUNNING", "")]
    workloads.assign(the_set())
    driver.of("d2")[0].move(STOPPED)
    assert workloads.reports() == []


async def test_a_replica_stopped_for_leaving_the_set_runs_again_when_it_comes_back() -> None:
    # A superseded placement dropped, then the same replica placed here again at once: the
    # stop of the old run must not leave the new placement STOPPED.
    workloads, driver = converged(FakeDriver(slow_stop=True))
    workloads.assign(the_set(assignment()))
    driver.started[0].move(RUNNING)
    workloads.assign(the_set())

    workloads.assign(the_set(assignment()))
    assert len(driver.started) == 1
    driver.started[0].move(STOPPED)

    assert rows(workloads.reports()) == [("d1", 0, "STARTING", "")]
    assert len(driver.started) == 2


async def test_two_placements_of_one_replica_on_this_node_run_it_once() -> None:
    workloads, driver = converged()

    workloads.assign(the_set(assignment(desired=STOP), assignment(desired=RUN)))
    workloads.assign(the_set(assignment(desired=RUN), assignment(desired=STOP)))

    assert len(driver.started) == 1 and driver.started[0].stops == 0


async def test_a_driver_that_raises_gives_a_failed_replica_not_a_broken_agent() -> None:
    class Broken(FakeDriver):
        def start(
            self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
        ) -> Any:
            raise RuntimeError("bug")

    workloads = Workloads(Broken())

    workloads.assign(the_set(assignment()))

    assert rows(workloads.reports()) == [("d1", 0, "FAILED", "driver error: RuntimeError('bug')")]


async def test_a_long_message_is_cut_to_what_the_controller_accepts() -> None:
    workloads, driver = converged()
    workloads.assign(the_set(assignment()))
    driver.started[0].move(FAILED, "x" * 5000)

    [report] = workloads.reports()

    assert len(report.message) == 1024


async def test_shutdown_stops_every_replica_and_waits_for_them() -> None:
    workloads, driver = converged(FakeDriver(slow_stop=True))
    workloads.assign(the_set(assignment("d1"), assignment("d2"), assignment("d3")))
    driver.of("d3")[0].move(FAILED, "exit code 1")

    shutting_down = asyncio.ensure_future(workloads.shutdown(timeout_s=10))
    await asyncio.sleep(0)
    assert not shutting_down.done()
    assert [w.stops for w in driver.started] == [1, 1, 0]
    for workload in driver.started[:2]:
        workload.move(STOPPED)

    assert await shutting_down == 2
    assert all(w.status.state in ENDED for w in driver.started)
    assert workloads.reports() == []


# Wiring


async def test_a_session_hands_over_assignments_and_every_beat_carries_the_reports() -> None:
    workloads, driver = converged()
    stopping = asyncio.Event()

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        if sequence == 1:
            stream.send(hb.HeartbeatResponse(assignments=the_set(assignment())))
        elif sequence == 2:
            driver.started[0].move(RUNNING)
        else:
            stopping.set()

    stream = FakeStream(on_beat=on_beat, interval_s=0.001)

    end = await run_session(stream, load, stopping, workloads=workloads)

    assert end.kind is EndKind.STOPPED
    assert [rows(b.replicas) for b in stream.beats] == [
        [],
        [("d1", 0, "STARTING", "")],
        [("d1", 0, "RUNNING", "")],
    ]


async def test_the_agent_advertises_its_driver_and_stops_its_replicas_when_it_stops(
    tmp_path: Path,
) -> None:
    controller = FakeController()
    advertised: list[tuple[str, ...]] = []
    driver = FakeDriver()

    class Recording(FakeClient):
        def heartbeat(
            self,
            node_id: str,
            agent_version: str = "",
            drivers: Sequence[str] = (),
            *,
            open_timeout_s: float = 10.0,
        ) -> FakeStream:
            advertised.append(tuple(drivers))
            return super().heartbeat(node_id, agent_version, drivers)

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        if sequence == 1:
            stream.send(hb.HeartbeatResponse(assignments=the_set(assignment())))
        else:
            agent.stop()

    agent = Agent(
        settings(tmp_path),
        load=hb.NodeLoad,
        rand=lambda: 1e-6,
        client=lambda target: Recording(controller),
        workloads=Workloads(driver),
    )
    controller.streams.append(FakeStream(on_beat=on_beat, interval_s=0.001))

    await agent.run()

    assert advertised == [("fake",)]
    [workload] = driver.started
    assert (workload.stops, workload.status) == (1, Status(STOPPED))


@pytest.mark.parametrize("name", ["simulated", "exec"])
def test_the_agent_builds_the_driver_its_settings_name(tmp_path: Path, name: str) -> None:
    agent = Agent(settings(tmp_path, driver=name), load=hb.NodeLoad)

    assert agent.workloads.driver.name == name
