"""The beat schedule: drift-free on the monotonic clock, no bursts after a stall."""

from __future__ import annotations

import pytest

from controller.agent.session import BeatSchedule


def test_the_first_beat_is_due_at_once() -> None:
    assert BeatSchedule(100.0, 5.0).due == 100.0


def test_beats_stay_on_the_grid_whatever_each_beat_cost() -> None:
    schedule = BeatSchedule(100.0, 5.0)
    dues = []
    for sent_at in (100.3, 105.9, 110.01, 115.0):
        assert schedule.advance(sent_at) == 0
        dues.append(schedule.due)

    assert dues == [105.0, 110.0, 115.0, 120.0]


def test_after_a_stall_one_beat_goes_out_at_once_and_missed_slots_are_skipped() -> None:
    schedule = BeatSchedule(100.0, 5.0)

    skipped = schedule.advance(122.0)  # stalled from 100 to 122: slots 105, 110, 115 missed

    assert skipped == 3
    assert schedule.due == 120.0  # already due: one beat now, not four
    assert schedule.advance(120.5) == 0
    assert schedule.due == 125.0  # back on the grid


def test_a_beat_late_by_less_than_an_interval_skips_nothing() -> None:
    schedule = BeatSchedule(100.0, 5.0)
    schedule.advance(100.0)

    assert schedule.advance(109.9) == 0
    assert schedule.due == 110.0


@pytest.mark.parametrize("interval_s", [0.0, -1.0, 0.001])
def test_a_tiny_interval_from_the_controller_is_raised_to_the_floor(interval_s: float) -> None:
    assert BeatSchedule(0.0, interval_s).interval_s == 0.05
