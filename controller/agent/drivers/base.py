"""The contract between the agent and what actually runs a replica.

A `Driver` starts replicas; each started replica is a `Workload` that the agent polls for its
status (at every beat) and may ask to stop:

    start() -> STARTING -> RUNNING -> EXITED (exit 0) | FAILED (anything else, with a reason)
                  \\---------\\--- stop() ---> STOPPED

A status only moves forward, and an ended workload (STOPPED, EXITED, FAILED) never changes
again: the agent decides what follows (it never restarts a workload that ended on its own; the
controller re-places it after a backoff). States are the wire's `ReplicaState` values, so a
status is reported as it is."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from automator67.v1 import deployment_pb2

State: TypeAlias = deployment_pb2.ReplicaState.ValueType
STARTING: State = deployment_pb2.REPLICA_STATE_STARTING
RUNNING: State = deployment_pb2.REPLICA_STATE_RUNNING
STOPPED: State = deployment_pb2.REPLICA_STATE_STOPPED
EXITED: State = deployment_pb2.REPLICA_STATE_EXITED
FAILED: State = deployment_pb2.REPLICA_STATE_FAILED
ENDED = frozenset({STOPPED, EXITED, FAILED})
MAX_MESSAGE = 1024  # the controller's limit on a report's message


@dataclass(frozen=True)
class Status:
    state: State
    message: str = ""  # why, for humans: an exit code, a start error


class Workload(Protocol):
    """One replica as a driver runs it. Contract:
    - `status` is cheap and never blocks; it moves only forward (see the module's diagram).
    - `stop()` asks the workload to stop and returns at once; calling it again, or on a workload
      that already ended, changes nothing. A stopped workload ends STOPPED.
    - `wait_for(states)` returns the status once it is in `states` or has ended (at once if it
      already is), so a wait for RUNNING cannot hang on a workload that failed to start.
    Every method is called on the event loop's thread."""

    @property
    def status(self) -> Status: ...

    def stop(self) -> None: ...

    async def wait_for(self, states: Iterable[State]) -> Status: ...


class Driver(Protocol):
    """Runs replicas. Contract: `name` is what the agent advertises in `AgentHello.drivers`.
    `start()` is called on the event loop's thread, returns at once (the work goes on in the
    background) and never raises for a spec it cannot run: it returns a workload that is
    FAILED with the reason, which the controller then shows to people. `placement_id` names
    this placement of the replica ("" from controllers that predate placement ids)."""

    name: str

    def start(
        self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
    ) -> Workload: ...


class Progress:
    """The status of one workload, for drivers to build on: forward only, and awaitable."""

    def __init__(self) -> None:
        self.status = Status(STARTING)
        self._moved = asyncio.Event()

    def move(self, state: State, message: str = "") -> None:
        """Enters `state`; ignored once the workload has ended."""
        if self.status.state in ENDED:
            return
        self.status = Status(state, message[:MAX_MESSAGE])
        # Wake every waiter, then give later waiters a fresh event.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_for(self, states: Iterable[State]) -> Status:
        wanted = ENDED.union(states)
        while self.status.state not in wanted:
            await self._moved.wait()
        return self.status


class Failed:
    """A workload that could not start at all: FAILED from the beginning, with the reason."""

    def __init__(self, message: str) -> None:
        self._progress = Progress()
        self._progress.move(FAILED, message)

    @property
    def status(self) -> Status:
        return self._progress.status

    def stop(self) -> None:
        pass

    async def wait_for(self, states: Iterable[State]) -> Status:
        return await self._progress.wait_for(states)
