"""Fan-out of committed changes to watchers, with bounded buffers.

`publish` never blocks and never waits for a watcher: each subscription holds at most `limit`
events; one that overflows is emptied and flagged, and its reader is told to resync (the
watch servicer then sends the current state again). So a slow watcher costs memory bounded by
`limit`, and never slows the controller."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from typing import Generic

from controller.registry.index import T


class EventType(enum.Enum):
    ADDED = "ADDED"
    CHANGED = "CHANGED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Event(Generic[T]):
    """`resource` after the change (for DELETED: its last state); `previous` before it."""

    type: EventType
    resource: T
    revision: int
    previous: T | None = None


class Overflowed(Exception):
    """The subscription dropped events; the reader must resync."""


class Closed(Exception):
    """The hub was closed (the controller is shutting down)."""


class Subscription(Generic[T]):
    def __init__(self, hub: EventHub[T], limit: int) -> None:
        self._hub: EventHub[T] = hub
        self._limit = limit
        self._events: deque[Event[T]] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def _offer(self, event: Event[T]) -> None:
        if self.overflowed:
            return
        if len(self._events) >= self._limit:
            self._events.clear()
            self.overflowed = True
        else:
            self._events.append(event)
        self._ready.set()

    async def next(self) -> Event[T]:
        """The next event; raises Overflowed once if events were dropped (then resets), and
        Closed once the hub is closed."""
        while not self._events:
            if self.closed:
                raise Closed
            if self.overflowed:
                self.overflowed = False
                raise Overflowed
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    def close(self) -> None:
        self._hub._subscriptions.discard(self)


class EventHub(Generic[T]):
    def __init__(self) -> None:
        self._subscriptions: set[Subscription[T]] = set()

    def subscribe(self, limit: int = 1024) -> Subscription[T]:
        subscription = Subscription(self, limit)
        self._subscriptions.add(subscription)
        return subscription

    def close(self) -> None:
        """Ends every subscription: their readers get Closed once their events are read."""
        for subscription in self._subscriptions:
            subscription.closed = True
            subscription._ready.set()

    def publish(self, event: Event[T]) -> None:
        for subscription in self._subscriptions:
            subscription._offer(event)
