"""The admission gate (controller/admission.py): a concurrency limit with a bounded first come
first served queue, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from controller.admission import MAX_RETRY_AFTER_S, MIN_RETRY_AFTER_S, Gate, Overloaded, Ticket
from controller.clock import FakeClock


async def parked(gate: Gate) -> asyncio.Task[Ticket]:
    """A call that enters `gate` and must wait: its task, once it waits in the queue."""
    queued = gate.queued
    task = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)  # one turn of the loop: the task runs until it waits
    assert gate.queued == queued + 1 and not task.done()
    return task


async def test_admits_up_to_the_bound_at_once_then_parks_first_come_first_served() -> None:
    gate = Gate(2, 10, FakeClock())
    first, second = await gate.enter(), await gate.enter()
    third, fourth = await parked(gate), await parked(gate)
    assert (gate.inflight, gate.queued) == (2, 2)

    first.release()
    held = await third  # the oldest waiting call gets the slot
    assert not fourth.done()
    assert (gate.inflight, gate.queued) == (2, 1)

    second.release()
    held.release()
    (await fourth).release()
    assert (gate.inflight, gate.queued, gate.admitted) == (0, 0, 4)


async def test_a_free_slot_is_not_taken_past_calls_already_waiting() -> None:
    gate = Gate(1, 10, FakeClock())
    holder = await gate.enter()
    waiting = await parked(gate)
    holder.release()  # the slot is handed to `waiting`, not left free for a newcomer
    assert gate.must_wait()
    late = await parked(gate)
    (await waiting).release()
    (await late).release()


async def test_a_full_queue_refuses_with_a_hint_from_how_long_slots_are_held() -> None:
    clock = FakeClock()
    gate = Gate(2, 2, clock)
    # Slots held 4 s each, on average.
    for _ in range(3):
        ticket = await gate.enter()
        clock.advance(4.0)
        ticket.release()
    holders = [await gate.enter(), await gate.enter()]
    waiting = [await parked(gate), await parked(gate)]

    with pytest.raises(Overloaded) as refused:
        await gate.enter()
    # Two queued and this one, at two slots of 4 s: 6 s.
    assert refused.value.retry_after_s == pytest.approx(6.0)
    assert gate.rejected == 1
    assert gate.queued == 2  # the refused call holds nothing

    for ticket in holders:
        ticket.release()
    for task in waiting:
        (await task).release()
    assert gate.state().inflight == 0


async def test_the_hint_stays_within_its_bounds() -> None:
    clock = FakeClock()
    gate = Gate(1, 0, clock)
    ticket = await gate.enter()
    with pytest.raises(Overloaded) as soon:
        await gate.enter()  # nothing measured yet
    assert soon.value.retry_after_s == MIN_RETRY_AFTER_S
    clock.advance(3600)
    ticket.release()
    ticket = await gate.enter()
    with pytest.raises(Overloaded) as late:
        await gate.enter()
    assert late.value.retry_after_s == MAX_RETRY_AFTER_S
    ticket.release()


async def test_a_caller_that_leaves_while_parked_leaves_the_queue() -> None:
    gate = Gate(1, 10, FakeClock())
    holder = await gate.enter()
    leaving, staying = await parked(gate), await parked(gate)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert gate.queued == 1
    holder.release()
    (await staying).release()
    assert (gate.inflight, gate.queued) == (0, 0)


async def test_a_caller_cancelled_as_its_slot_was_handed_over_passes_it_on() -> None:
    gate = Gate(1, 10, FakeClock())
    holder = await gate.enter()
    handed, next_in_line = await parked(gate), await parked(gate)
    holder.release()  # the slot goes to `handed`, which is cancelled before it resumes
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    ticket = await next_in_line
    assert gate.inflight == 1
    ticket.release()
    assert gate.inflight == 0


async def test_release_twice_frees_one_slot() -> None:
    gate = Gate(1, 10, FakeClock())
    ticket = await gate.enter()
    ticket.release()
    ticket.release()
    assert gate.inflight == 0
    again = await gate.enter()
    assert gate.must_wait()
    again.release()


async def test_no_bound_admits_everything_at_once() -> None:
    gate = Gate(0, 0, FakeClock())
    tickets = [await gate.enter() for _ in range(1000)]
    assert gate.inflight == 1000 and not gate.must_wait()
    for ticket in tickets:
        ticket.release()
    assert gate.inflight == 0


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Gate(-1, 0, FakeClock())
