"""The agent's drivers against their contract (drivers/base.py): the simulated one on the real
event loop, the exec one with real child processes (this interpreter, `sh`, `false`). Waits are
on the workload's own status changes, each bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest
from automator67.v1 import deployment_pb2

from controller.agent.drivers import DRIVERS, make_driver
from controller.agent.drivers.base import (
    ENDED,
    EXITED,
    FAILED,
    RUNNING,
    STARTING,
    STOPPED,
    Status,
    Workload,
)
from controller.agent.drivers.exec import ExecDriver, ExecWorkload
from controller.agent.drivers.simulated import SimulatedDriver

WAIT_S = 10.0
PY = sys.executable


def deployment(
    command: Sequence[str] = (), args: Sequence[str] = (), env: dict[str, str] | None = None
) -> deployment_pb2.Deployment:
    return deployment_pb2.Deployment(
        id="d-1", name="web", command=command, args=args, env=env or {}, etag="1"
    )


def python(code: str) -> deployment_pb2.Deployment:
    return deployment([PY, "-c", code])


async def ended(workload: Workload) -> Status:
    async with asyncio.timeout(WAIT_S):
        return await workload.wait_for(ENDED)


async def running(workload: Workload) -> Status:
    async with asyncio.timeout(WAIT_S):
        return await workload.wait_for({RUNNING})


async def until(condition: Callable[[], bool]) -> None:
    """For what no workload reports (a file a child writes, a grandchild's end): there is no
    event to wait on, so it is checked every 10 ms, within a bound."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_drivers_are_chosen_by_name() -> None:
    assert sorted(DRIVERS) == ["exec", "simulated"]
    assert [make_driver(name).name for name in ("simulated", "exec")] == ["simulated", "exec"]


# The simulated driver


async def test_a_simulated_replica_starts_then_runs_shortly_after() -> None:
    workload = SimulatedDriver(start_delay_s=0.01).start(deployment(), 0)

    assert workload.status == Status(STARTING)
    assert await running(workload) == Status(RUNNING)


async def test_a_simulated_replica_stops_at_once_and_stays_stopped() -> None:
    workload = SimulatedDriver(start_delay_s=0.01).start(deployment(), 0)
    await running(workload)

    workload.stop()
    workload.stop()

    assert workload.status == Status(STOPPED)
    assert await running(workload) == Status(STOPPED)  # an ended workload never runs again


async def test_a_simulated_replica_stopped_while_starting_never_runs() -> None:
    workload = SimulatedDriver(start_delay_s=0.01).start(deployment(), 0)

    workload.stop()
    await asyncio.sleep(0.05)  # past its start delay: the start was cancelled, not just late

    assert workload.status == Status(STOPPED)


# The exec driver


async def test_a_command_runs_in_its_own_process_group_until_stopped() -> None:
    workload = ExecDriver().start(python("import time; time.sleep(60)"), 0)
    assert isinstance(workload, ExecWorkload)

    assert (await running(workload)).state == RUNNING
    assert workload.pid is not None
    assert os.getpgid(workload.pid) == workload.pid != os.getpgid(0)

    workload.stop()

    assert await ended(workload) == Status(STOPPED)
    assert gone(workload.pid)


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        pytest.param(deployment(["true"]), Status(EXITED, "exit code 0"), id="exit 0"),
        pytest.param(deployment(["false"]), Status(FAILED, "exit code 1"), id="false"),
        pytest.param(
            python("import sys; print('starting', file=sys.stderr); sys.exit('no config')"),
            Status(FAILED, "exit code 1: no config"),
            id="the last line of stderr says why",
        ),
        pytest.param(
            deployment(["sh", "-c", "exit $0"], args=["3"]),
            Status(FAILED, "exit code 3"),
            id="args follow the command",
        ),
        pytest.param(
            python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            Status(FAILED, "killed by signal SIGKILL"),
            id="killed by a signal",
        ),
        pytest.param(
            deployment(["/no/such/program"]),
            Status(FAILED, "cannot start '/no/such/program': No such file or directory"),
            id="a missing program",
        ),
        pytest.param(
            deployment_pb2.Deployment(id="d-1", image="nginx:1.27"),
            Status(FAILED, "the exec driver runs a command, and this deployment has none"),
            id="an image without a command",
        ),
    ],
)
async def test_how_a_command_ends_is_reported(
    spec: deployment_pb2.Deployment, status: Status
) -> None:
    workload = ExecDriver().start(spec, 0)

    assert await ended(workload) == status


async def test_a_command_gets_the_deployments_env_and_not_the_agents_settings() -> None:
    check = (
        "import os, sys; e = os.environ; "
        "sys.exit(0 if (e['GREETING'], e['A67_REPLICA_INDEX'], e['A67_DEPLOYMENT_ID'], "
        "e['A67_DEPLOYMENT_NAME'], e.get('A67_AGENT_CONTROLLER'), e['KEPT']) "
        "== ('hi', '2', 'd-1', 'web', None, 'yes') else repr(dict(e)))"
    )
    spec = deployment([PY, "-c", check], env={"GREETING": "hi"})
    driver = ExecDriver(environ={"KEPT": "yes", "A67_AGENT_CONTROLLER": "c:1"})

    assert await ended(driver.start(spec, 2)) == Status(EXITED, "exit code 0")


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').close(); time.sleep(60)"
    )
    workload = ExecDriver(stop_grace_s=0.3).start(deployment([PY, "-c", code], [str(ready)]), 0)
    await until(ready.exists)

    started = time.monotonic()
    workload.stop()

    assert await ended(workload) == Status(STOPPED)
    assert time.monotonic() - started >= 0.3


async def test_a_stop_ends_what_the_command_started_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    spec = deployment(["sh", "-c", 'sleep 60 & echo $! > "$0"; wait'], [str(pid_file)])
    workload = ExecDriver(stop_grace_s=5).start(spec, 0)
    await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    child = int(pid_file.read_text())

    workload.stop()

    assert await ended(workload) == Status(STOPPED)
    await until(lambda: gone(child))


async def test_a_stop_of_a_command_that_already_ended_changes_nothing() -> None:
    workload = ExecDriver().start(deployment(["false"]), 0)
    await ended(workload)

    workload.stop()

    assert await ended(workload) == Status(FAILED, "exit code 1")
