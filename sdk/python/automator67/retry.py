"""Retries of idempotent calls, as the Google Cloud client libraries do them: on UNAVAILABLE,
exponential backoff with full jitter, within a total time budget.

Retried by default: every read (Get, List, Stats) and the creates that carry a `request_id`
(which the clients fill in with a UUID when the caller gives none, so that a retry cannot create
twice: AIP-155). Never retried: updates and deletes. Watches resume instead (see `watch.py`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

Random = Callable[[], float]  # uniform in [0, 1)


@dataclass(frozen=True)
class Retry:
    """When and how long to retry. The n-th retry waits `uniform(0, min(maximum_s, initial_s *
    multiplier**n))`; retries stop once `deadline_s` has passed since the first attempt (None:
    never) or after `max_attempts` attempts in all (None: no limit)."""

    initial_s: float = 0.1
    maximum_s: float = 5.0
    multiplier: float = 2.0
    deadline_s: float | None = 30.0
    max_attempts: int | None = 5
    codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.maximum_s or self.multiplier < 1:
            raise ValueError("Retry: need 0 < initial_s <= maximum_s and multiplier >= 1")

    def delay(self, retry: int, rand: Random = random.random) -> float:
        """The delay before retry number `retry` (0-based)."""
        return rand() * min(self.maximum_s, self.initial_s * self.multiplier ** min(retry, 64))

    def delays(
        self, rand: Random = random.random, clock: Callable[[], float] = time.monotonic
    ) -> Iterator[float]:
        """The delays before each retry, until the budget is spent."""
        start = clock()
        retry = 0
        while self.max_attempts is None or retry + 1 < self.max_attempts:
            delay = self.delay(retry, rand)
            if self.deadline_s is not None and clock() + delay - start > self.deadline_s:
                return
            yield delay
            retry += 1


NO_RETRY = Retry(max_attempts=1)
DEFAULT_RETRY = Retry()
# A watch resumes after any number of broken streams (as Kubernetes informers and Pub/Sub's
# streaming pull do); the delays grow to 10 s and start over once an event arrives.
WATCH_RESUME = Retry(initial_s=0.1, maximum_s=10.0, deadline_s=None, max_attempts=None)
