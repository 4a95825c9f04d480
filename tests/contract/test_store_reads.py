"""The store contract: reads run beside writes, not in front of them (issue 9, item 3).

Watchers that resume from an old revision read the change log; a write issued meanwhile must
not wait for those reads. The check is one of order, not of time: the write is issued after a
burst of long reads, and must be done while some of them are still running. A store that runs
reads and writes on one thread (or one connection), first come first served, finishes every
read first."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.store.base import Store

from .conftest import Kind

RESOURCES = 100
ROUNDS = 50  # RESOURCES x ROUNDS changes in the log, written ROUNDS transactions
READS = 40


async def test_a_write_is_not_queued_behind_reads_of_the_change_log(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    resources = [await table.create(kind.new()) for _ in range(RESOURCES)]
    for _ in range(ROUNDS):
        written = await table.update_many([kind.changed(r) for r in resources])
        resources = [r for r in written if r is not None]
    log_size = RESOURCES * (ROUNDS + 1)

    reads = [asyncio.create_task(store.changes_since(0, log_size)) for _ in range(READS)]
    await asyncio.sleep(0)  # every read is issued (queued in the store) before the write
    try:
        created = await table.create(kind.new())
        still_reading = sum(not read.done() for read in reads)
        assert still_reading > 0, "the write waited for every read issued before it"
    finally:
        results = await asyncio.gather(*reads)
    assert all(len(result) == log_size for result in results)
    assert await table.get(created.id) == created
