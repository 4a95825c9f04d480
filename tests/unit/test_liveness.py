"""Liveness rules as table tests on a fake clock: each case is a script of stream events and
time passing, and the status the node must end in."""

from __future__ import annotations

import pytest

from controller.clock import FakeClock
from controller.models import NodeStatus
from controller.registry.liveness import Liveness, LivenessSettings, Transition

SETTINGS = LivenessSettings(
    interval_s=5,
    suspect_after_s=7.5,
    offline_after_s=15,
    failover_grace_s=60,
    self_suspicion_fraction=0.5,
    self_suspicion_min_nodes=3,
    self_suspicion_max_s=300,
)
P, R, S, O = NodeStatus.PENDING, NodeStatus.READY, NodeStatus.SUSPECT, NodeStatus.OFFLINE  # noqa: E741


def run(liveness: Liveness, clock: FakeClock, node_id: str, script: list[str | float]) -> None:
    """Plays a script: numbers advance the clock (then sweep); words are stream events."""
    for step in script:
        if isinstance(step, (int, float)):
            clock.advance(step)
            liveness.sweep()
        elif step == "connect":
            liveness.connected(node_id)
        elif step == "beat":
            liveness.beat(node_id)
        elif step == "break":
            liveness.disconnected(node_id, "stream broke")
        elif step == "planned end":
            liveness.disconnected(node_id, "lifetime", planned=True)
        else:
            raise ValueError(step)


CASES: dict[str, tuple[NodeStatus, bool, list[str | float], NodeStatus]] = {
    # name: (stored status, restored at start-up, script, expected status)
    "a registered node that never connected stays pending": (P, False, [1000], P),
    "a node is ready once its stream opens": (P, False, ["connect"], R),
    "a node stays ready while beats arrive on time": (
        P,
        False,
        ["connect", 5, "beat", 5, "beat", 5],
        R,
    ),
    "a beat late by a moment does not make a node suspect": (P, False, ["connect", 7.4], R),
    "a late beat makes a node suspect": (P, False, ["connect", 7.5], S),
    "a broken stream makes a node suspect at once": (P, False, ["connect", "break"], S),
    "a planned end of the stream does not make a node suspect": (
        P,
        False,
        ["connect", "planned end", 1],
        R,
    ),
    "after a planned end, a node that never returns goes suspect": (
        P,
        False,
        ["connect", "planned end", 7.5],
        S,
    ),
    "a suspect node is not offline before the grace": (P, False, ["connect", "break", 14.9], S),
    "a silent node is offline after the grace": (P, False, ["connect", "break", 15], O),
    "a frozen agent is offline within interval plus grace": (
        P,
        False,
        ["connect", 5, 5, 5],
        O,
    ),
    "a suspect node is ready again on its next beat": (
        P,
        False,
        ["connect", "break", 3, "beat"],
        R,
    ),
    "an offline node is ready again on its next beat": (P, False, ["connect", 20, "connect"], R),
    "a ready node restored at start-up is not suspect before the failover grace": (
        R,
        True,
        [30, 20],
        R,
    ),
    "a restored node is not suspect before the failover grace ends": (R, True, [59.9], R),
    "a restored node that is still silent when the grace ends is suspect": (R, True, [60], S),
    "a restored node is not offline before offline - suspect after the grace": (
        R,
        True,
        [60, 7.4],
        S,
    ),
    "a restored node that never returns is offline after that": (R, True, [60, 7.5], O),
    "a restored suspect node stays suspect through the grace": (S, True, [67.4], S),
    "a restored suspect node that never returns is offline after it": (S, True, [67.5], O),
    "a restored node whose agent reconnects is ready": (R, True, [10, "connect"], R),
    "a restored offline node stays offline": (O, True, [100], O),
    "a restored pending node stays pending": (P, True, [100], P),
}


@pytest.mark.parametrize("name", CASES)
def test_liveness(name: str) -> None:
    stored, restored, script, expected = CASES[name]
    clock = FakeClock()
    liveness = Liveness(SETTINGS, clock)
    liveness.track("n", stored, restored=restored)
    run(liveness, clock, "n", script)
    assert liveness.status("n") is expected


def test_transitions_say_why() -> None:
    clock = FakeClock()
    liveness = Liveness(SETTINGS, clock)
    liveness.track("n", P)
    assert liveness.connected("n") == Transition("n", R, "heartbeat stream opened")
    assert liveness.beat("n") is None
    clock.advance(8)
    assert liveness.sweep() == [Transition("n", S, "no heartbeat for 8.0s")]
    clock.advance(7)
    assert liveness.sweep() == [Transition("n", O, "no heartbeat for 15.0s")]
    assert liveness.sweep() == []


def test_liveness_is_judged_by_when_beats_were_received() -> None:
    clock = FakeClock()
    liveness = Liveness(SETTINGS, clock)
    liveness.track("n", P)
    liveness.connected("n")
    clock.advance(3)
    liveness.beat("n")
    assert liveness.last_seen("n") == clock.now()


def fleet(size: int) -> tuple[Liveness, FakeClock]:
    clock = FakeClock()
    liveness = Liveness(SETTINGS, clock)
    for i in range(size):
        liveness.track(f"n{i}", P)
        liveness.connected(f"n{i}")
    return liveness, clock


def test_when_most_of_the_fleet_goes_quiet_the_controller_suspects_itself() -> None:
    liveness, clock = fleet(10)
    for i in range(6):
        liveness.disconnected(f"n{i}", "broke")
    clock.advance(1)
    liveness.sweep()
    assert liveness.self_suspected
    for _ in range(10):
        clock.advance(5)
        liveness.beat("n9"), liveness.beat("n8"), liveness.beat("n7"), liveness.beat("n6")
        liveness.sweep()
    assert [liveness.status(f"n{i}") for i in range(6)] == [S] * 6


def test_self_suspicion_ends_when_the_fleet_recovers() -> None:
    liveness, clock = fleet(4)
    for i in range(3):
        liveness.disconnected(f"n{i}", "broke")
    clock.advance(1)
    liveness.sweep()
    assert liveness.self_suspected
    liveness.connected("n0"), liveness.connected("n1")
    clock.advance(1)
    liveness.sweep()
    assert not liveness.self_suspected


def test_self_suspicion_ends_after_its_limit_and_silent_nodes_go_offline() -> None:
    liveness, clock = fleet(3)
    for i in range(3):
        liveness.disconnected(f"n{i}", "broke")
    clock.advance(1)
    liveness.sweep()
    assert liveness.self_suspected
    clock.advance(SETTINGS.self_suspicion_max_s)
    liveness.sweep()
    clock.advance(SETTINGS.interval_s)
    liveness.sweep()
    assert not liveness.self_suspected
    assert [liveness.status(f"n{i}") for i in range(3)] == [O] * 3


def test_a_small_fleet_never_suspects_itself() -> None:
    liveness, clock = fleet(2)
    liveness.disconnected("n0", "broke")
    liveness.disconnected("n1", "broke")
    clock.advance(15)
    liveness.sweep()
    assert not liveness.self_suspected
    assert liveness.status("n0") is O


def test_beats_are_reported_for_persistence_once() -> None:
    liveness, clock = fleet(2)
    first = liveness.drain_beats()
    assert set(first) == {"n0", "n1"}
    assert liveness.drain_beats() == {}
    clock.advance(1)
    liveness.beat("n1")
    assert liveness.drain_beats() == {"n1": clock.now()}


def test_a_forgotten_node_is_no_longer_judged() -> None:
    liveness, clock = fleet(1)
    liveness.forget("n0")
    clock.advance(100)
    assert liveness.sweep() == []
    assert liveness.status("n0") is None


def test_a_node_back_from_suspect_is_judged_by_its_new_beats() -> None:
    # The heap entry of its SUSPECT spell is due later than its new READY deadline.
    clock = FakeClock()
    liveness = Liveness(SETTINGS, clock)
    liveness.track("n", P)
    run(liveness, clock, "n", ["connect", 5, "beat", 1, "break", 1.5, 0.5, "connect"])
    clock.advance(7.5)
    assert liveness.sweep() == [Transition("n", S, "no heartbeat for 7.5s")]


def test_a_large_restored_fleet_gets_a_grace_that_grows_with_it() -> None:
    # 100 nodes at 1 reconnect/s: 100 s of grace, not 60 (the fleet cannot all reconnect at once).
    clock = FakeClock()
    settings = LivenessSettings(failover_grace_s=60, failover_reconnects_per_s=1)
    liveness = Liveness(settings, clock)
    for i in range(100):
        liveness.track(f"n{i}", R if i % 2 == 0 else S, restored=True)
    clock.advance(99.9)
    assert liveness.sweep() == []
    clock.advance(0.1)
    suspect = liveness.sweep()
    assert len(suspect) == 50
    assert {t.status for t in suspect} == {S}
    assert suspect[0].reason == "no heartbeat since the controller started"


def test_nodes_restored_later_get_a_grace_of_their_own() -> None:
    # A leader taking over a dead replica's nodes later: their own count, from their own start.
    clock = FakeClock()
    settings = LivenessSettings(failover_grace_s=60, failover_reconnects_per_s=1)
    liveness = Liveness(settings, clock)
    for i in range(100):
        liveness.track(f"a{i}", R, restored=True)
    clock.advance(30)
    liveness.track("b", R, restored=True)
    clock.advance(60)
    assert liveness.sweep() == [Transition("b", S, "no heartbeat since the controller started")]
