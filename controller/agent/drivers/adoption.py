"""Adopting the exec driver's processes after an agent restart.

The exec driver starts each workload in a session of its own, so a SIGKILLed agent leaves its
workloads running. Each start is recorded in the state file (pid, process start time, placement:
agent/state.py) as soon as the process exists, and each end removes its record. A restarted
agent reads the records and adopts every process that still runs: same pid AND same start time,
so a pid the kernel gave to another process since is never taken for ours. An adopted process
serves its placement again, without a second copy; once the controller's assignments arrive,
one no longer assigned is stopped like any other (workloads.py).

An adopted process is not the agent's child: its exit is seen through a pidfd (Linux >= 5.3)
that becomes readable when it ends, and its exit code is unknown (its new parent reaped it), so
an adopted process that ends on its own is reported FAILED with a message saying so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from controller.agent.drivers.base import FAILED, RUNNING, STOPPED, Progress, State, Status
from controller.agent.state import WorkloadRecord
from controller.agent.stderr_file import StderrFile

log = logging.getLogger("controller.agent.drivers.adoption")
START_TIME_TOLERANCE_S = 0.05  # psutil's start times have clock-tick (10 ms) resolution
POLL_S = 1.0  # without pidfds, how often an adopted process is checked


def start_time_of(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if it does not run."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.Error:
        return None


def same_process(record: WorkloadRecord) -> bool:
    started = start_time_of(record.pid)
    return started is not None and abs(started - record.create_time) <= START_TIME_TOLERANCE_S


def adopt(
    record: WorkloadRecord,
    stop_grace_s: float,
    on_end: Callable[[], None] | None = None,
    stderr_path: Path | None = None,
) -> AdoptedWorkload | None:
    """The recorded process as a workload, if it still runs; None otherwise. `on_end` is
    called once it has ended; its stderr file (agent/stderr_file.py), if any, is kept small
    and removed at the end."""
    pidfd = _open_pidfd(record.pid)  # first: it pins the process we then check
    if not same_process(record):
        if pidfd is not None:
            os.close(pidfd)
        return None
    stderr = StderrFile.reopen(stderr_path) if stderr_path is not None else None
    return AdoptedWorkload(record, stop_grace_s, pidfd, on_end, stderr)


class AdoptedWorkload:
    """A process group the exec driver started before the agent restarted. RUNNING until it
    ends (FAILED: its exit code is unknown) or `stop()` ends it (SIGTERM to the group, SIGKILL
    `stop_grace_s` later) -> STOPPED."""

    def __init__(
        self,
        record: WorkloadRecord,
        stop_grace_s: float,
        pidfd: int | None,
        on_end: Callable[[], None] | None = None,
        stderr: StderrFile | None = None,
    ) -> None:
        self._on_end = on_end
        self._stderr = stderr
        self.pid: int | None = record.pid
        self.create_time = record.create_time
        self._grace_s = stop_grace_s
        self._progress = Progress()
        self._progress.move(RUNNING, "adopted after an agent restart")
        self._stop = asyncio.Event()
        self._exited = asyncio.Event()
        self._pidfd = pidfd
        loop = asyncio.get_running_loop()
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._exited.set)
        self._task = loop.create_task(self._watch())

    @property
    def status(self) -> Status:
        if self._stderr is not None:
            self._stderr.trim()
        return self._progress.status

    def stop(self) -> None:
        self._stop.set()

    async def wait_for(self, states: Iterable[State]) -> Status:
        return await self._progress.wait_for(states)

    async def _watch(self) -> None:
        try:
            exited = asyncio.ensure_future(self._wait_exit())
            stopping = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait((exited, stopping), return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                self._progress.move(FAILED, "ended on its own (adopted: exit code unknown)")
            else:
                _signal_group(self.create_time, self.pid, signal.SIGTERM)
                done, _ = await asyncio.wait((exited,), timeout=self._grace_s)
                _signal_group(self.create_time, self.pid, signal.SIGKILL)
                if not done:
                    await exited
                self._progress.move(STOPPED)
            stopping.cancel()
        except Exception as error:  # a bug must end this workload visibly, not silently
            log.exception("adopted workload error", extra={"fields": {"pid": self.pid}})
            self._progress.move(FAILED, f"driver error: {error!r}")
        finally:
            if self._pidfd is not None:
                asyncio.get_running_loop().remove_reader(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = None
            if self._stderr is not None:
                self._stderr.remove()
                self._stderr = None
            if self._on_end is not None:
                self._on_end()

    async def _wait_exit(self) -> None:
        if self._pidfd is not None:
            await self._exited.wait()
            return
        while self.pid is not None and start_time_of(self.pid) is not None:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)  # no pidfd: polling is the only way to see the exit


def _open_pidfd(pid: int) -> int | None:
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return None
    try:
        fd: int = open_pidfd(pid)
    except OSError:
        return None
    return fd


def _signal_group(create_time: float, pid: int | None, sig: signal.Signals) -> None:
    """Signals the process group led by `pid`; SIGTERM only while `pid` is still the process
    that was adopted (a group whose leader ended keeps its id until its last member ends, and
    the kernel never reuses a pid still in use as a group id: SIGKILL is safe then too)."""
    if pid is None:
        return
    if sig is signal.SIGTERM:
        started = start_time_of(pid)
        if started is None or abs(started - create_time) > START_TIME_TOLERANCE_S:
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
