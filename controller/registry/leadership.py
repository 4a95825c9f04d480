"""Which replica leads: the one holding the store's "leader" lease. Only the leader places,
reschedules and evicts; every write only a leader may make carries its epoch (`fence()`), and
the store refuses it, in the same transaction, once the lease is no longer held.

The leader renews every `renew_s` (a third of the lease, as etcd clients renew at TTL/3); a
replica that cannot renew, or sees another holder, steps down at once. Its own clock also
bounds it: `leading` turns false when the lease it last renewed would have run out, counted
from before it asked, so a leader frozen past its lease (SIGSTOP, a long pause) does not act
when it wakes, and the fence refuses what it had already begun. A dead leader is replaced
within `lease_s + renew_s` (15 s by default)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller.background import BackgroundLoop
from controller.clock import Clock
from controller.store.base import Fence, Lease

log = logging.getLogger("controller.leadership")

LEASE = "leader"


REPLICAS = "replica/"  # each replica's own lease: it is alive while it renews it


class LeaseStore(Protocol):
    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease: ...

    async def leases(self, prefix: str) -> list[Lease]: ...


@dataclass(frozen=True)
class LeadershipSettings:
    replica_id: str
    lease_s: float = 10.0
    renew_s: float = 10.0 / 3
    exclusive: bool = False  # the store has exactly one replica (embedded): no other is alive


class Leadership:
    def __init__(self, store: LeaseStore, settings: LeadershipSettings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self.replica_id = settings.replica_id
        self.leader_id = ""  # the holder, as last read ("" before the first campaign)
        self.epoch = 0  # ours while we lead, else 0
        self.live_replicas: frozenset[str] = frozenset({self.replica_id})  # as last read
        # Called after every campaign (who is alive may have changed).
        self.on_refresh: list[Callable[[], None]] = []
        self._valid_until = 0.0  # on our monotonic clock: our lease cannot outlive this
        # Called with (leading, epoch) when this replica starts or stops leading.
        self.on_change: list[Callable[[bool, int], None]] = []
        wake = asyncio.Event()
        wake.set()  # the first campaign at once
        self._loop = BackgroundLoop("leadership", self.campaign, wake, settings.renew_s, log)

    @property
    def leading(self) -> bool:
        return self.epoch > 0 and self._clock.monotonic() < self._valid_until

    def fence(self) -> Fence | None:
        """The condition a leader-only write carries; None when not leading (do not write)."""
        return Fence(LEASE, self.replica_id, self.epoch) if self.leading else None

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stops campaigning; a leader hands the lease back (it runs out now), so that another
        replica takes over at its next campaign instead of after the lease."""
        await self._loop.stop()
        leading = bool(self.epoch)
        self.step_down("shutting down")
        with contextlib.suppress(Exception):  # else the leases simply run out
            await self._store.campaign(REPLICAS + self.replica_id, self.replica_id, 0.0)
            if leading:
                await self._store.campaign(LEASE, self.replica_id, 0.0)

    async def campaign(self) -> None:
        """Takes or renews the lease; steps down if that fails or another replica holds it."""
        asked = self._clock.monotonic()
        me, ttl_s = self.replica_id, self._settings.lease_s
        try:
            await self._store.campaign(REPLICAS + me, me, ttl_s)  # alive
            lease = await self._store.campaign(LEASE, me, ttl_s)
            live = {me}
            if not self._settings.exclusive:
                live |= {alive.holder for alive in await self._store.leases(REPLICAS)}
        except Exception as exc:
            self.step_down(f"cannot renew the lease: {exc}")
            raise
        self.live_replicas = frozenset(live)
        try:
            self._take(lease, asked)
        finally:
            for listener in self.on_refresh:
                listener()

    def _take(self, lease: Lease, asked: float) -> None:
        self.leader_id = lease.holder
        if lease.holder != self.replica_id:
            self.step_down(f"{lease.holder} leads (epoch {lease.epoch})")
            return
        self._valid_until = asked + min(lease.ttl_left_s, self._settings.lease_s)
        if self.epoch != lease.epoch:
            self.epoch = lease.epoch
            log.warning(
                "leading", extra={"fields": {"replica": self.replica_id, "epoch": lease.epoch}}
            )
            for listener in self.on_change:
                listener(True, lease.epoch)

    def step_down(self, reason: str) -> None:
        if not self.epoch:
            return
        epoch, self.epoch, self._valid_until = self.epoch, 0, 0.0
        log.warning(
            "no longer leading",
            extra={"fields": {"replica": self.replica_id, "epoch": epoch, "reason": reason}},
        )
        for listener in self.on_change:
            listener(False, epoch)
