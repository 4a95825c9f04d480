"""Heartbeat sessions: at most one live stream per node.

A newer stream for a node replaces the older one, which is told to stop (its handler ends it
with ABORTED). The controller can also ask every stream to stop and have its agent reconnect
(on shutdown, and on each stream's jittered lifetime timer).

A session is plain state plus one listener (the stream holding it): a stop or a push calls the
listener at once, so a stream waits for nothing but its agent's next message (no task, future or
event per stream to wait on)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class StopKind(enum.Enum):
    REPLACED = "REPLACED"  # a newer stream for the node took over
    RECONNECT = "RECONNECT"  # the controller asks the agent to reconnect now


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    reason: str


class SessionListener(Protocol):
    def stop_requested(self) -> None:
        """The session was stopped (`Session.stopped` says why)."""

    def assignments_pushed(self) -> None:
        """The node's assignments changed (`Session.take_push` says whether still due)."""


class Session:
    __slots__ = ("_listener", "_pushed", "id", "node_id", "stopped")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.id = uuid.uuid4().hex
        self.stopped: Stop | None = None  # set once, by the first stop
        self._pushed = False  # the node's assignments changed since the stream last sent them
        self._listener: SessionListener | None = None

    def listen(self, listener: SessionListener | None) -> None:
        """Calls `listener` on each later stop and push, and at once for what is already due
        (None: no more calls)."""
        self._listener = listener
        if listener is not None:
            if self.stopped is not None:
                listener.stop_requested()
            elif self._pushed:
                listener.assignments_pushed()

    def stop(self, kind: StopKind, reason: str) -> None:
        if self.stopped is None:
            self.stopped = Stop(kind, reason)
            if self._listener is not None:
                self._listener.stop_requested()

    def push(self) -> None:
        """The node's assignments changed; the stream then sends the new set."""
        self._pushed = True
        if self._listener is not None:
            self._listener.assignments_pushed()

    def take_push(self) -> bool:
        """Whether a push is due (and no longer, once asked)."""
        pushed, self._pushed = self._pushed, False
        return pushed


class Sessions:
    def __init__(self) -> None:
        self._by_node: dict[str, Session] = {}
        self.opened = 0  # sessions opened since the start (the GC policy reads the churn)
        self.closed = 0

    def __len__(self) -> int:
        return len(self._by_node)

    def open(self, node_id: str) -> Session:
        session = Session(node_id)
        self.opened += 1
        older = self._by_node.get(node_id)
        if older is not None:
            older.stop(StopKind.REPLACED, "replaced by a newer heartbeat stream for this node")
        self._by_node[node_id] = session
        return session

    def close(self, session: Session) -> bool:
        """Forgets the session; True if it was still the node's current one."""
        self.closed += 1
        if self._by_node.get(session.node_id) is session:
            del self._by_node[session.node_id]
            return True
        return False

    def end(self, node_id: str, reason: str) -> None:
        """Ends the node's stream here, if any (its agent streams to another replica now)."""
        session = self._by_node.get(node_id)
        if session is not None:
            session.stop(StopKind.REPLACED, reason)

    def assignments_changed(self, node_ids: Iterable[str]) -> None:
        for node_id in node_ids:
            session = self._by_node.get(node_id)
            if session is not None:
                session.push()

    def reconnect_all(self, reason: str) -> None:
        for session in list(self._by_node.values()):
            session.stop(StopKind.RECONNECT, reason)
