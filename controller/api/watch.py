"""The watch loop shared by WatchNodes and WatchDeployments: the current state (or the changes
since a revision), then live changes.

Consistency: the subscription is taken, then the registry's revision read, with no await
between: every change at or below that revision is in the registry's state, every later one is
(or will be) queued to the subscription. A replay sends, for each resource changed in between,
its current state at its last change (a change that a later one supersedes is skipped), then
SYNCED at that revision; queued events at or below the revision already sent are skipped. A
watcher whose buffer overflows gets RESET and the current state again, on the same stream, so a
slow watcher costs bounded memory and never slows the controller.

Cost: a replay reads the change log a page at a time (`ChangeLog.pages`) on the store's readers,
beside the writer, and asks for the next page only once the last one is written to the client.
A client that never reads blocks its replay on flow control after one page: it holds at most one
page, its buffer of events and what gRPC has buffered, and uses no CPU while it waits.

Turns: bulk sends (a state, a page of a replay) take turns, one at a time, first come first
served. A write costs the event loop ~100 us (gRPC serializes and sends each message from the
loop's thread, one syscall each) and every write is one trip through the loop: with a hundred
watchers sending at once, every other call waits behind their writes at each of its own trips
(and its store threads wait for the GIL). One sender at a time keeps at most one bulk write ahead
of a unary call's next step, and the loop idle between writes while the sender waits for gRPC;
it sends fewer messages per second than four, but RegisterNode's p50 under 100 replaying
watchers fell ~3x (profiled: issue 9, item 3 in docs/benchmarks.md). A write that blocks longer
than `STALL_S` (its client is not reading) gives its turn up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from google.protobuf.message import Message
from grpc import aio

from controller.errors import FieldViolation, InvalidArgumentError, UnavailableError
from controller.registry.changes import ChangeLog
from controller.registry.events import Closed, Event, EventHub, Overflowed
from controller.store.base import ResourceKind

Context = aio.ServicerContext[Any, Any]
MAX_REPLAY = 10_000  # beyond this many revisions behind, sending the current state is cheaper
SEND_TURNS = 1  # bulk sends in progress at once (per kind); see "Turns" above
STATE_CHUNK = 500  # resources of a state sent in one turn
STALL_S = 0.1  # a write blocked this long gives its turn up


class Revisioned(Protocol):
    @property
    def revision(self) -> int:
        """The revision of the resource's last change."""
        ...


R = TypeVar("R", bound=Revisioned)
R_co = TypeVar("R_co", bound=Revisioned, covariant=True)
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

    def deleted(self, resource_id: str, revision: int, last: R_contra | None) -> Message: ...

    def synced(self, revision: int) -> Message: ...

    def reset(self, revision: int) -> Message: ...


class Turns:
    """At most `width` bulk sends at once, first come first served (see the module docstring)."""

    def __init__(self, width: int = SEND_TURNS) -> None:
        self._slots = asyncio.Semaphore(width)

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[Turn]:
        await self._slots.acquire()
        turn = Turn(self._slots)
        try:
            yield turn
        finally:
            turn.give_up()


class Turn:
    """One bulk send's turn. A watchdog (one timer per turn, not per write) gives the turn up
    when no write has completed for `STALL_S`."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots: asyncio.Semaphore | None = slots
        self._written = self._seen = 0
        self._watchdog = asyncio.get_running_loop().call_later(STALL_S, self._check)

    def _check(self) -> None:
        if self._written == self._seen:
            self.give_up()
        else:
            self._seen = self._written
            self._watchdog = asyncio.get_running_loop().call_later(STALL_S, self._check)

    def give_up(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            self._watchdog.cancel()
            slots.release()

    async def write(self, context: Context, message: Message) -> None:
        await context.write(message)
        self._written += 1


class Watch(Generic[R]):
    def __init__(
        self,
        kind: ResourceKind,
        source: Source[R],
        encoder: Encoder[R],
        changes: ChangeLog,
        buffer: int = 1024,
        turns: Turns | None = None,
    ) -> None:
        self._kind = kind
        self._source = source
        self._encoder = encoder
        self._changes = changes
        self._buffer = buffer
        self._turns = turns or Turns()

    async def serve(self, start_revision: int, context: Context) -> None:
        if start_revision < 0:
            raise InvalidArgumentError.single("start_revision", "must not be negative")
        subscription = self._source.events.subscribe(self._buffer)
        applied = self._source.revision  # no await since subscribing
        try:
            if start_revision:
                sent = await self._replay(start_revision, applied, context)
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
                        f"the controller is shutting down; watch again from revision {sent}",
                        reason="SHUTTING_DOWN",
                        metadata={"resume_revision": str(sent)},
                    ) from None
                if event.revision > sent:
                    await context.write(self._encoder.event(event))
                    sent = event.revision  # events come in revision order (the change feed)
        finally:
            subscription.close()

    async def _send_state(self, context: Context, *, reset: bool) -> int:
        resources, revision = self._source.snapshot(), self._source.revision  # no await between
        if reset:
            await context.write(self._encoder.reset(revision))
        for start in range(0, len(resources), STATE_CHUNK):
            async with self._turns.take() as turn:
                for resource in resources[start : start + STATE_CHUNK]:
                    await turn.write(context, self._encoder.added(resource))
        await context.write(self._encoder.synced(revision))
        return revision

    async def _replay(self, start: int, applied: int, context: Context) -> int:
        """Sends what changed in (start, applied], then SYNCED; returns the revision sent."""
        current = await self._changes.revision()
        if start > current:
            raise InvalidArgumentError(
                [
                    FieldViolation(
                        "start_revision", f"is ahead of the store (at revision {current})"
                    )
                ],
                reason="REVISION_AHEAD",
            )
        if applied - start > MAX_REPLAY:
            return await self._send_state(context, reset=True)
        async for page in self._changes.pages(start, applied):
            async with self._turns.take() as turn:
                for change in page:
                    if change.kind != self._kind:
                        continue
                    resource = self._source.snapshot_of(change.resource_id)
                    if change.deleted:
                        if resource is None:
                            # The last state, as a live DELETED event carries it (the log
                            # keeps it; entries older than that carry only the id).
                            last = cast("R | None", change.resource)
                            message = self._encoder.deleted(
                                change.resource_id, change.revision, last
                            )
                            await turn.write(context, message)
                    elif resource is not None and resource.revision <= change.revision:
                        # Its last change up to `applied`; a later one is sent when its turn
                        # comes (or as a live event, if it came after `applied`).
                        message = self._encoder.changed(resource, change.revision)
                        await turn.write(context, message)
        sent = max(start, applied)
        await context.write(self._encoder.synced(sent))
        return sent
