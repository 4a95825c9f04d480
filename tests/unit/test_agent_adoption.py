"""Adoption of the exec driver's processes (agent/drivers/adoption.py) with real processes: what the
driver starts is recorded with its pid and start time; a recorded process that still runs is
adopted (RUNNING, no second copy), kept by an assignment at the same spec version and stopped
(its whole group) when no assignment names it; a recycled pid (another start time) or a dead
one is never adopted; an adopted process that ends on its own is FAILED. A workload's stderr
goes to a file (a pipe would break with its agent) that gives the failure's last line and stays
bounded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb

from controller.agent.drivers.adoption import adopt
from controller.agent.drivers.base import FAILED, RUNNING, STOPPED
from controller.agent.drivers.exec import ExecDriver
from controller.agent.state import WorkloadRecord
from controller.agent.stderr_file import MAX_BYTES, StderrFile
from controller.agent.workloads import Workloads

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]
DEP = "5d1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
WAIT_S = 20.0


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own, like the exec driver's; killed at teardown."""
    process = subprocess.Popen(SLEEP, start_new_session=True)
    yield process
    process.kill()
    process.wait()


def record_of(process: subprocess.Popen[bytes], **changes: object) -> WorkloadRecord:
    fields: dict[str, object] = {
        "deployment_id": DEP,
        "replica_index": 0,
        "placement_id": "p0",
        "etag": "1",
        "pid": process.pid,
    }
    fields.update(changes)
    if "create_time" not in fields:
        fields["create_time"] = psutil.Process(process.pid).create_time()
    return WorkloadRecord(**fields)  # type: ignore[arg-type]


def assignments(*placements: tuple[int, str], etag: str = "1") -> hb.Assignments:
    spec = deployment_pb2.Deployment(id=DEP, name="app", command=SLEEP, etag=etag)
    return hb.Assignments(
        assignments=[
            hb.Assignment(
                deployment=spec,
                replica_index=index,
                desired_state=deployment_pb2.REPLICA_DESIRED_STATE_RUN,
                placement_id=placement_id,
            )
            for index, placement_id in placements
        ]
    )


async def test_what_the_driver_starts_is_recorded_and_forgotten_when_it_ends() -> None:
    saved: list[tuple[WorkloadRecord, ...]] = []
    recorded = asyncio.Event()

    def save(records: tuple[WorkloadRecord, ...]) -> None:
        saved.append(records)
        recorded.set()

    workloads = Workloads(ExecDriver(stop_grace_s=5), save)
    workloads.assign(assignments((0, "p0")))

    await asyncio.wait_for(recorded.wait(), WAIT_S)  # the spawn runs in the background
    (record,) = saved[-1]
    assert (record.placement_id, record.etag) == ("p0", "1")
    assert psutil.Process(record.pid).create_time() == pytest.approx(record.create_time)

    await workloads.shutdown(WAIT_S)
    assert saved[-1] == ()
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == "zombie"


async def test_a_running_process_is_adopted_kept_and_stopped_when_unassigned(
    sleeper: subprocess.Popen[bytes],
) -> None:
    other = subprocess.Popen(SLEEP, start_new_session=True)  # noqa: ASYNC220  (at once)
    try:
        saved: list[tuple[WorkloadRecord, ...]] = []
        changed = asyncio.Event()

        def save(records: tuple[WorkloadRecord, ...]) -> None:
            saved.append(records)
            changed.set()

        workloads = Workloads(ExecDriver(stop_grace_s=5), save)
        both = [record_of(sleeper), record_of(other, replica_index=1, placement_id="p1")]

        assert workloads.adopt(both) == 2
        reports = {r.placement_id: r.state for r in workloads.reports()}
        assert reports == {"p0": RUNNING, "p1": RUNNING}
        workloads.assign(assignments((0, "p0")))  # p1 was unassigned while the agent was down
        async with asyncio.timeout(WAIT_S):
            while [r.pid for r in saved[-1]] != [sleeper.pid]:
                changed.clear()
                await changed.wait()
        assert other.wait(WAIT_S) is not None  # its group got SIGTERM
        assert {r.placement_id: r.state for r in workloads.reports()} == {"p0": RUNNING}
        assert sleeper.poll() is None  # kept: no restart, no copy
    finally:
        other.kill()
        other.wait()


async def test_a_recycled_or_dead_pid_is_not_adopted(sleeper: subprocess.Popen[bytes]) -> None:
    recycled = record_of(sleeper, create_time=record_of(sleeper).create_time - 60)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: ASYNC220  (at once)
    await asyncio.to_thread(dead.wait)

    assert adopt(recycled, 1) is None
    assert adopt(record_of(dead, create_time=0.0), 1) is None
    assert sleeper.poll() is None  # left alone


async def test_an_adopted_process_that_ends_on_its_own_is_failed(
    sleeper: subprocess.Popen[bytes],
) -> None:
    workload = adopt(record_of(sleeper), 1)
    assert workload is not None and workload.status.state == RUNNING

    sleeper.kill()
    sleeper.wait()
    status = await asyncio.wait_for(workload.wait_for([STOPPED]), WAIT_S)

    assert status.state == FAILED and "adopted" in status.message


async def test_stderr_goes_to_a_file_that_gives_the_last_line_and_is_removed(
    tmp_path: Path,
) -> None:
    driver = ExecDriver(stop_grace_s=5)
    driver.stderr_dir = tmp_path
    script = (
        "import sys; print('first', file=sys.stderr); print('boom', file=sys.stderr); sys.exit(3)"
    )
    spec = deployment_pb2.Deployment(id=DEP, name="app", command=[sys.executable, "-c", script])

    status = await asyncio.wait_for(driver.start(spec, 0, "p0").wait_for([]), WAIT_S)

    assert (status.state, status.message) == (FAILED, "exit code 3: boom")
    assert os.listdir(tmp_path) == []


def test_a_stderr_file_is_emptied_past_its_limit_and_appended_to_after(tmp_path: Path) -> None:
    log = StderrFile.create(tmp_path / "w.stderr")
    writer = os.open(tmp_path / "w.stderr", os.O_WRONLY | os.O_APPEND)  # the process's side
    try:
        os.write(writer, b"x" * (MAX_BYTES // 2) + b"\nhalf\n")
        log.trim()
        assert log.last_line() == "half"  # under the limit: kept
        os.write(writer, b"y" * MAX_BYTES + b"\n")
        log.trim()
        assert os.fstat(log.fd).st_size == 0
        os.write(writer, b"after\n")
        assert log.last_line() == "after" and os.fstat(log.fd).st_size == 6
    finally:
        os.close(writer)
        log.remove()
    assert not (tmp_path / "w.stderr").exists()
