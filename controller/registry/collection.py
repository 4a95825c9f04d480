"""What nodes and deployments share: a store table mirrored by an in-memory index, idempotent
creates (AIP-155), etag-checked deletes (AIP-154) and filtered, paginated listing.

Invariant: the index holds what the store holds, as of the last write this process made, except
for changes the owner made in memory on purpose and persists later (`stage` + `persist`: node
status transitions, coalesced). Writes go to the store first and reach the index and the
watchers only once durable; the lock serializes writes of one kind, so neither sees them out of
order.

Invariant: a write is whole or absent in every view (store, index, watchers, idempotency
record, and what the owner derives from it, such as liveness), whatever its caller does. A
store's transaction, once begun, commits even if the coroutine awaiting it is cancelled (a gRPC
deadline, a client that hung up), so the steps after it must not depend on that coroutine:
`write()` runs each critical section (the store write and every in-memory update that follows
from it) as a task of its own, which takes the lock itself, and the caller awaits it through
`asyncio.shield`. A cancelled caller stops waiting; the write finishes. A retry, or any later
write of the kind, queues on the lock behind it. `settle()` waits for writes whose callers are
gone (the server calls it before it closes the store). Methods named `*_locked` are critical
sections: call them only inside `write()`."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from itertools import islice
from typing import Any, Generic, TypeVar

from controller.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from controller.registry import paging
from controller.registry.events import Event, EventHub, EventType
from controller.registry.filtering import Normalizer, parse_filter
from controller.registry.index import Index, T, Term
from controller.store.base import RequestKey, Table

R = TypeVar("R")


class Collection(Generic[T]):
    def __init__(
        self,
        kind: str,
        table: Table[T],
        terms_of: Callable[[T], Iterable[Term]],
        filter_fields: Mapping[str, Normalizer | None],
    ) -> None:
        self.kind = kind
        self.table: Table[T] = table
        self.index: Index[T] = Index(terms_of)
        self.lock = asyncio.Lock()
        self.events: EventHub[T] = EventHub()
        self.revision = 0  # of the latest change applied to the index
        self._filter_fields = filter_fields
        self._staged: dict[str, T] = {}  # id -> its last persisted state
        self._writing: dict[str, T] = {}  # the same, for the staged changes being written now
        self._in_flight: set[asyncio.Task[Any]] = set()  # writes, some perhaps without a caller

    async def load(self, revision: int) -> None:
        """Fills the index from the store, which is at `revision`."""
        for resource in await self.table.list_all():
            self.index.put(resource)
        self.revision = revision

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
        terms = parse_filter(filter_text, self._filter_fields)
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, filter_text)
        items = [self.published(r) for r in islice(self.index.query(terms, after), size + 1)]
        token = ""
        if len(items) > size:
            items = items[:size]
            token = paging.encode_token(items[-1].id, filter_text)
        return paging.Page(items, token)

    async def write(self, section: Callable[[], Awaitable[R]], *, exclusive: bool = True) -> R:
        """Runs `section` whole, under the lock unless not `exclusive`, however the caller ends
        (see the module docstring). Raises what `section` raises."""

        async def run() -> R:
            if not exclusive:
                return await section()
            async with self.lock:
                return await section()

        task = asyncio.create_task(run())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        # If the caller is cancelled, shield marks the task's outcome as retrieved.
        return await asyncio.shield(task)

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
                return self._replay(earlier.fingerprint, earlier.resource_id, request)
        await check()
        created = await self.table.create(build(), request)
        self.index.put(created)
        self._published(Event(EventType.ADDED, created, created.revision))
        return created

    def stage(self, resource: T) -> None:
        """Puts a changed resource in the index now; `persist()` stores it later. The resource
        keeps the revision it was derived from, which the store checks when persisting."""
        previous = self.index.get(resource.id)
        if previous is not None:
            persisted = self._writing.get(resource.id, previous)
            self._staged.setdefault(resource.id, persisted)
        self.index.put(resource)

    async def persist(self) -> int:
        if not self._staged:
            return 0  # the common case (every tick of the loops): no task, no lock
        return await self.write(self.persist_locked)

    async def persist_locked(self) -> int:
        """Stores every staged resource in one transaction; returns how many were written.
        A resource changed in memory again while it was being written stays staged."""
        if not self._staged:
            return 0
        staged, self._staged = self._staged, {}
        self._writing = staged
        before = [r for r in map(self.index.get, staged) if r is not None]
        try:
            written = await self.table.update_many(before)
        except BaseException:
            self._staged = staged | self._staged  # retried on the next call
            raise
        finally:
            self._writing = {}
        for old, new in zip(before, written, strict=True):
            current = self.index.get(old.id)
            if new is None or current is None:
                continue  # deleted meanwhile
            if current is old:
                self.index.put(new)
            else:  # changed again while we wrote: keep the newer state, staged
                self._staged[old.id] = new
                self.index.put(replace(current, revision=new.revision))
            self._published(Event(EventType.CHANGED, new, new.revision, staged[old.id]))
        return len(before)

    async def delete(self, resource_id: str, etag: str, field: str) -> None:
        check_id(resource_id, field)
        expect = parse_etag(etag)
        await self.write(lambda: self.delete_locked(resource_id, expect))

    async def delete_locked(self, resource_id: str, expect: int | None) -> None:
        """Deletes the resource (at revision `expect`, if given); its id is already checked."""
        revision = await self.table.delete(resource_id, expect)
        last = self.index.get(resource_id)
        self.index.remove(resource_id)
        self._staged.pop(resource_id, None)
        if last is not None:
            self._published(Event(EventType.DELETED, last, revision))

    def _published(self, event: Event[T]) -> None:
        self.revision = max(self.revision, event.revision)
        self.events.publish(event)

    def _replay(self, fingerprint: str, resource_id: str, request: RequestKey) -> T:
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


def check_id(resource_id: str, field: str) -> None:
    """Ids are canonical lowercase UUIDs; anything else is INVALID_ARGUMENT on `field`."""
    if not resource_id:
        raise InvalidArgumentError.single(field, "is required")
    try:
        ok = str(uuid.UUID(resource_id)) == resource_id
    except ValueError:
        ok = False
    if not ok:
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
