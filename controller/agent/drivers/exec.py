"""The `exec` driver: runs a deployment's `command` + `args` as a local process.

    start   spawn argv in a new session (so its own process group), with the agent's
            environment minus the agent's own A67_AGENT_* settings, plus the deployment's
            `env`, plus A67_DEPLOYMENT_ID, A67_DEPLOYMENT_NAME, A67_REPLICA_INDEX and
            A67_PLACEMENT_ID
            spawned -> RUNNING; cannot spawn -> FAILED "cannot start 'x': No such file ..."
    ends    exit 0 -> EXITED; exit N -> FAILED "exit code N: <last line of stderr>";
            a signal -> FAILED "killed by signal SIGSEGV"
    stop()  SIGTERM to the group, SIGKILL to it `stop_grace_s` later if the process still
            runs (and once more after it exits, for children that outlived it) -> STOPPED

The process group is the unit: what a shell command starts goes with it. stdout is discarded and
only the last line of stderr is kept, for the failure message (keeping logs is later work);
the agent sends stderr to a file (agent/stderr_file.py), so a process outlives a SIGKILLed agent
and is adopted by its restart (agent/drivers/adoption.py).
`image` is not run: a deployment without a command fails with a reason saying so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from automator67.v1 import deployment_pb2

from controller.agent.drivers.adoption import adopt, start_time_of
from controller.agent.drivers.base import (
    EXITED,
    FAILED,
    RUNNING,
    STOPPED,
    Failed,
    Progress,
    State,
    Status,
    Workload,
)
from controller.agent.state import WorkloadRecord
from controller.agent.stderr_file import StderrFile, file_name

log = logging.getLogger("controller.agent.exec")
DEFAULT_STOP_GRACE_S = 10.0
TAIL_BYTES = 4096
TAIL_WAIT_S = 0.5  # after the exit, how long stderr may take to reach its end (children hold it)
MAX_LINE = 200


class ExecDriver:
    name = "exec"

    def __init__(
        self, stop_grace_s: float = DEFAULT_STOP_GRACE_S, environ: Mapping[str, str] | None = None
    ) -> None:
        self.stop_grace_s = stop_grace_s
        self._environ = environ
        # Called when a process was spawned or ended, so the agent records it at once
        # (agent/drivers/adoption.py): a SIGKILLed agent's restart then adopts it instead of a copy.
        self.on_change: Callable[[], None] | None = None
        # Where workloads' stderr goes (agent/stderr_file.py); None: a pipe to the agent, which a
        # process outliving its agent could no longer write to.
        self.stderr_dir: Path | None = None

    def adopt(self, record: WorkloadRecord) -> Workload | None:
        """The recorded process, if it still runs (agent/drivers/adoption.py); None otherwise."""
        key = (record.deployment_id, record.replica_index, record.placement_id)
        return adopt(record, self.stop_grace_s, self.on_change, self._stderr_path(*key))

    def _stderr_path(self, deployment_id: str, index: int, placement_id: str) -> Path | None:
        if self.stderr_dir is None:
            return None
        return self.stderr_dir / file_name(deployment_id, index, placement_id)

    def start(
        self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
    ) -> Workload:
        if not deployment.command:
            return Failed("the exec driver runs a command, and this deployment has none")
        env = self.environment(deployment, replica_index, placement_id)
        argv = [*deployment.command, *deployment.args]
        stderr = self._stderr_path(deployment.id, replica_index, placement_id)
        return ExecWorkload(argv, env, self.stop_grace_s, self.on_change, stderr)

    def environment(
        self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
    ) -> dict[str, str]:
        """A replica's environment (also its health check command's: agent/health.py)."""
        base = os.environ if self._environ is None else self._environ
        env = {k: v for k, v in base.items() if not k.startswith("A67_AGENT_")}
        env.update(deployment.env)
        env.update(
            A67_DEPLOYMENT_ID=deployment.id,
            A67_DEPLOYMENT_NAME=deployment.name,
            A67_REPLICA_INDEX=str(replica_index),
            A67_PLACEMENT_ID=placement_id,
        )
        return env


class ExecWorkload:
    """One local process. `pid` is set once it has been spawned."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        stop_grace_s: float,
        on_change: Callable[[], None] | None = None,
        stderr_path: Path | None = None,
    ) -> None:
        self.argv = argv
        self._stderr_path = stderr_path
        self._stderr: StderrFile | None = None
        self.pid: int | None = None
        self.create_time: float | None = None  # the process's start time, with `pid`
        self._on_change = on_change
        self._grace_s = stop_grace_s
        self._progress = Progress()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._guarded_run(env))

    @property
    def status(self) -> Status:
        if self._stderr is not None:
            self._stderr.trim()
        return self._progress.status

    def stop(self) -> None:
        self._stop.set()

    async def wait_for(self, states: Iterable[State]) -> Status:
        return await self._progress.wait_for(states)

    async def _guarded_run(self, env: dict[str, str]) -> None:
        try:
            await self._run(env)
        except Exception as error:  # a bug must end this workload visibly, not silently
            log.exception("exec driver error", extra={"fields": {"argv": self.argv}})
            self._progress.move(FAILED, f"driver error: {error!r}")
        finally:
            if self.pid is not None and self._on_change is not None:
                self._on_change()  # ended: no longer to be adopted

    async def _run(self, env: dict[str, str]) -> None:
        if self._stop.is_set():
            self._progress.move(STOPPED)
            return
        try:
            if self._stderr_path is not None:
                self._stderr = StderrFile.create(self._stderr_path)
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE if self._stderr is None else self._stderr.fd,
                start_new_session=True,
            )
        except OSError as error:
            if self._stderr is not None:
                self._stderr.remove()
                self._stderr = None
            self._progress.move(FAILED, f"cannot start {self.argv[0]!r}: {error.strerror or error}")
            return
        self.pid = process.pid
        self.create_time = start_time_of(process.pid)
        if self._on_change is not None:
            self._on_change()
        stderr = self._stderr
        tail: asyncio.Future[str] | None = None
        if stderr is None:
            assert process.stderr is not None
            tail = asyncio.ensure_future(_last_line(process.stderr))
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            if not self._stop.is_set():
                self._progress.move(RUNNING)
            await asyncio.wait((exited, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self._terminate(process.pid, exited)
                self._progress.move(STOPPED)
                return
            last_line = stderr.last_line() if stderr is not None else ""
            if tail is not None:
                done, _ = await asyncio.wait((tail,), timeout=TAIL_WAIT_S)
                last_line = tail.result() if done else ""
            self._progress.move(*_outcome(exited.result(), last_line))
        finally:
            if process.returncode is None:  # cancelled: never leave the process behind
                _signal_group(process.pid, signal.SIGKILL)
            for future in (tail, exited, stopping):
                if future is not None:
                    future.cancel()
            if stderr is not None:
                stderr.remove()
                self._stderr = None

    async def _terminate(self, pid: int, exited: asyncio.Future[int]) -> None:
        _signal_group(pid, signal.SIGTERM)
        done, _ = await asyncio.wait((exited,), timeout=self._grace_s)
        if not done:
            log.warning(
                "a workload outlived its stop grace; killing it",
                extra={"fields": {"pid": pid, "grace_s": self._grace_s}},
            )
        # Also after a clean exit: children of the group that ignored SIGTERM go too.
        _signal_group(pid, signal.SIGKILL)
        await exited


def _outcome(code: int, last_line: str) -> tuple[State, str]:
    if code == 0:
        return EXITED, "exit code 0"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return FAILED, f"killed by signal {name}"
    return FAILED, f"exit code {code}: {last_line}" if last_line else f"exit code {code}"


async def _last_line(stream: asyncio.StreamReader) -> str:
    """The last non-empty line the stream carried, read to its end with bounded memory."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-TAIL_BYTES:]
    lines = [line.strip() for line in kept.decode(errors="replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return last[:MAX_LINE]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
