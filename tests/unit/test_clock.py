"""The fake clock: time moves only when a test says so, wall and monotonic time together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.clock import Clock, FakeClock, SystemClock


def test_a_fake_clock_starts_at_new_year_2026_in_utc() -> None:
    clock = FakeClock()
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_a_fake_clock_can_start_anywhere() -> None:
    start = datetime(2030, 6, 1, 12, tzinfo=UTC)
    assert FakeClock(start).now() == start


def test_a_fake_clock_stands_still_until_advanced() -> None:
    clock = FakeClock()
    assert (clock.now(), clock.monotonic()) == (clock.now(), clock.monotonic())


def test_advancing_moves_wall_and_monotonic_time_together() -> None:
    clock = FakeClock()
    wall, mono = clock.now(), clock.monotonic()
    clock.advance(2.5)
    clock.advance(0.5)
    assert clock.now() - wall == timedelta(seconds=3)
    assert clock.monotonic() - mono == 3.0


def test_both_clocks_meet_the_protocol() -> None:
    clocks: list[Clock] = [FakeClock(), SystemClock()]
    for clock in clocks:
        assert clock.now().tzinfo is not None
        assert isinstance(clock.monotonic(), float)
