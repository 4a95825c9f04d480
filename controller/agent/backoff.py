"""Reconnect delays: exponential backoff with full jitter, and the small jitter of a reconnect the
controller asked for.

Full jitter (the n-th retry waits `uniform(0, min(max_s, base_s * 2**n))`) spreads a fleet that
lost its controller at the same instant over the whole window, so a controller restart does not
meet a synchronized storm of reconnects; plain exponential backoff would keep the fleet in
lockstep. Pure: the random source is injected, so tests are deterministic."""

from __future__ import annotations

import random
from collections.abc import Callable

Random = Callable[[], float]  # uniform in [0, 1)


def full_jitter(attempt: int, base_s: float, max_s: float, rand: Random) -> float:
    """The delay before retry number `attempt` (0-based): uniform in
    `[0, min(max_s, base_s * 2**attempt))`."""
    # Capping the exponent keeps 2**attempt finite however long the controller stays away.
    ceiling = min(max_s, base_s * 2.0 ** min(attempt, 64))
    return rand() * ceiling


class Backoff:
    """Delays for consecutive failures. `next_delay()` returns the delay before the next try and
    counts the failure; `reset()` starts over (after a successful session). Not thread-safe; one
    agent loop owns it."""

    def __init__(self, base_s: float, max_s: float, rand: Random = random.random) -> None:
        if not 0 < base_s <= max_s:
            raise ValueError(f"need 0 < base_s <= max_s, got {base_s} and {max_s}")
        self.base_s = base_s
        self.max_s = max_s
        self._rand = rand
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Failures since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        delay = full_jitter(self._attempt, self.base_s, self.max_s, self._rand)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0

    def reconnect_delay(self) -> float:
        """The delay of a reconnect the controller asked for (its shutdown, or the planned end
        of a long-lived stream): no backoff, only up to `base_s` of jitter so that the agents
        of a stopping controller do not all arrive at the next one in the same millisecond.
        Does not count as a failure."""
        return self._rand() * self.base_s
