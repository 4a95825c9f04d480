"""Reconnect delays: full-jitter exponential backoff with an injected random source."""

from __future__ import annotations

import pytest

from controller.agent.backoff import Backoff, full_jitter

ALMOST_ONE = 0.999999


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [
        pytest.param(0, 0.5, id="the first retry waits up to the base"),
        pytest.param(1, 1.0, id="each retry doubles the bound"),
        pytest.param(4, 8.0, id="the fifth retry waits up to 16 x the base"),
        pytest.param(5, 15.0, id="the bound stops at the maximum"),
        pytest.param(10_000, 15.0, id="a very long outage neither overflows nor exceeds it"),
    ],
)
def test_the_bound_doubles_up_to_the_maximum(attempt: int, ceiling: float) -> None:
    assert full_jitter(attempt, 0.5, 15.0, lambda: ALMOST_ONE) == pytest.approx(
        ceiling * ALMOST_ONE
    )


def test_the_delay_is_spread_over_the_whole_window_from_zero() -> None:
    assert full_jitter(3, 0.5, 15.0, lambda: 0.0) == 0.0
    assert full_jitter(3, 0.5, 15.0, lambda: 0.5) == 2.0


def test_consecutive_failures_widen_the_window() -> None:
    backoff = Backoff(0.5, 15.0, rand=lambda: ALMOST_ONE)

    delays = [round(backoff.next_delay(), 3) for _ in range(7)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert backoff.attempt == 7


def test_a_reset_after_a_successful_session_starts_over() -> None:
    backoff = Backoff(0.5, 15.0, rand=lambda: ALMOST_ONE)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempt == 0
    assert backoff.next_delay() == pytest.approx(0.5 * ALMOST_ONE)


def test_a_reconnect_the_controller_asked_for_has_only_a_small_jitter() -> None:
    backoff = Backoff(0.5, 15.0, rand=lambda: ALMOST_ONE)
    for _ in range(5):
        backoff.next_delay()

    assert backoff.reconnect_delay() == pytest.approx(0.5 * ALMOST_ONE)
    assert backoff.attempt == 5  # not counted as a failure


def test_the_random_source_decides_each_delay() -> None:
    draws = iter([0.25, 0.75, 0.1])
    backoff = Backoff(1.0, 100.0, rand=lambda: next(draws))

    assert [backoff.next_delay() for _ in range(3)] == [0.25, 1.5, 0.4]


@pytest.mark.parametrize(
    ("base_s", "max_s"),
    [
        pytest.param(0.0, 15.0, id="a zero base"),
        pytest.param(-1.0, 15.0, id="a negative base"),
        pytest.param(20.0, 15.0, id="a base above the maximum"),
    ],
)
def test_invalid_bounds_are_refused(base_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s, max_s)
