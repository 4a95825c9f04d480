"""Group commit: creates that arrive while the store is busy share one durable transaction.

A create queues what it would store, and the first to find no write queued starts one
(`Collection.start_write`: it runs under the collection's lock, whole, whatever its callers
do, and `settle()` waits for it). When that write holds the lock it takes everything queued so
far (at most `max_batch`), stores it with `Table.create_many` in one transaction, hands the
change feed what it wrote (`ChangeFeed.wrote`: applied in revision order without reading the
log back when nothing lies between) and only then answers each create: a create is
acknowledged once durable and applied to the index, exactly as one written alone. Creates that
arrive meanwhile queue for the next write. So under load transactions grow (one fsync for up
to `MAX_BATCH` registrations) and at rest each create is a transaction of one, with no added
wait. (The lock is released between transactions and taken in turn, first come first served:
deletes and status writes are not starved by a long join.) The answers are given
`ANSWERS_PER_TURN` per turn of the event loop: each resumes a call, and 200 of them at once
would make every other call (a GetNodeStats during a join) wait behind them all. 64 per turn,
not fewer: fewer turns per batch, under the lock, is what lets the next transaction start
sooner (10 per turn starved a pipeline that admission bounds, `controller/admission.py`).

A transaction that fails fails every create in it, with UnavailableError (retryable): the
store wrote none of it. (Should only catching the feed up fail after the commit, the creates
are durable though refused, as a create written alone would be: a retry with the same request
id replays.) An item whose request id was used before is answered alone, as
`Collection.create_locked` answers it: what that request created, or a refusal.

For creates with no check against the current state (nodes): a check (a deployment's unique
name) would have to hold for the whole batch at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic

from controller.errors import ControllerError, UnavailableError
from controller.registry.collection import Collection
from controller.registry.index import T
from controller.store.base import Change, RequestKey, RequestRecord

log = logging.getLogger("controller.group_commit")

MAX_BATCH = 200  # creates per transaction
# 10,000 registrations at once (join.py --register-only), before admission bounded them: 200
# answered in one turn: ~1,000/s, GetNodeStats p99 0.75-1.3 s; 10 per turn: the same rate, p99
# 110-170 ms. With admission bounding them to 64 in flight: 10 per turn cost ~100 us more CPU
# per registration than 64. (Operators' reads no longer wait behind these turns: they are
# accepted from queues of their own, api/exempt.py.)
ANSWERS_PER_TURN = 64


@dataclass(frozen=True)
class _Queued(Generic[T]):
    build: Callable[[], T]
    request: RequestKey | None
    answer: asyncio.Future[T]


class GroupCommit(Generic[T]):
    def __init__(self, collection: Collection[T], max_batch: int = MAX_BATCH) -> None:
        self._collection: Collection[T] = collection
        self._max_batch = max_batch
        self._queue: list[_Queued[T]] = []
        self._write_queued = False

    async def create(self, build: Callable[[], T], request: RequestKey | None) -> T:
        """Stores `build()` (recording `request`), in the next shared transaction; returns it
        once durable and in the index, or what `request` created before."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        self._queue.append(_Queued(build, request, answer))
        self._queue_write()
        # A caller that leaves does not take its create out of the batch (shield).
        return await asyncio.shield(answer)

    def _queue_write(self) -> None:
        if not self._write_queued:
            self._write_queued = True
            self._collection.start_write(self._commit_locked)

    async def _commit_locked(self) -> None:
        self._write_queued = False  # what queues from now on goes in the next transaction
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        if self._queue:
            self._queue_write()
        if not batch:
            return
        results = await self._write_locked(batch)
        if results is not None:
            # Still under the lock: the next transaction waits for these answers, so at most
            # ANSWERS_PER_TURN creates resume per turn of the loop (answered outside the lock,
            # the next batch's answers overlapped them: the same rate, GetNodeStats p99 0.4-0.8 s
            # instead of 80-90 ms).
            await self._answer(batch, results)

    async def _write_locked(self, batch: list[_Queued[T]]) -> list[T | RequestRecord] | None:
        """Stores the batch and catches the feed up to it; None (every create failed) if the
        store refused it."""
        collection = self._collection
        try:
            results = await collection.table.create_many([(q.build(), q.request) for q in batch])
            # The new resources, as the log holds them, go to the feed without a read back.
            await collection.feed.wrote(
                [
                    Change(r.revision, collection.kind, r.id, False, r)  # type: ignore[arg-type]
                    for r in results
                    if not isinstance(r, RequestRecord)
                ]
            )
            if any(isinstance(r, RequestRecord) for r in results):
                await collection.feed.caught_up()  # an earlier request may be another replica's
        except asyncio.CancelledError:
            _fail(batch, UnavailableError("the controller is stopping; retry"))
            raise
        except Exception as exc:
            log.warning(
                "a shared write failed; every create in it fails",
                extra={"fields": {"kind": collection.kind, "creates": len(batch)}},
                exc_info=True,
            )
            _fail(
                batch,
                UnavailableError(
                    f"the store did not write this {collection.kind} (a shared write of"
                    f" {len(batch)} failed: {type(exc).__name__}); retry"
                ),
            )
            return None
        return results

    async def _answer(self, batch: list[_Queued[T]], results: list[T | RequestRecord]) -> None:
        collection = self._collection
        for n, (queued, result) in enumerate(zip(batch, results, strict=True)):
            if n and n % ANSWERS_PER_TURN == 0:
                try:
                    await asyncio.sleep(0)  # let other calls in between the resumed creates
                except asyncio.CancelledError:  # stopping: written, but not all answered
                    _fail(batch, UnavailableError("the controller is stopping; retry"))
                    raise
            if isinstance(result, RequestRecord):
                assert queued.request is not None  # only a request id is replayed
                try:
                    queued.answer.set_result(collection.replay(result, queued.request))
                except Exception as error:  # a refusal, for this create alone
                    queued.answer.set_exception(error)
            else:
                queued.answer.set_result(collection.index.get(result.id) or result)


def _fail(batch: list[_Queued[T]], error: ControllerError) -> None:
    for queued in batch:
        if not queued.answer.done():
            queued.answer.set_exception(error)


def _retrieved(answer: asyncio.Future[T]) -> None:
    """Marks an answer's exception as seen: its caller may have left (it is shielded)."""
    if not answer.cancelled():
        answer.exception()
