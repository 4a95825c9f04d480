"""What nodes and deployments share: a store table mirrored by an in-memory index, idempotent
creates (AIP-155), etag-checked deletes (AIP-154) and filtered, paginated listing.

Invariant: the index is derived from the store's change log, never updated beside it. The
change feed (`registry/feed.py`) applies every change in revision order (`apply`), this
process's writes and other replicas' alike; a write commits, then waits until the feed has
applied its revision. The index differs from the log only by changes the owner made in memory
on purpose and persists later (`stage` + `persist`: node status transitions, coalesced; the
scheduler's placements): readers see the last persisted version (`published`).

Invariant: a write is whole or absent in every view (store, index, watchers, idempotency
record, and what the owner derives from it, such as liveness), whatever its caller does. A
store's transaction, once begun, commits even if the coroutine awaiting it is cancelled (a gRPC
deadline, a client that hung up); the feed, not the caller, applies it. `write()` runs each
critical section as a task of its own, which takes the lock itself, and the caller awaits it
through `asyncio.shield`, so a later write of the kind queues behind it; `settle()` waits for
writes whose callers are gone (the server calls it before it closes the store). Methods named
`*_locked` are critical sections: call them only inside `write()`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any, Generic, TypeVar

from controller.errors import (
    ConflictError,
    FailedPreconditionError,
    FencedError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from controller.registry import paging
from controller.registry.events import Event, EventHub, EventType
from controller.registry.feed import ChangeFeed
from controller.registry.filtering import Normalizer, parse_filter
from controller.registry.index import Index, T, Term
from controller.store.base import Change, Fence, RequestKey, RequestRecord, Table

R = TypeVar("R")
PARSED_FILTERS = 256


class Collection(Generic[T]):
    def __init__(
        self,
        kind: str,
        table: Table[T],
        terms_of: Callable[[T], Iterable[Term]],
        filter_fields: Mapping[str, Normalizer | None],
        feed: ChangeFeed,
        on_index_change: Callable[[T | None, T | None], None] | None = None,
    ) -> None:
        self.kind = kind
        self.feed = feed
        feed.follow(kind, self)
        self.table: Table[T] = table
        self.index: Index[T] = Index(terms_of, on_index_change)
        self.lock = asyncio.Lock()
        self.events: EventHub[T] = EventHub()
        self.revision = 0  # every change of the log up to here is applied to the index
        self._filter_fields = filter_fields
        # Filter text -> its terms: a client lists with the same few filters again and again.
        self._parsed_filters: dict[str, Sequence[Term]] = {}
        self._staged: dict[str, T] = {}  # id -> its last persisted state
        self._writing: dict[str, T] = {}  # the same, for the staged changes being written now
        self._written: dict[str, T] = {}  # id -> the content being written now
        # Called with the event of each change applied from the log, after the index has it
        # (what the owner derives: liveness, the scheduler's wake-up, assignments).
        self.on_applied: list[Callable[[Event[T]], None]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()  # writes, some perhaps without a caller

    async def load(self) -> None:
        """Fills the index from the store; the feed applies what changes after (call the feed's
        `start_at` with the revision read before this).

        The feed is shared by every view of the process, and the views load one after another:
        while an earlier one loaded, the feed may already have handed this one changes of its
        kind. The store's state read now is at least as new as those, so it replaces them."""
        resources = await self.table.list_all()
        if len(self.index) == 0:
            self.index.load(resources)  # one pass, the usual start
            return
        for resource in resources:
            self.index.put(resource)

    def get(self, resource_id: str, field: str) -> T:
        """The resource as last persisted (see `published`)."""
        return self.published(self.latest(resource_id, field))

    def latest(self, resource_id: str, field: str) -> T:
        """The resource with its staged changes: what changes must be derived from."""
        check_id(resource_id, field)
        resource = self.index.get(resource_id)
        if resource is None:
            raise NotFoundError(self.kind, resource_id)
        return resource

    def published(self, resource: T) -> T:
        """What readers see: the last persisted version, so that content and etag always go
        together (a staged change keeps the old revision until it is persisted, moments later)."""
        rid = resource.id
        return self._staged.get(rid) or self._writing.get(rid) or resource

    def list(self, filter_text: str, page_size: int, page_token: str) -> paging.Page[T]:
        terms = self._terms_of_filter(filter_text)
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, filter_text)
        items = [self.published(r) for r in islice(self.index.query(terms, after), size + 1)]
        token = ""
        if len(items) > size:
            items = items[:size]
            token = paging.encode_token(items[-1].id, filter_text)
        return paging.Page(items, token)

    def _terms_of_filter(self, filter_text: str) -> Sequence[Term]:
        """The parsed terms of `filter_text` (not to be changed by the caller), parsed once while
        the last `PARSED_FILTERS` distinct filters are kept. Raises as `parse_filter` does."""
        terms = self._parsed_filters.get(filter_text)
        if terms is None:
            terms = parse_filter(filter_text, self._filter_fields)
            if len(self._parsed_filters) >= PARSED_FILTERS:
                self._parsed_filters.clear()  # many distinct filters: no point in keeping old ones
            self._parsed_filters[filter_text] = terms
        return terms

    async def write(self, section: Callable[[], Awaitable[R]], *, exclusive: bool = True) -> R:
        """Runs `section` whole, under the lock unless not `exclusive`, however the caller ends
        (see the module docstring). Raises what `section` raises."""
        # If the caller is cancelled, shield marks the task's outcome as retrieved.
        return await asyncio.shield(self.start_write(section, exclusive=exclusive))

    def start_write(
        self, section: Callable[[], Awaitable[R]], *, exclusive: bool = True
    ) -> asyncio.Task[R]:
        """`write` without a caller: the task runs `section` whole (`settle` waits for it);
        whoever awaits it must shield it, and a section nobody awaits must not raise."""

        async def run() -> R:
            if not exclusive:
                return await section()
            async with self.lock:
                return await section()

        task = asyncio.create_task(run())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def settle(self) -> None:
        """Returns once every write begun so far has finished, whether or not its caller waits."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def create(
        self,
        build: Callable[[], T],
        request: RequestKey | None,
        check: Callable[[], Awaitable[None]],
    ) -> T:
        return await self.write(lambda: self.create_locked(build, request, check))

    async def create_locked(
        self,
        build: Callable[[], T],
        request: RequestKey | None,
        check: Callable[[], Awaitable[None]],
    ) -> T:
        """Creates `build()` after `check()` passes, unless `request` already created something:
        then returns what it created (or refuses a key reused for a different request)."""
        if request is not None:
            earlier = await self.table.find_request(request.request_id)
            if earlier is not None:
                await self.feed.caught_up()  # it may come from another replica, moments ago
                return self.replay(earlier, request)
        await check()
        created = await self.table.create(build(), request)
        await self.feed.caught_up(created.revision)
        return self.index.get(created.id) or created

    def stage(self, resource: T) -> None:
        """Puts a changed resource in the index now; `persist()` stores it later. The resource
        keeps the revision it was derived from, which the store checks when persisting."""
        previous = self.index.get(resource.id)
        if previous is not None:
            persisted = self._writing.get(resource.id, previous)
            self._staged.setdefault(resource.id, persisted)
        self.index.put(resource)

    async def persist(
        self, fence: Fence | None = None, which: Callable[[str], bool] | None = None
    ) -> int:
        """`persist_locked` as a write of its own; `which` picks the staged ids to write (the
        others stay staged)."""
        if not self._staged:
            return 0  # the common case (every tick of the loops): no task, no lock
        return await self.write(lambda: self.persist_locked(fence=fence, which=which))

    async def persist_locked(
        self,
        must_write: str = "",
        fence: Fence | None = None,
        which: Callable[[str], bool] | None = None,
    ) -> int:
        """Stores every staged resource in one transaction; returns how many were written.
        A resource changed in memory again while it was being written stays staged. A resource
        changed elsewhere since it was read (another replica) is not written: the feed brings
        the other change; if it is `must_write` (a user's change), raises ConflictError. With
        `fence` (a leader's write), a lease no longer held writes nothing and drops every
        staged change (FencedError): what a deposed leader derived must not be written later."""
        if not self._staged:
            return 0
        if which is None:
            staged, self._staged = self._staged, {}
        else:
            staged = {k: v for k, v in self._staged.items() if which(k)}
            self._staged = {k: v for k, v in self._staged.items() if k not in staged}
        if not staged:
            return 0
        self._writing = staged
        before = [r for r in map(self.index.get, staged) if r is not None]
        self._written = {r.id: r for r in before}
        try:
            written = await self.table.update_many(before, fence)
            await self.feed.caught_up(max((w.revision for w in written if w), default=0))
        except FencedError:
            for resource_id, base in staged.items():  # this batch only: a leader's
                if resource_id not in self._staged:  # (not staged again meanwhile)
                    self.index.put(base)
            raise
        except BaseException:
            self._staged = staged | self._staged  # retried on the next call
            raise
        finally:
            self._writing, self._written = {}, {}
        refused = False
        for old, new in zip(before, written, strict=True):
            if new is not None:
                continue
            refused |= old.id == must_write
            if self.index.get(old.id) is old:
                # Changed elsewhere since it was read (the feed brings that change): back to
                # the last persisted version until it does.
                self.index.put(staged[old.id])
        if refused:
            await self.feed.caught_up()
            current = self.index.get(must_write)
            raise ConflictError(
                f"{self.kind} {must_write!r} changed since it was read; read it again",
                metadata={"current_etag": etag_of(current.revision)} if current else {},
            )
        return sum(1 for w in written if w is not None)

    async def delete(self, resource_id: str, etag: str, field: str) -> None:
        check_id(resource_id, field)
        expect = parse_etag(etag)
        await self.write(lambda: self.delete_locked(resource_id, expect))

    async def delete_locked(
        self, resource_id: str, expect: int | None, fence: Fence | None = None
    ) -> None:
        """Deletes the resource (at revision `expect`, if given; while `fence` holds, if
        given); its id is already checked."""
        revision = await self.table.delete(resource_id, expect, fence)
        await self.feed.caught_up(revision)

    def apply(self, change: Change) -> None:
        """Applies one change of the log (the feed calls this, in revision order)."""
        resource_id = change.resource_id
        current = self.index.get(resource_id)
        base = self.published(current) if current is not None else None
        if change.deleted:
            if current is None or base is None:
                return
            self.index.remove(resource_id)
            self._staged.pop(resource_id, None)
            last: T = change.resource if change.resource is not None else base  # type: ignore[assignment]
            self._notify(Event(EventType.DELETED, last, change.revision))
            return
        new: T = change.resource  # type: ignore[assignment]
        if new is None:  # an entry from before the log kept documents: read the row
            return
        if base is not None and base.revision >= change.revision:
            return  # already applied (the index was loaded after this change)
        written = self._written.pop(resource_id, None)
        ours = written is not None and replace(written, revision=new.revision) == new
        if ours and current is not None and current is not written:
            # Our own persist, and the owner changed it again meanwhile: the newer content stays,
            # staged on top of what was just persisted.
            self._staged[resource_id] = new
            self.index.put(replace(current, revision=new.revision))
        else:
            # Our write as written, or another replica's (which wins over a local staged change:
            # the store would refuse that one, based on an older revision).
            self._staged.pop(resource_id, None)
            self.index.put(new)
        kind = EventType.ADDED if current is None else EventType.CHANGED
        self._notify(Event(kind, new, change.revision, base))

    def reached(self, revision: int) -> None:
        self.revision = revision

    def _notify(self, event: Event[T]) -> None:
        self.revision = max(self.revision, event.revision)
        self.events.publish(event)
        for listener in self.on_applied:
            listener(event)

    def replay(self, earlier: RequestRecord, request: RequestKey) -> T:
        """What `earlier` created, for a request that reuses its request id (the feed must have
        caught up with the store first); refuses a reuse for a different request."""
        fingerprint, resource_id = earlier.fingerprint, earlier.resource_id
        if fingerprint != request.fingerprint:
            raise InvalidArgumentError(
                [
                    FieldViolation(
                        "request_id", f"was already used for a different {self.kind} request"
                    )
                ],
                reason="REQUEST_ID_REUSED",
            )
        resource = self.index.get(resource_id)
        if resource is None:
            raise FailedPreconditionError(
                f"request_id {request.request_id!r} created {self.kind} {resource_id!r},"
                " which has since been deleted",
                reason="REQUEST_ID_RESOURCE_DELETED",
                metadata={f"{self.kind}_id": resource_id},
            )
        return resource


_ETAG = re.compile(r"[0-9]{1,19}")


# What str(uuid.UUID(x)) == x accepts, at a tenth of its cost (every read checks an id).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_id(resource_id: str, field: str) -> None:
    """Ids are canonical lowercase UUIDs; anything else is INVALID_ARGUMENT on `field`."""
    if not resource_id:
        raise InvalidArgumentError.single(field, "is required")
    if _CANONICAL_UUID.fullmatch(resource_id) is None:
        raise InvalidArgumentError.single(
            field, "must be a UUID like 123e4567-e89b-12d3-a456-426614174000"
        )


def etag_of(revision: int) -> str:
    return str(revision)


def parse_etag(etag: str) -> int | None:
    """The revision an etag names; None for no etag."""
    if not etag:
        return None
    if not _ETAG.fullmatch(etag):
        raise InvalidArgumentError.single("etag", "not an etag this server issued")
    return int(etag)
