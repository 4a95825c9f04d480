"""The health monitor: the one background task that moves time forward for liveness.

Each tick it applies passed deadlines (`sweep`), persists staged status transitions in one
transaction, and every `heartbeat_persist_interval_s` persists last-heartbeat times. A
transition from a stream (a break, a returning node) wakes it at once, so a killed agent's node
is SUSPECT in the store within milliseconds, not a tick. A store failure is logged and retried
on the next tick; it never stops the loop (controller/background.py)."""

from __future__ import annotations

import logging

from controller.background import BackgroundLoop
from controller.clock import Clock
from controller.registry.nodes import NodeRegistry

log = logging.getLogger("controller.monitor")


class HealthMonitor:
    def __init__(
        self, nodes: NodeRegistry, clock: Clock, tick_s: float, heartbeat_persist_interval_s: float
    ) -> None:
        self._nodes = nodes
        self._clock = clock
        self._persist_every_s = heartbeat_persist_interval_s
        self._next_heartbeats = clock.monotonic() + heartbeat_persist_interval_s
        self._loop = BackgroundLoop(
            "health-monitor", self.tick, nodes.transitions_pending, tick_s, log
        )

    def start(self) -> None:
        self._next_heartbeats = self._clock.monotonic() + self._persist_every_s
        self._loop.start()

    async def stop(self) -> None:
        """Stops the loop and persists what is pending."""
        await self._loop.stop()
        await self._nodes.persist_statuses()
        await self._nodes.persist_heartbeats()

    async def tick(self) -> None:
        self._nodes.sweep()
        await self._nodes.persist_statuses()
        if self._clock.monotonic() >= self._next_heartbeats:
            self._next_heartbeats = self._clock.monotonic() + self._persist_every_s
            await self._nodes.persist_heartbeats()
