"""When the garbage collector walks what: objects that live long are frozen out of its reach.

An open heartbeat stream holds ~60 objects the collector tracks (its call, task, coroutine,
context, session), for hours. Left in the collected generations, 50,000 streams' objects were
walked by every collection of generation 1 or 2: 0.8-1.2 s with the event loop stopped, freeing
nearly nothing. So the controller freezes (`gc.freeze`) what it holds:

- at start, once the store is loaded (`after_start`);
- whenever `freeze_opens` streams have opened since the last freeze, or some have and
  `settle_s` has passed since they were first seen (a trickle of reconnects is frozen too). A
  full collection runs first: it walks only what is not frozen (what was made since the last
  freeze: ~20 ms per 1,000 streams) and frees the cycles of streams that ended meanwhile, so
  that no garbage is frozen. Young collections then walk only what calls in flight hold.
  That collection stops the event loop, so it is kept short: while a fleet joins (registering
  and opening streams at once, each agent leaving ~70 tracked objects, mostly grpc's), 2,000
  opens meant ~200,000 objects walked, 180-210 ms; 500 opens, 60-100 ms (join.py --gc-stats,
  10,000 agents, a slow day). The total walked is the same.

A frozen object is still freed by its reference count the moment the last reference goes;
only a reference cycle that becomes garbage while frozen stays, until unfrozen. So a thaw
(`gc.unfreeze`, a full collection, `gc.freeze`) runs once as many streams have closed since the
last thaw as `thaw_turnover` times the streams open (at least `freeze_opens`): the fleet turned
over that many times. That bounds the frozen garbage to what the streams closed in one turnover
left in cycles (other churn is bounded by `thaw_after_s`), and costs one full collection per
turnover (~1 s at 50,000 streams; with streams living 30 minutes, once an hour).

`GcPolicy.tick` decides from counters and the clock alone (tests drive it with a fake clock and
a fake collector); `run` calls it every `tick_s` on the event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller.clock import Clock

log = logging.getLogger("controller.gc")


@dataclass(frozen=True)
class GcSettings:
    tick_s: float = 1.0
    freeze_opens: int = 500  # streams opened since the last freeze that call for one
    settle_s: float = 60.0  # fewer opened: frozen this long after they were first seen
    thaw_turnover: float = 2.0  # streams closed since the last thaw, per stream open
    thaw_after_s: float = 6 * 3600.0  # thaw at least this often once anything was frozen


@dataclass(frozen=True)
class Churn:
    """The heartbeat streams' counters (registry/sessions.py)."""

    opened: int  # since the process started
    closed: int  # likewise
    open: int  # now


class Collector(Protocol):
    """The three calls of the `gc` module the policy makes (tests pass a fake)."""

    def collect(self) -> int: ...

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...


class GcModule:
    def collect(self) -> int:
        return gc.collect()

    def freeze(self) -> None:
        gc.freeze()

    def unfreeze(self) -> None:
        gc.unfreeze()


def after_start() -> None:
    """Freezes what the start made, and sets the thresholds the controller runs with.

    The start ran with the collector off, so all it made is in generation 0: a young collection
    frees its garbage; the imports' heap (~36,000 objects, no garbage in it) is not walked again
    before the first call is answered (~10 ms of CPU). Young collections then run every 50,000
    net allocations, full ones rarely."""
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class GcPolicy:
    def __init__(
        self, settings: GcSettings, clock: Clock, collector: Collector | None = None
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._gc: Collector = collector if collector is not None else GcModule()
        now = clock.monotonic()
        self._opened_at_freeze = 0  # Churn.opened at the last freeze (or thaw)
        self._first_unfrozen_s: float | None = None  # when opens past it were first seen
        self._closed_at_thaw = 0
        self._thawed_s = now
        self._frozen_since_thaw = False

    def tick(self, churn: Churn) -> str | None:
        """Freezes or thaws if due; "freeze", "thaw" or None (nothing due)."""
        s = self._settings
        now = self._clock.monotonic()
        closed = churn.closed - self._closed_at_thaw
        if closed >= max(s.freeze_opens, s.thaw_turnover * churn.open) or (
            self._frozen_since_thaw and now - self._thawed_s >= s.thaw_after_s
        ):
            self._gc.unfreeze()
            self._gc.collect()
            self._gc.freeze()
            self._closed_at_thaw, self._thawed_s = churn.closed, now
            self._frozen_since_thaw = False
            self._froze(churn)
            return "thaw"
        opened = churn.opened - self._opened_at_freeze
        if opened <= 0:
            return None
        if self._first_unfrozen_s is None:
            self._first_unfrozen_s = now
        if opened >= s.freeze_opens or now - self._first_unfrozen_s >= s.settle_s:
            self._gc.collect()
            self._gc.freeze()
            self._frozen_since_thaw = True
            self._froze(churn)
            return "freeze"
        return None

    def _froze(self, churn: Churn) -> None:
        self._opened_at_freeze = churn.opened
        self._first_unfrozen_s = None

    async def run(self, churn: Callable[[], Churn]) -> None:
        """Ticks every `tick_s` until cancelled; logs each freeze and thaw with its pause."""
        while True:
            await asyncio.sleep(self._settings.tick_s)
            counts = churn()
            started = time.perf_counter()
            done = self.tick(counts)
            if done is not None:
                ms = round((time.perf_counter() - started) * 1000, 1)
                fields = {"action": done, "pause_ms": ms, "streams_open": counts.open}
                log.log(
                    logging.INFO if done == "thaw" else logging.DEBUG,
                    "garbage collector %s",
                    done,
                    extra={"fields": fields},
                )
