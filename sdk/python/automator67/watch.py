"""Watch iterators that resume: a broken stream (UNAVAILABLE, or an end the caller did not ask
for) is opened again from the last revision seen, after a jittered backoff, so the caller sees
every change once and in order, as if the stream had never broken.

The revision to resume from is that of the last SYNCED event or of the last change after it;
never that of an ADDED event of a state being sent (they are ordered by resource, not by
revision). A stream that breaks while a state is being sent (the first one, or the one after a
RESET) is opened again from revision 0; if part of that state was already handed out, a RESET
made by this library (revision 0) comes first, so the caller forgets it as it would on the
controller's own RESET. A resume that the controller refuses with REVISION_AHEAD (its history
was reset) starts over the same way. Any other error is raised, typed (`errors.py`)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc

from automator67.errors import ApiError, UnavailableError, from_rpc_error
from automator67.retry import Random, Retry

log = logging.getLogger("automator67")


class Event(Protocol):
    @property
    def type(self) -> int: ...

    @property
    def revision(self) -> int: ...


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class EventKinds:
    """The event type numbers of one watch (they differ between nodes and deployments)."""

    added: int
    synced: int
    reset: int


class WatchCursor:
    """Where a watch stands: pure bookkeeping of the events handed out (see the module)."""

    def __init__(self, start_revision: int, kinds: EventKinds) -> None:
        self.revision = start_revision
        self._kinds = kinds
        self._in_state = start_revision == 0
        self._state_handed_out = False

    def seen(self, kind: int, revision: int) -> None:
        if kind == self._kinds.reset:
            self._in_state = self._state_handed_out = True
        elif kind == self._kinds.synced:
            self.revision = max(self.revision, revision)
            self._in_state = self._state_handed_out = False
        elif kind == self._kinds.added and self._in_state:
            self._state_handed_out = True
        else:
            self.revision = max(self.revision, revision)

    def resume(self) -> tuple[int, bool]:
        """The `start_revision` of the next stream, and whether a RESET must come first."""
        if self._in_state:
            reset, self._state_handed_out = self._state_handed_out, False
            return 0, reset
        return self.revision, False

    def start_over(self) -> None:
        """Forget the revision: the next stream sends the current state, after a RESET."""
        self.revision = 0
        self._in_state = self._state_handed_out = True


class _SyncCall(Protocol[E]):  # type: ignore[misc]  # E is used covariantly
    def __next__(self) -> E: ...

    def cancel(self) -> bool: ...


class _AsyncCall(Protocol[E]):  # type: ignore[misc]
    def __aiter__(self) -> AsyncIterator[E]: ...

    def cancel(self) -> bool: ...


class _Backoff:
    """The delays between consecutive failed streams; `reset()` once an event arrives."""

    def __init__(self, policy: Retry, rand: Random) -> None:
        self.policy = policy
        self._rand = rand
        self._failures = 0
        self._since = 0.0

    def reset(self) -> None:
        self._failures = 0

    def next_delay(self, error: ApiError) -> float:
        """The delay before the next stream; raises `error` once the policy's attempts or time
        are spent."""
        policy, now = self.policy, time.monotonic()
        if self._failures == 0:
            self._since = now
        attempts_spent = (
            policy.max_attempts is not None and self._failures + 1 >= policy.max_attempts
        )
        delay = policy.delay(self._failures, self._rand)
        time_spent = policy.deadline_s is not None and now + delay - self._since > policy.deadline_s
        if attempts_spent or time_spent:
            raise error
        self._failures += 1
        return delay


def _starts_over(error: ApiError) -> bool:
    return error.reason == "REVISION_AHEAD"


class Watch(Generic[E]):
    """A resuming watch (sync): iterate it for events; `close()` (from any thread) ends the
    iteration. Use as a context manager to close it on exit. `revision` is the revision it
    would resume from."""

    def __init__(
        self,
        start: Callable[[int], _SyncCall[E]],
        start_revision: int,
        kinds: EventKinds,
        make_reset: Callable[[], E],
        resume: Retry,
        rand: Random = random.random,
    ) -> None:
        self._start = start
        self._cursor = WatchCursor(start_revision, kinds)
        self._make_reset = make_reset
        self._backoff = _Backoff(resume, rand)
        self._call: _SyncCall[E] | None = None
        self._cancelled: _SyncCall[E] | None = None
        self._closed = threading.Event()
        self._pending: list[E] = []

    @property
    def revision(self) -> int:
        return self._cursor.revision

    def __iter__(self) -> Iterator[E]:
        return self

    def __next__(self) -> E:
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._closed.is_set():
                # A close() from another thread while the call was being opened found no call
                # to cancel: cancel it here, so that no stream outlives the watch.
                self._cancel_call()
                raise StopIteration
            if self._call is None:
                self._call = self._open()
                continue  # a RESET of this library's may come first
            try:
                event = next(self._call)
            except StopIteration:
                if self._closed.is_set():
                    raise StopIteration from None
                why: ApiError = UnavailableError("the watch stream ended")
            except grpc.RpcError as rpc_error:
                if self._closed.is_set():
                    raise StopIteration from None
                error = from_rpc_error(rpc_error)
                if _starts_over(error):
                    self._call = None
                    self._cursor.start_over()
                    continue
                if error.code not in self._backoff.policy.codes:
                    raise error from rpc_error
                why = error
            else:
                self._backoff.reset()
                self._cursor.seen(event.type, event.revision)
                return event
            self._call = None
            delay = self._next_delay(why)
            if self._closed.wait(delay):
                raise StopIteration

    def _open(self) -> _SyncCall[E]:
        start_revision, reset = self._cursor.resume()
        if reset:
            self._pending.append(self._make_reset())
        return self._start(start_revision)

    def _next_delay(self, why: ApiError) -> float:
        delay = self._backoff.next_delay(why)
        fields = {"revision": self._cursor.revision, "delay_s": round(delay, 3), "why": str(why)}
        log.warning("watch broken; resuming", extra={"fields": fields})
        return delay

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._cancel_call()

    cancel = close

    def _cancel_call(self) -> None:
        call = self._call
        if call is not None and call is not self._cancelled:
            self._cancelled = call
            call.cancel()

    def __enter__(self) -> Watch[E]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncWatch(Generic[E]):
    """A resuming watch (asyncio): `async for` it, or `await read()`; `cancel()` ends the
    iteration (a read waiting meanwhile ends with StopAsyncIteration). Use as `async with` to
    cancel it on exit."""

    def __init__(
        self,
        start: Callable[[int], _AsyncCall[E]],
        start_revision: int,
        kinds: EventKinds,
        make_reset: Callable[[], E],
        resume: Retry,
        rand: Random = random.random,
    ) -> None:
        self._start = start
        self._cursor = WatchCursor(start_revision, kinds)
        self._make_reset = make_reset
        self._backoff = _Backoff(resume, rand)
        self._call: _AsyncCall[E] | None = None
        self._events: AsyncIterator[E] | None = None
        self._closed = asyncio.Event()
        self._pending: list[E] = []

    @property
    def revision(self) -> int:
        return self._cursor.revision

    def __aiter__(self) -> AsyncWatch[E]:
        return self

    async def read(self) -> E:
        """The next event. Raises StopAsyncIteration once cancelled, ApiError on an error that
        does not resume."""
        return await self.__anext__()

    async def __anext__(self) -> E:
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._closed.is_set():
                raise StopAsyncIteration
            if self._events is None:
                self._events = self._open()
                continue  # a RESET of this library's may come first
            try:
                event = await anext(self._events)
            except StopAsyncIteration:
                why: ApiError = UnavailableError("the watch stream ended")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed.is_set() and (task is None or not task.cancelling()):
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as rpc_error:
                if self._closed.is_set():
                    raise StopAsyncIteration from None
                error = from_rpc_error(rpc_error)
                if _starts_over(error):
                    self._call = self._events = None
                    self._cursor.start_over()
                    continue
                if error.code not in self._backoff.policy.codes:
                    raise error from rpc_error
                why = error
            else:
                self._backoff.reset()
                self._cursor.seen(event.type, event.revision)
                return event
            self._call = self._events = None
            delay = self._next_delay(why)
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
            except TimeoutError:
                continue
            raise StopAsyncIteration

    def _open(self) -> AsyncIterator[E]:
        start_revision, reset = self._cursor.resume()
        if reset:
            self._pending.append(self._make_reset())
        self._call = self._start(start_revision)
        return self._call.__aiter__()

    def _next_delay(self, why: ApiError) -> float:
        delay = self._backoff.next_delay(why)
        fields = {"revision": self._cursor.revision, "delay_s": round(delay, 3), "why": str(why)}
        log.warning("watch broken; resuming", extra={"fields": fields})
        return delay

    def cancel(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncWatch[E]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()
