"""The change feed: every in-memory view follows the store's change log, in revision order.

The change log is the one source of truth. A write does not update the index beside the store:
it commits, then waits until the feed has applied the log up to its revision (`caught_up`). The
feed applies every change, this process's and other replicas' alike, in order, to the
collection of its kind (`Collection.apply`), so the index, the watchers' events and the
idempotency view see one history, and a write made on another replica reaches this one's reads
and watches the same way. A caller that gives up cannot leave a write half-applied: the feed,
not the caller, applies it.

A writer that has its changes at hand, decoded (a group commit's new nodes), hands them over
with `wrote`: when they follow the position directly, with no revision missing (nothing else can
then lie between), the feed applies them as read from the log, without reading back and decoding
what this process just wrote; otherwise it reads the log up to the last of them. Either way the
feed applies them, in order, under its one reader's lock.

Who drives it: a writer catches the feed up to its own revision; `run()` (started by the server)
catches it up whenever the store says another process wrote (PostgreSQL LISTEN/NOTIFY), and at
least every `poll_s` in case a notification was lost (a broken connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from controller.store.base import Change

log = logging.getLogger("controller.feed")

PAGE = 1000  # changes per read
POLL_S = 1.0  # the longest another replica's write waits when a notification is lost


class ChangeStore(Protocol):
    """What the feed needs of `controller.store.base.Store`."""

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]: ...

    async def wait_for_changes(self, timeout_s: float) -> None: ...


class Follower(Protocol):
    """A view the feed keeps up to date (a collection)."""

    def apply(self, change: Change) -> None:
        """Applies one change of its kind, in revision order; must not await."""
        ...

    def reached(self, revision: int) -> None:
        """Every change up to `revision` (of any kind) has been applied."""
        ...


class ChangeFeed:
    def __init__(self, store: ChangeStore, poll_s: float = POLL_S) -> None:
        self._store = store
        self._poll_s = poll_s
        self._followers: dict[str, Follower] = {}
        self.position = 0  # every change up to here is applied
        self._started = False
        self._reading = asyncio.Lock()  # one reader of the log at a time, in order
        self._task: asyncio.Task[None] | None = None
        self.on_caught_up: list[Callable[[int], None]] = []

    def follow(self, kind: str, follower: Follower) -> None:
        self._followers[kind] = follower

    def start_at(self, revision: int) -> None:
        """A view was loaded from the store, which was at `revision` before it was read. The
        feed starts at the earliest such revision: re-applying a change that a view already
        reflects changes nothing."""
        self.position = revision if not self._started else min(self.position, revision)
        self._started = True
        for follower in self._followers.values():
            follower.reached(self.position)

    async def caught_up(self, revision: int = -1) -> int:
        """Returns once every change up to `revision` is applied (-1: up to the latest in the
        store now); returns the position reached."""
        async with self._reading:
            await self._catch_up_locked(revision)
        return self.position

    async def wrote(self, changes: Sequence[Change]) -> int:
        """`caught_up` to the last of `changes`, which this process just committed (in revision
        order, each as the log holds it): applied from here if they directly follow the
        position with no gap, else read from the log. Returns the position reached."""
        if not changes:
            return self.position
        async with self._reading:
            first, last = changes[0].revision, changes[-1].revision
            if first == self.position + 1 and last - first == len(changes) - 1:
                self._apply(changes)  # revisions consecutive from the position: nothing between
            else:
                await self._catch_up_locked(last)
        return self.position

    async def _catch_up_locked(self, revision: int) -> None:
        while revision < 0 or self.position < revision:
            read = await self._read_once()
            if revision < 0 and read < PAGE:
                break
            if read == 0:  # committed, but not yet visible to this reader: look again
                await asyncio.sleep(0.001)

    async def _read_once(self) -> int:
        """Reads and applies one page after the position; returns how many changes it held."""
        changes = await self._store.changes_since(self.position, PAGE)
        self._apply(changes)
        return len(changes)

    def _apply(self, changes: Sequence[Change]) -> None:
        """Applies `changes`, the next ones of the log in revision order."""
        followers = self._followers
        for change in changes:
            follower = followers.get(change.kind)
            if follower is not None:
                follower.apply(change)
            self.position = change.revision
        if changes:
            for follower in followers.values():
                follower.reached(self.position)
            for listener in self.on_caught_up:
                listener(self.position)

    def start(self) -> None:
        """Follows other processes' writes until `stop()`."""
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        # Listening starts (a zero wait) before the first catch-up, so no change falls between.
        timeout_s = 0.0
        while True:
            try:
                await self._store.wait_for_changes(timeout_s)
                timeout_s = self._poll_s
                await self.caught_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store that is down: retried on the next turn
                log.warning("cannot follow the change log", exc_info=True)
                await asyncio.sleep(self._poll_s)
