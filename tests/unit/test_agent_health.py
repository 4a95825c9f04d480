"""The agent's health probes (agent/health.py): a command's exit code, a TCP port, the simulated
driver's switch, and the threshold of failures in a row before a replica is UNHEALTHY. Real
subprocesses and a real listening socket; each test waits for the prober's next probe."""

from __future__ import annotations

import asyncio
import sys

from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb
from google.protobuf import duration_pb2

from controller.agent.drivers.base import RUNNING, STOPPED, Progress
from controller.agent.health import HEALTHY, UNHEALTHY, UNSPECIFIED, Prober, probe_for
from controller.agent.workloads import Workloads

from .test_agent_workloads import FakeDriver, FakeWorkload

FAST = duration_pb2.Duration(nanos=10_000_000)  # 10 ms between probes
TIMEOUT = duration_pb2.Duration(seconds=10)


def check(**fields: object) -> deployment_pb2.HealthCheck:
    return deployment_pb2.HealthCheck(interval=FAST, timeout=TIMEOUT, **fields)  # type: ignore[arg-type]


def running() -> FakeWorkload:
    workload = FakeWorkload(deployment_pb2.Deployment(), 0, slow_stop=False)
    workload.move(RUNNING)
    return workload


async def probes(prober: Prober, count: int) -> None:
    for _ in range(count):
        await asyncio.wait_for(prober.probed(), 30)


async def test_a_command_that_exits_0_is_healthy() -> None:
    c = check(command=[sys.executable, "-c", "pass"])
    prober = Prober(c, probe_for(c, "exec", {}), running())
    await probes(prober, 1)
    assert (prober.health, prober.message) == (HEALTHY, "")
    prober.stop()


async def test_a_failing_command_is_unhealthy_after_the_threshold_with_its_reason() -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.exit('not ready: ' + __import__('os').environ['WHY'])",
    ]
    c = check(command=argv, failure_threshold=2)
    prober = Prober(c, probe_for(c, "exec", {"WHY": "no db"}), running())
    await probes(prober, 1)
    assert prober.health == UNSPECIFIED  # one failure is below the threshold
    await probes(prober, 1)
    assert prober.health == UNHEALTHY
    assert prober.message == "health check failed 2 times: exit code 1: not ready: no db"
    prober.stop()


async def test_a_tcp_port_that_accepts_is_healthy_and_one_that_refuses_is_not() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = check(tcp_port=port, failure_threshold=1)
    prober = Prober(c, probe_for(c, "exec", {}), running())
    await probes(prober, 1)
    assert prober.health == HEALTHY
    server.close()
    await server.wait_closed()
    await probes(prober, 1)
    assert prober.health == UNHEALTHY
    assert f"cannot connect to port {port}" in prober.message
    prober.stop()


async def test_a_probe_that_hangs_fails_on_its_timeout() -> None:
    c = deployment_pb2.HealthCheck(
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        interval=FAST,
        timeout=duration_pb2.Duration(nanos=200_000_000),
        failure_threshold=1,
    )
    prober = Prober(c, probe_for(c, "exec", {}), running())
    await probes(prober, 1)
    assert prober.health == UNHEALTHY and "no answer within 0.2s" in prober.message
    prober.stop()


async def test_the_simulated_driver_plays_a_broken_version_from_its_env() -> None:
    c = check(command=["ignored"], failure_threshold=1)
    good = Prober(c, probe_for(c, "simulated", {}), running())
    bad = Prober(c, probe_for(c, "simulated", {"A67_SIMULATED_HEALTH": "fail"}), running())
    await probes(good, 1)
    await probes(bad, 1)
    assert (good.health, bad.health) == (HEALTHY, UNHEALTHY)
    good.stop()
    bad.stop()


async def test_probing_waits_for_the_workload_to_run_and_ends_with_it() -> None:
    workload = FakeWorkload(deployment_pb2.Deployment(), 0, slow_stop=False)
    c = check(command=[sys.executable, "-c", "pass"])
    prober = Prober(c, probe_for(c, "exec", {}), workload)
    await asyncio.sleep(0)
    assert prober.health == UNSPECIFIED
    workload.move(RUNNING)
    await probes(prober, 1)
    assert prober.health == HEALTHY
    workload.move(STOPPED)
    await asyncio.wait_for(prober._task, 30)  # it ends on its own
    assert isinstance(workload.progress, Progress)


async def test_every_report_says_the_placement_s_health_and_generation() -> None:
    driver = FakeDriver()
    workloads = Workloads(driver)
    spec = deployment_pb2.Deployment(
        id="d1",
        name="d1",
        etag="3",
        template_generation=3,
        health_check=check(command=[sys.executable, "-c", "pass"]),
    )
    run = deployment_pb2.REPLICA_DESIRED_STATE_RUN
    assignment = hb.Assignment(
        deployment=spec, replica_index=0, desired_state=run, placement_id="p1"
    )
    workloads.assign(hb.Assignments(assignments=[assignment]))
    [report] = workloads.reports()
    assert (report.generation, report.health) == (3, UNSPECIFIED)
    driver.started[0].move(RUNNING)
    workloads.reports()  # converging starts the probe of the running workload
    [replica] = workloads._replicas.values()
    prober = replica.prober
    assert prober is not None
    await probes(prober, 1)
    [report] = workloads.reports()
    assert (report.placement_id, report.generation, report.health) == ("p1", 3, HEALTHY)
