"""One timer per client process drives all of its paced streams.

A sleeping task per stream (50,000 of them, each waking every interval) made the load clients
heavier than the server under test. Here one coroutine keeps a heap of (when the next beat of
a stream is due, stream) and sleeps until the earliest; each due beat is sent by a short task
that lives only until its ack. A stream whose previous beat is still unacknowledged owes the
beat and sends it right after that ack, timed from its scheduled moment (a slow server shows
in the latencies, it does not slow the schedule: no coordinated omission). A stream that breaks
is reopened after a jittered pause; the beats it missed meanwhile are not sent."""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import grpc


class Stream(Protocol):
    async def open(self) -> None: ...

    async def beat(self) -> None: ...

    def cancel(self) -> None: ...


class Tally(Protocol):
    """What the pacer counts into (streams._Tally)."""

    open_now: int
    reconnects: int
    sent_in_window: int
    acked_in_window: int

    def in_window(self, t: float) -> bool: ...

    def error(self, exc: BaseException) -> None: ...

    def latency(self, seconds: float) -> None: ...


class Pacer:
    def __init__(
        self,
        streams: Sequence[Stream],
        interval_s: float,
        tally: Tally,
        rng: random.Random,
        ended: tuple[type[BaseException], ...],
    ) -> None:
        """`ended`: the exceptions (besides grpc's) that say a stream broke."""
        self._streams = streams
        self._interval_s = interval_s
        self._tally = tally
        self._rng = rng
        self._ended: tuple[type[BaseException], ...] = (grpc.RpcError, *ended)
        self._open_failed: tuple[type[BaseException], ...] = (*self._ended, TimeoutError)
        start = time.monotonic()
        self._due = [(start + rng.uniform(0, interval_s), i) for i in range(len(streams))]
        heapq.heapify(self._due)
        self._busy = [False] * len(streams)  # a beat in flight, or reopening
        self._broken = [False] * len(streams)
        self._owed: list[list[float]] = [[] for _ in streams]
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Beats until cancelled; then cancels the beats in flight."""
        try:
            while True:
                now = time.monotonic()
                while self._due[0][0] <= now:
                    at, i = self._due[0]
                    heapq.heapreplace(self._due, (at + self._interval_s, i))
                    if self._broken[i]:
                        continue  # missed while it reconnects
                    if self._busy[i]:
                        self._owed[i].append(at)
                    else:
                        self._start(self._beats(i, at))
                await asyncio.sleep(self._due[0][0] - now)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beats(self, i: int, scheduled: float) -> None:
        """Sends the beat scheduled at `scheduled`, then any the stream owes meanwhile."""
        tally, stream = self._tally, self._streams[i]
        self._busy[i] = True
        try:
            while True:
                counted = tally.in_window(scheduled)
                if counted:
                    tally.sent_in_window += 1
                try:
                    await stream.beat()
                except self._ended as exc:
                    tally.error(exc)
                    tally.open_now -= 1
                    stream.cancel()
                    self._broken[i] = True
                    self._owed[i].clear()
                    self._start(self._reopen(i))
                    return
                if counted:
                    tally.acked_in_window += 1
                    tally.latency(time.monotonic() - scheduled)
                if not self._owed[i]:
                    return
                scheduled = self._owed[i].pop(0)
        finally:
            self._busy[i] = self._broken[i]

    async def _reopen(self, i: int) -> None:
        stream, tally = self._streams[i], self._tally
        while True:
            await asyncio.sleep(self._rng.uniform(0.5, 1.5))
            try:
                await asyncio.wait_for(stream.open(), 60)
            except self._open_failed as exc:
                tally.error(exc)
                continue
            tally.open_now += 1
            tally.reconnects += 1
            self._broken[i] = self._busy[i] = False
            return
