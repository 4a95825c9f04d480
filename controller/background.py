"""A background loop: one task that runs a step when woken and at least every `interval_s`.

The wake event is cleared just before the step runs, so a change made during a step wakes the
next one. `settle_s` waits after a wake before the step, so that a burst of changes costs one
step, not one per change. A step that raises is logged and retried on the next wake or tick; it
never ends the loop. Nothing here knows what the step does (the health monitor and the
scheduler each run one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class BackgroundLoop:
    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[None]],
        wake: asyncio.Event,
        interval_s: float,
        log: logging.Logger,
        settle_s: float = 0.0,
    ) -> None:
        self._name = name
        self._step = step
        self._wake = wake
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancels the loop and waits for it to end (a step in progress is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the inner result and
            # drops a cancel that arrives as the wake fires, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            if self._settle_s:
                await asyncio.sleep(self._settle_s)
            self._wake.clear()
            try:
                await self._step()
            except Exception:
                self._log.exception("%s failed; retrying", self._name)
