"""Which nodes are alive, judged only by when the controller received their beats.

A pure state machine on an injected clock: no I/O, no tasks. Callers report stream events and
beats, and call `sweep()` periodically; every method returns the status transitions it caused.

    PENDING --stream/beat--> READY --late beat or broken stream--> SUSPECT --grace--> OFFLINE
       any status --beat--> READY

Deadlines sit in one heap with one live entry per node (`_Entry.due`; older entries are
stale and skipped); a beat only updates the node's `last_beat`, so the per-beat cost is O(1)
and the heap is touched about once per `suspect_after_s` per node.

After a restart, nodes that were alive keep their status for `failover_grace_s` (the controller
was away, not them): a silent one is SUSPECT when the grace ends and OFFLINE `offline_after_s -
suspect_after_s` later. A large fleet's grace is longer: the nodes restored together get at least
one second per `failover_reconnects_per_s` of them (as Nomad's heartbeat TTL grows with the
fleet), since they cannot all reconnect at once (50,000 streams took 80-170 s to open on two
shared cores, while half the fleet was written SUSPECT and back after 60 s). So a fleet that
reconnects within its grace, however slowly, is never written SUSPECT and back. When most of
the fleet goes quiet at once, the controller suspects itself and marks no node OFFLINE until
the fleet recovers or `self_suspicion_max_s` passes."""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from datetime import datetime

from controller.clock import Clock
from controller.models import NodeStatus

log = logging.getLogger("controller.liveness")
_ALIVE = (NodeStatus.READY, NodeStatus.SUSPECT)


@dataclass(frozen=True)
class LivenessSettings:
    """Durations in seconds. Invariant: interval < suspect_after < offline_after."""

    interval_s: float = 5.0
    suspect_after_s: float = 7.5
    offline_after_s: float = 15.0
    failover_grace_s: float = 60.0
    failover_reconnects_per_s: float = 250.0  # a large fleet's grace: see the module's doc
    self_suspicion_fraction: float = 0.5
    self_suspicion_min_nodes: int = 3
    self_suspicion_max_s: float = 300.0


@dataclass(frozen=True)
class Transition:
    node_id: str
    status: NodeStatus
    reason: str


class _Failover:
    """Nodes restored together (within a second of each other): their grace grows with them."""

    __slots__ = ("count", "last", "start")

    def __init__(self, now: float) -> None:
        self.start = self.last = now
        self.count = 0

    def end(self, settings: LivenessSettings) -> float:
        grace = max(settings.failover_grace_s, self.count / settings.failover_reconnects_per_s)
        return self.start + grace


class _Entry:
    __slots__ = ("connected", "due", "last_beat", "last_beat_wall", "restored", "status")

    def __init__(self, status: NodeStatus, now: float) -> None:
        self.status = status
        self.last_beat = now  # monotonic; for restored nodes, a virtual beat (see `track`)
        self.last_beat_wall: datetime | None = None
        self.restored: _Failover | None = None  # restored, and silent since
        self.connected = False
        self.due: float | None = None  # of its live heap entry; other entries are stale


class Liveness:
    def __init__(self, settings: LivenessSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []
        self._counts = dict.fromkeys(NodeStatus, 0)
        self._suspected_since: float | None = None
        self._dirty_beats: set[str] = set()
        self._failover: _Failover | None = None  # the latest nodes restored together

    # Questions

    def status(self, node_id: str) -> NodeStatus | None:
        entry = self._entries.get(node_id)
        return entry.status if entry else None

    def last_seen(self, node_id: str) -> datetime | None:
        entry = self._entries.get(node_id)
        return entry.last_beat_wall if entry else None

    @property
    def self_suspected(self) -> bool:
        return self._suspected_since is not None

    # Membership

    def track(self, node_id: str, status: NodeStatus, *, restored: bool = False) -> None:
        """Starts tracking a node. `restored`: loaded at start-up, so if it was alive it gets
        the failover grace instead of being judged by beats this process never saw."""
        now = self._clock.monotonic()
        entry = _Entry(status, now)
        self._entries[node_id] = entry
        self._counts[status] += 1
        if restored and status in _ALIVE:
            # A virtual last beat, placed so that the usual deadlines judge it first when the
            # failover grace ends: SUSPECT then (if READY), OFFLINE offline - suspect later.
            # (A large fleet's grace ends later: `_judge` moves the virtual beat then.)
            entry.last_beat += self.settings.failover_grace_s - self.settings.suspect_after_s
            failover = self._failover
            if failover is None or now - failover.last > 1.0:
                failover = self._failover = _Failover(now)
            failover.count += 1
            failover.last = now
            entry.restored = failover
            self._schedule(node_id, entry)

    def forget(self, node_id: str) -> None:
        entry = self._entries.pop(node_id, None)
        if entry is not None:
            self._counts[entry.status] -= 1
        self._dirty_beats.discard(node_id)

    # Events from the heartbeat stream

    def connected(self, node_id: str) -> Transition | None:
        entry = self._entries[node_id]
        entry.connected = True
        return self._beat(node_id, entry, "heartbeat stream opened")

    def beat(self, node_id: str) -> Transition | None:
        return self._beat(node_id, self._entries[node_id], "heartbeat received")

    def disconnected(
        self, node_id: str, reason: str, *, planned: bool = False
    ) -> Transition | None:
        """The node's stream ended. Unplanned ends make a READY node SUSPECT at once; a planned
        end (the controller asked the agent to reconnect) waits for the usual deadline."""
        entry = self._entries.get(node_id)
        if entry is None:
            return None
        entry.connected = False
        if planned or entry.status is not NodeStatus.READY:
            return None
        return self._set(node_id, entry, NodeStatus.SUSPECT, reason)

    def _beat(self, node_id: str, entry: _Entry, reason: str) -> Transition | None:
        entry.last_beat = self._clock.monotonic()
        entry.last_beat_wall = self._clock.now()
        entry.restored = None
        self._dirty_beats.add(node_id)
        if entry.status is NodeStatus.READY:
            if entry.due is None:
                self._schedule(node_id, entry)
            return None  # a beat only moves deadlines later: the entry due is early enough
        transition = self._set(node_id, entry, NodeStatus.READY, reason)
        if entry.due is None or entry.due > entry.last_beat + self.settings.suspect_after_s:
            self._schedule(node_id, entry)
        return transition

    # Time passing

    def sweep(self) -> list[Transition]:
        """Applies every deadline that has passed; returns the transitions."""
        now = self._clock.monotonic()
        self._judge_self(now)
        transitions: list[Transition] = []
        while self._heap and self._heap[0][0] <= now:
            due, node_id = heapq.heappop(self._heap)
            entry = self._entries.get(node_id)
            if entry is None or entry.due != due:
                continue  # forgotten, or a stale entry
            entry.due = None
            transition = self._judge(node_id, entry, now)
            if transition is not None:
                transitions.append(transition)
            if entry.status in _ALIVE:
                self._schedule(node_id, entry)
        return transitions

    def drain_beats(self) -> dict[str, datetime]:
        """Last-beat times changed since the previous call (for coalesced persistence)."""
        beats = {}
        for node_id in self._dirty_beats:
            seen = self._entries[node_id].last_beat_wall
            if seen is not None:
                beats[node_id] = seen
        self._dirty_beats.clear()
        return beats

    def _judge(self, node_id: str, entry: _Entry, now: float) -> Transition | None:
        if entry.restored is not None:
            end = entry.restored.end(self.settings)
            if now < end:  # a large fleet's grace: judged again when it ends
                entry.last_beat = end - self.settings.suspect_after_s
                return None
        silent = now - entry.last_beat
        if entry.status is NodeStatus.READY and silent >= self.settings.suspect_after_s:
            return self._set(node_id, entry, NodeStatus.SUSPECT, _silence(entry, silent))
        if entry.status is NodeStatus.SUSPECT and silent >= self.settings.offline_after_s:
            if self._suspected_since is not None:
                return None  # the fault is more likely ours; keep the node SUSPECT
            return self._set(node_id, entry, NodeStatus.OFFLINE, _silence(entry, silent))
        return None  # a node that beat meanwhile (the common case): no reason to format

    def _judge_self(self, now: float) -> None:
        s = self.settings
        alive = self._counts[NodeStatus.READY] + self._counts[NodeStatus.SUSPECT]
        quiet = self._counts[NodeStatus.SUSPECT]
        mostly_quiet = (
            alive >= s.self_suspicion_min_nodes and quiet > s.self_suspicion_fraction * alive
        )
        if self._suspected_since is None and mostly_quiet:
            self._suspected_since = now
            log.warning(
                "most of the fleet went quiet at once; suspecting the controller itself and"
                " marking no node OFFLINE",
                extra={"fields": {"suspect": quiet, "alive": alive}},
            )
        elif self._suspected_since is not None:
            if not mostly_quiet:
                self._suspected_since = None
                log.warning("the fleet recovered; no longer suspecting the controller itself")
            elif now - self._suspected_since >= s.self_suspicion_max_s:
                self._suspected_since = None
                log.warning("self-suspicion lasted too long; marking silent nodes OFFLINE again")

    def _schedule(self, node_id: str, entry: _Entry) -> None:
        if entry.status is NodeStatus.READY:
            due = entry.last_beat + self.settings.suspect_after_s
        else:
            due = entry.last_beat + self.settings.offline_after_s
        if self._suspected_since is not None:
            due = max(due, self._clock.monotonic() + self.settings.interval_s)
        heapq.heappush(self._heap, (due, node_id))
        entry.due = due

    def _set(self, node_id: str, entry: _Entry, status: NodeStatus, reason: str) -> Transition:
        self._counts[entry.status] -= 1
        self._counts[status] += 1
        entry.status = status
        return Transition(node_id, status, reason)


def _silence(entry: _Entry, silent: float) -> str:
    if entry.restored is not None:
        return "no heartbeat since the controller started"
    return f"no heartbeat for {silent:.1f}s"
