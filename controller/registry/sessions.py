"""Heartbeat sessions: at most one live stream per node.

A newer stream for a node replaces the older one, which is told to stop (its handler ends it
with ABORTED). The controller can also ask every stream to stop and have its agent reconnect
(on shutdown, and on each stream's jittered lifetime timer)."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field


class StopKind(enum.Enum):
    REPLACED = "REPLACED"  # a newer stream for the node took over
    RECONNECT = "RECONNECT"  # the controller asks the agent to reconnect now


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    reason: str


@dataclass(eq=False)
class Session:
    node_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    stopped: asyncio.Future[Stop] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # Set when the node's assignments changed; the stream then sends the new set.
    assignments_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, kind: StopKind, reason: str) -> None:
        if not self.stopped.done():
            self.stopped.set_result(Stop(kind, reason))


class Sessions:
    def __init__(self) -> None:
        self._by_node: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_node)

    def open(self, node_id: str) -> Session:
        session = Session(node_id)
        older = self._by_node.get(node_id)
        if older is not None:
            older.stop(StopKind.REPLACED, "replaced by a newer heartbeat stream for this node")
        self._by_node[node_id] = session
        return session

    def close(self, session: Session) -> bool:
        """Forgets the session; True if it was still the node's current one."""
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
                session.assignments_changed.set()

    def reconnect_all(self, reason: str) -> None:
        for session in list(self._by_node.values()):
            session.stop(StopKind.RECONNECT, reason)
