"""Health checks of running replicas (issue 14): the agent probes each placement whose spec has
a `health_check` and reports what the probes say in every beat (`ReplicaReport.health`).

    not probed yet, or no check     UNSPECIFIED
    a probe passed                  HEALTHY (at once: one success is enough, as Kubernetes'
                                    readiness probes' default success threshold)
    `failure_threshold` in a row    UNHEALTHY, with the last failure as the message
    failed

A probe starts as soon as the workload is RUNNING and repeats every `interval`; each may take
`timeout`. The controller gates rolling updates on it (scheduler/rollout.py).

    command   run beside the replica, with its environment (exec driver: the same as the
              workload's); exit 0 passes
    tcp_port  a TCP connection to 127.0.0.1:port is accepted
    simulated the simulated driver runs nothing, so its probe passes unless the deployment's
              env sets A67_SIMULATED_HEALTH=fail (to play a broken version)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from automator67.v1 import deployment_pb2

from controller.agent.drivers.base import ENDED, RUNNING, Workload

log = logging.getLogger("controller.agent.health")
HEALTHY = deployment_pb2.REPLICA_HEALTH_HEALTHY
UNHEALTHY = deployment_pb2.REPLICA_HEALTH_UNHEALTHY
UNSPECIFIED = deployment_pb2.REPLICA_HEALTH_UNSPECIFIED
Probe = Callable[[], Awaitable[str | None]]  # None: passed; else why it failed
MAX_WHY = 200


def seconds(d: object, default: float) -> float:
    total = getattr(d, "seconds", 0) + getattr(d, "nanos", 0) / 1e9
    return total if total > 0 else default


class Prober:
    """Probes one workload while it runs. `health` and `message` are what to report."""

    def __init__(self, check: deployment_pb2.HealthCheck, probe: Probe, workload: Workload) -> None:
        self.health: deployment_pb2.ReplicaHealth.ValueType = UNSPECIFIED
        self.message = ""
        self._interval_s = seconds(check.interval, 10.0)
        self._timeout_s = seconds(check.timeout, 1.0)
        self._threshold = check.failure_threshold or 3
        self._probe = probe
        self._workload = workload
        self._probed = asyncio.Event()  # set after each probe, then replaced
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        self._task.cancel()

    async def probed(self) -> None:
        """Returns after the next probe."""
        await self._probed.wait()

    async def _run(self) -> None:
        if (await self._workload.wait_for([RUNNING])).state is not RUNNING:
            return
        failures = 0
        while self._workload.status.state not in ENDED:
            try:
                why = await asyncio.wait_for(self._probe(), self._timeout_s)
            except TimeoutError:
                why = f"no answer within {self._timeout_s:g}s"
            except Exception as error:  # a probe's bug must show as a failure, not end probing
                why = f"probe error: {error!r}"
            if why is None:
                failures, self.health, self.message = 0, HEALTHY, ""
            else:
                failures += 1
                if failures >= self._threshold:
                    self.health = UNHEALTHY
                    self.message = f"health check failed {failures} times: {why}"[:MAX_WHY]
            probed, self._probed = self._probed, asyncio.Event()
            probed.set()
            await asyncio.sleep(self._interval_s)


def probe_for(check: deployment_pb2.HealthCheck, driver: str, env: Mapping[str, str]) -> Probe:
    """The probe of `check` for a workload of `driver` whose environment is `env`."""
    if driver == "simulated":
        return lambda: _simulated(env)
    if check.tcp_port:
        return lambda: _tcp(check.tcp_port)
    return lambda: _command(list(check.command), dict(env))


async def _simulated(env: Mapping[str, str]) -> str | None:
    return "simulated health check failure" if env.get("A67_SIMULATED_HEALTH") == "fail" else None


async def _tcp(port: int) -> str | None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        return f"cannot connect to port {port}: {error.strerror or error}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def _command(argv: list[str], env: dict[str, str]) -> str | None:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        return f"cannot run {argv[0]!r}: {error.strerror or error}"
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:  # the timeout: never leave the probe behind
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    if process.returncode == 0:
        return None
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    tail = f": {lines[-1][:MAX_WHY]}" if lines else ""
    return f"exit code {process.returncode}{tail}"
