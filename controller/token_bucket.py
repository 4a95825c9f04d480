"""A token bucket on an injected clock: `burst` tokens, refilled at `rate_per_s`. The heartbeat
stream bounds an agent's beats with one; the scheduler bounds evictions of OFFLINE nodes."""

from __future__ import annotations

from controller.clock import Clock


class TokenBucket:
    __slots__ = ("_at", "_burst", "_clock", "_rate", "_tokens")  # one per heartbeat stream

    def __init__(self, burst: int, rate_per_s: float, clock: Clock) -> None:
        self._burst, self._rate, self._clock = burst, rate_per_s, clock
        self._tokens = float(burst)
        self._at = clock.monotonic()

    def take(self) -> bool:
        """Takes one token if there is one; False (and nothing taken) if the bucket is empty."""
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
