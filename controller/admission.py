"""Admission: at most `max_inflight` calls of one kind handled at once, the rest parked first
come first served, and past `max_queued` parked ones, refused with a hint of when to retry.

This is Kubernetes' API Priority and Fairness in spirit: expensive calls that come in floods (a
fleet joining at once: registrations and heartbeat stream opens) form one priority level with a
concurrency limit and a bounded queue; every other call (an operator's GetNodeStats, GetNode,
ListNodes) is exempt and never waits behind them. A parked call costs a future, not a place on
the event loop's ready queue: without the bound, ~3,000 registrations in flight were served
first come first served, and an operator's read waited behind all of them (~2 s).

The slot a call leaves goes straight to the oldest parked call (no second round for the slot),
so the order is first come first served and a flood cannot starve a call parked early. A parked
call whose caller leaves (deadline, cancel) leaves the queue; one cancelled as its slot was
handed to it passes the slot on.

The retry hint (`Overloaded.retry_after_s`) is how long the calls queued now would take to be
admitted at the rate calls have been leaving (an average of the time a call held its slot),
within [`MIN_RETRY_AFTER_S`, `MAX_RETRY_AFTER_S`]. Pure asyncio on an injected clock: no gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from controller.clock import Clock

MIN_RETRY_AFTER_S = 0.5
MAX_RETRY_AFTER_S = 30.0
# Weight of the latest call in the average time a slot is held (an exponential average).
_HOLD_WEIGHT = 0.05


class Overloaded(Exception):
    """The queue is full: the call is refused; the caller may retry after `retry_after_s`."""

    def __init__(self, limit: int, queued: int, retry_after_s: float) -> None:
        super().__init__(f"{queued} calls queued (at most {limit}); retry in {retry_after_s:.1f}s")
        self.limit = limit
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AdmissionState:
    """A gate at one moment (for metrics)."""

    inflight: int
    queued: int
    admitted: int  # since the start
    rejected: int  # since the start


class Ticket:
    """One admitted call's slot. `release()` gives it up; again is a no-op."""

    __slots__ = ("_gate", "_since")

    def __init__(self, gate: Gate, since: float) -> None:
        self._gate: Gate | None = gate
        self._since = since

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._left(self._since)


class Gate:
    """A concurrency limit with a bounded first-come-first-served queue, for one event loop (not
    thread-safe). `max_inflight` 0: no limit (every call is admitted at once)."""

    def __init__(self, max_inflight: int, max_queued: int, clock: Clock) -> None:
        if max_inflight < 0 or max_queued < 0:
            raise ValueError("max_inflight and max_queued must not be negative")
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self._clock = clock
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.inflight = 0
        self.admitted = 0  # calls admitted since the start (counters, for metrics)
        self.rejected = 0
        self._hold_s = 0.0  # average time a slot is held; 0 until a call has left

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def state(self) -> AdmissionState:
        return AdmissionState(self.inflight, len(self._waiting), self.admitted, self.rejected)

    def must_wait(self) -> bool:
        """Whether a call entering now would wait (or be refused)."""
        return self.max_inflight > 0 and (self.inflight >= self.max_inflight or bool(self._waiting))

    async def enter(self) -> Ticket:
        """A slot: at once if one is free and nobody waits, else once the calls before this one
        have got theirs. Raises Overloaded (nothing held) when `max_queued` calls wait."""
        if not self.must_wait():
            return self._admit()
        if len(self._waiting) >= self.max_queued:
            self.rejected += 1
            raise Overloaded(self.max_queued, len(self._waiting), self.retry_after_s())
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the slot was handed over: pass it on
                self.inflight -= 1
                self._hand_over()
            else:
                self._discard(turn)
            raise
        self.admitted += 1
        return Ticket(self, self._clock.monotonic())  # `inflight` was kept for it by _hand_over

    def retry_after_s(self) -> float:
        """When a call refused now should try again (see the module's docstring)."""
        slots = max(1, self.max_inflight)
        drain_s = (len(self._waiting) + 1) * self._hold_s / slots
        return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, drain_s))

    def _admit(self) -> Ticket:
        self.inflight += 1
        self.admitted += 1
        return Ticket(self, self._clock.monotonic())

    def _left(self, since: float) -> None:
        held = self._clock.monotonic() - since
        self._hold_s += _HOLD_WEIGHT * (held - self._hold_s) if self._hold_s else held
        self.inflight -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Free slots go to the oldest calls still waiting (their callers may have left)."""
        while self._waiting and (self.max_inflight == 0 or self.inflight < self.max_inflight):
            turn = self._waiting.popleft()
            if not turn.done():
                self.inflight += 1
                turn.set_result(None)

    def _discard(self, turn: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # handed over meanwhile
            self._waiting.remove(turn)
