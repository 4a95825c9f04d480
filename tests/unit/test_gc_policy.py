"""When the GC policy freezes and thaws (controller/gc_policy.py): driven by the streams' counters
and a fake clock, against a fake collector that records its calls. No real collection runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from controller.clock import FakeClock
from controller.gc_policy import Churn, GcPolicy, GcSettings
from controller.registry.sessions import Sessions

SETTINGS = GcSettings(freeze_opens=100, settle_s=60.0, thaw_turnover=2.0, thaw_after_s=6 * 3600.0)


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def collect(self) -> int:
        self.calls.append("collect")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")


@pytest.fixture
def collector() -> FakeCollector:
    return FakeCollector()


@pytest.fixture
def policy(clock: FakeClock, collector: FakeCollector) -> GcPolicy:
    return GcPolicy(SETTINGS, clock, collector)


def test_nothing_opened_nothing_done(policy: GcPolicy, clock: FakeClock) -> None:
    for _ in range(10):
        clock.advance(3600)
        assert policy.tick(Churn(opened=0, closed=0, open=0)) is None


def test_a_burst_of_opens_is_collected_then_frozen(
    policy: GcPolicy, collector: FakeCollector
) -> None:
    assert policy.tick(Churn(opened=99, closed=0, open=99)) is None
    assert policy.tick(Churn(opened=100, closed=0, open=100)) == "freeze"
    # The collection comes first: the cycles of streams that ended are freed, not frozen.
    assert collector.calls == ["collect", "freeze"]
    # The next batch counts from the freeze.
    assert policy.tick(Churn(opened=150, closed=0, open=150)) is None
    assert policy.tick(Churn(opened=200, closed=0, open=200)) == "freeze"


def test_a_trickle_of_opens_is_frozen_once_settled(policy: GcPolicy, clock: FakeClock) -> None:
    assert policy.tick(Churn(opened=3, closed=0, open=3)) is None  # first seen now
    clock.advance(59)
    assert policy.tick(Churn(opened=5, closed=0, open=5)) is None
    clock.advance(1)
    assert policy.tick(Churn(opened=6, closed=0, open=6)) == "freeze"
    clock.advance(600)  # no opens since: nothing to freeze
    assert policy.tick(Churn(opened=6, closed=0, open=6)) is None
    # The settle time counts from when new opens are first seen, not from the last freeze.
    assert policy.tick(Churn(opened=7, closed=0, open=7)) is None
    clock.advance(60)
    assert policy.tick(Churn(opened=7, closed=0, open=7)) == "freeze"


def test_a_churning_fleet_thaws_once_per_turnover(
    policy: GcPolicy, clock: FakeClock, collector: FakeCollector
) -> None:
    """1,000 streams stay open while each reconnects every ~30 minutes (one close and one open
    every ~1.8 s): the frozen heap is collected whole each time 2,000 have closed (two turnovers),
    so what closed streams left in cycles while frozen never outgrows two fleets' worth."""
    opened, closed, thaws, freezes = 1000, 0, 0, 0
    for _ in range(10 * 3600):  # ten hours, one tick a second
        clock.advance(1)
        if clock.monotonic() % 2 < 1:
            opened, closed = opened + 1, closed + 1
        done = policy.tick(Churn(opened=opened, closed=closed, open=1000))
        thaws += done == "thaw"
        freezes += done == "freeze"
    assert closed == 18_000
    assert thaws == 9  # every 2,000 closes (~66 min)
    assert freezes >= 9 * 3600 // 200  # each batch of 100 opens, ~every 200 s
    first = collector.calls.index("unfreeze")
    assert collector.calls[first : first + 3] == ["unfreeze", "collect", "freeze"]


def test_a_thaw_counts_at_least_a_freeze_batch_of_closes(policy: GcPolicy) -> None:
    """A tiny fleet (5 streams) thaws after 100 closes, not after 10: its heap is small, but a
    thaw every few reconnects would be pointless work."""
    assert policy.tick(Churn(opened=60, closed=55, open=5)) != "thaw"
    assert policy.tick(Churn(opened=105, closed=100, open=5)) == "thaw"


def test_a_quiet_fleet_still_thaws_after_hours_once_something_was_frozen(
    policy: GcPolicy, clock: FakeClock
) -> None:
    """Other churn than streams (nodes deleted, watchers) may leave cycles in the frozen heap too;
    a thaw every `thaw_after_s` bounds them, but only once a freeze happened since the last."""
    assert policy.tick(Churn(opened=100, closed=0, open=100)) == "freeze"
    clock.advance(6 * 3600 - 1)
    assert policy.tick(Churn(opened=100, closed=0, open=100)) is None
    clock.advance(1)
    assert policy.tick(Churn(opened=100, closed=0, open=100)) == "thaw"
    clock.advance(6 * 3600)
    assert policy.tick(Churn(opened=100, closed=0, open=100)) is None


def test_a_thaw_also_freezes_what_opened_since_the_last_freeze(policy: GcPolicy) -> None:
    assert policy.tick(Churn(opened=50, closed=200, open=50)) == "thaw"
    assert policy.tick(Churn(opened=50, closed=200, open=50)) is None


def test_sessions_count_opens_and_closes() -> None:
    sessions = Sessions()
    first = sessions.open("n1")
    second = sessions.open("n1")  # replaces the first
    sessions.close(first)
    assert (sessions.opened, sessions.closed, len(sessions)) == (2, 1, 1)
    sessions.close(second)
    assert (sessions.opened, sessions.closed, len(sessions)) == (2, 2, 0)


async def test_run_ticks_on_the_event_loop(clock: FakeClock) -> None:
    """With the real collector: a freeze moves what is alive out of the collector's reach."""
    policy = GcPolicy(GcSettings(tick_s=0.0, freeze_opens=1), clock)
    ticked = asyncio.Event()
    calls = 0

    def churn() -> Churn:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first tick asked once, then once more to log its freeze
            ticked.set()
        return Churn(opened=1, closed=0, open=1)

    frozen_before = gc.get_freeze_count()
    task = asyncio.create_task(policy.run(churn))
    try:
        async with asyncio.timeout(30):
            await ticked.wait()
        assert gc.get_freeze_count() > frozen_before
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.unfreeze()
