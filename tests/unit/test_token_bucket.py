"""The token bucket shared by the heartbeat stream (beats) and the scheduler (evictions)."""

from __future__ import annotations

from controller.clock import FakeClock
from controller.token_bucket import TokenBucket


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(burst=3, rate_per_s=1.0, clock=FakeClock())
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(burst=2, rate_per_s=2.0, clock=clock)
    assert bucket.take() and bucket.take()
    clock.advance(0.4)  # 0.8 of a token
    assert not bucket.take()
    clock.advance(0.1)  # a whole token
    assert bucket.take()
    clock.advance(3600)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
