"""The default driver: pretends to run every replica. A replica is STARTING, then RUNNING
`start_delay_s` later, and STOPPED at once when asked; it never ends on its own. It runs any
spec (image or command) and uses no resources, so a laptop can play a fleet of nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from automator67.v1 import deployment_pb2

from controller.agent.drivers.base import RUNNING, STOPPED, Progress, State, Status

DEFAULT_START_DELAY_S = 0.2


class SimulatedDriver:
    name = "simulated"

    def __init__(self, start_delay_s: float = DEFAULT_START_DELAY_S) -> None:
        self.start_delay_s = start_delay_s

    def start(
        self, deployment: deployment_pb2.Deployment, replica_index: int, placement_id: str = ""
    ) -> SimulatedWorkload:
        return SimulatedWorkload(self.start_delay_s)


class SimulatedWorkload:
    def __init__(self, start_delay_s: float) -> None:
        self._progress = Progress()
        loop = asyncio.get_running_loop()
        self._started = loop.call_later(start_delay_s, self._progress.move, RUNNING)

    @property
    def status(self) -> Status:
        return self._progress.status

    def stop(self) -> None:
        self._started.cancel()
        self._progress.move(STOPPED)

    async def wait_for(self, states: Iterable[State]) -> Status:
        return await self._progress.wait_for(states)
