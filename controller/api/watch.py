"""The watch loop shared by WatchNodes and WatchDeployments: the current state (or the changes
since a revision), then live changes.

Consistency: the subscription is taken before the state is read, and the state is read without
yielding to the event loop, so every change is either in the state sent or queued after it;
queued events at or below the revision already sent are skipped. A watcher whose buffer
overflows gets RESET and the current state again, on the same stream, so a slow watcher costs
bounded memory and never slows the controller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message
from grpc import aio

from controller.errors import InvalidArgumentError, UnavailableError
from controller.registry.events import Closed, Event, EventHub, Overflowed
from controller.store.base import ResourceKind, Store

Context = aio.ServicerContext[Any, Any]
MAX_REPLAY = 10_000  # beyond this many changes, sending the current state is cheaper
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
R_contra = TypeVar("R_contra", contravariant=True)


class Source(Protocol[R_co]):
    """What a registry offers to watchers."""

    @property
    def events(self) -> EventHub[Any]: ...

    @property
    def revision(self) -> int: ...

    def snapshot(self) -> Sequence[R_co]: ...

    def snapshot_of(self, resource_id: str) -> R_co | None: ...


class Encoder(Protocol[R_contra]):
    """Builds the kind's watch response messages."""

    def event(self, event: Event[Any]) -> Message: ...

    def added(self, resource: R_contra) -> Message: ...

    def changed(self, resource: R_contra, revision: int) -> Message: ...

    def deleted(self, resource_id: str, revision: int) -> Message: ...

    def synced(self, revision: int) -> Message: ...

    def reset(self, revision: int) -> Message: ...


class Watch(Generic[R]):
    def __init__(
        self,
        kind: ResourceKind,
        source: Source[R],
        encoder: Encoder[R],
        store: Store,
        buffer: int = 1024,
    ) -> None:
        self._kind = kind
        self._source = source
        self._encoder = encoder
        self._store = store
        self._buffer = buffer

    async def serve(self, start_revision: int, context: Context) -> None:
        if start_revision < 0:
            raise InvalidArgumentError.single("start_revision", "must not be negative")
        subscription = self._source.events.subscribe(self._buffer)
        try:
            if start_revision:
                sent = await self._replay(start_revision, context)
            else:
                sent = await self._send_state(context, reset=False)
            while True:
                try:
                    event = await subscription.next()
                except Overflowed:
                    sent = await self._send_state(context, reset=True)
                    continue
                except Closed:
                    raise UnavailableError(
                        f"the controller is shutting down; watch again from revision {sent}"
                    ) from None
                if event.revision > sent:
                    await context.write(self._encoder.event(event))
        finally:
            subscription.close()

    async def _send_state(self, context: Context, *, reset: bool) -> int:
        resources, revision = self._source.snapshot(), self._source.revision  # no await between
        if reset:
            await context.write(self._encoder.reset(revision))
        for resource in resources:
            await context.write(self._encoder.added(resource))
        await context.write(self._encoder.synced(revision))
        return revision

    async def _replay(self, start: int, context: Context) -> int:
        current = await self._store.revision()
        if start > current:
            raise InvalidArgumentError.single(
                "start_revision", f"is ahead of the store (at revision {current})"
            )
        changes = await self._store.changes_since(start, MAX_REPLAY + 1)
        if len(changes) > MAX_REPLAY:
            return await self._send_state(context, reset=True)
        latest: dict[str, tuple[int, bool]] = {}
        for change in changes:
            if change.kind == self._kind:
                latest.pop(change.resource_id, None)  # keep the order of last changes
                latest[change.resource_id] = (change.revision, change.deleted)
        sent = max((c.revision for c in changes), default=start)
        for resource_id, (revision, deleted) in latest.items():
            resource = self._source.snapshot_of(resource_id)
            if deleted and resource is None:
                await context.write(self._encoder.deleted(resource_id, revision))
            elif resource is not None:
                await context.write(self._encoder.changed(resource, revision))
        await context.write(self._encoder.synced(sent))
        return sent
