"""The health monitor: the one background task that moves time forward for liveness.

Each tick it applies passed deadlines (`sweep`), persists staged status transitions in one
transaction, and every `heartbeat_persist_interval_s` persists last-heartbeat times. A
transition from a stream (a break, a returning node) wakes it at once, so a killed agent's node
is SUSPECT in the store within milliseconds, not a tick. A store failure is logged and retried
on the next tick; it never stops the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controller.clock import Clock
from controller.registry.nodes import NodeRegistry

log = logging.getLogger("controller.monitor")


class HealthMonitor:
    def __init__(
        self, nodes: NodeRegistry, clock: Clock, tick_s: float, heartbeat_persist_interval_s: float
    ) -> None:
        self._nodes = nodes
        self._clock = clock
        self._tick_s = tick_s
        self._persist_every_s = heartbeat_persist_interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        """Stops the loop and persists what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._nodes.persist_statuses()
        await self._nodes.persist_heartbeats()

    async def _run(self) -> None:
        wake = self._nodes.transitions_pending
        next_heartbeats = self._clock.monotonic() + self._persist_every_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._tick_s)
            wake.clear()
            try:
                self._nodes.sweep()
                await self._nodes.persist_statuses()
                if self._clock.monotonic() >= next_heartbeats:
                    next_heartbeats = self._clock.monotonic() + self._persist_every_s
                    await self._nodes.persist_heartbeats()
            except Exception:
                log.exception("health monitor tick failed; retrying")
