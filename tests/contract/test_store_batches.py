"""The store contract: batched updates (coalesced status writes) and last-heartbeat times."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from controller.models import NodeStatus
from controller.store.base import Change, Store

from .conftest import LATER_TIME, Kind, Reopen, new_node


async def test_update_many_stores_each_resource_with_its_own_new_revision(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    first, second = await table.create(kind.new()), await table.create(kind.new())

    written = await table.update_many([kind.changed(first), kind.changed(second)])

    assert [w.revision if w else None for w in written] == [
        second.revision + 1,
        second.revision + 2,
    ]
    for resource, new in zip((first, second), written, strict=True):
        assert new is not None
        assert new == replace(kind.changed(resource), revision=new.revision)
        assert await table.get(resource.id) == new


async def test_update_many_skips_gone_and_stale_resources_and_writes_the_rest(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    gone, stale, fine = [await table.create(kind.new()) for _ in range(3)]
    await table.delete(gone.id)
    moved = await table.update(kind.changed(stale), stale.revision)

    written = await table.update_many([kind.changed(gone), kind.changed(stale), kind.changed(fine)])

    assert written[0] is None and written[1] is None and written[2] is not None
    assert await table.get(gone.id) is None
    assert await table.get(stale.id) == moved
    assert await table.get(fine.id) == written[2]


async def test_update_many_logs_one_change_per_written_resource(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    first, second = await table.create(kind.new()), await table.create(kind.new())
    start = await store.revision()

    written = await table.update_many([kind.changed(first), kind.changed(second)])

    assert await store.changes_since(start) == [
        Change(w.revision, kind.name, w.id, False, w) for w in written if w
    ]


async def test_an_empty_update_many_changes_nothing(kind: Kind[Any], store: Store) -> None:
    await kind.table(store).create(kind.new())
    start = await store.revision()
    assert await kind.table(store).update_many([]) == []
    assert await store.revision() == start


async def test_recorded_heartbeats_are_stored_without_a_revision(
    store: Store, reopen: Reopen
) -> None:
    node = await store.nodes.create(new_node())
    start = await store.revision()

    await store.record_heartbeats({node.id: LATER_TIME})

    assert await store.revision() == start
    assert await store.changes_since(start) == []
    stored = await store.nodes.get(node.id)
    assert stored == replace(node, last_heartbeat_time=LATER_TIME)
    reopened = await reopen()
    assert await reopened.nodes.get(node.id) == replace(node, last_heartbeat_time=LATER_TIME)


async def test_recorded_heartbeats_ignore_unknown_nodes_and_keep_other_fields(store: Store) -> None:
    node = await store.nodes.create(replace(new_node(), status=NodeStatus.READY))
    later = LATER_TIME + timedelta(seconds=5)

    await store.record_heartbeats({node.id: later, "00000000-0000-4000-8000-000000000000": later})

    assert await store.nodes.get(node.id) == replace(node, last_heartbeat_time=later)
    assert len(await store.nodes.list_all()) == 1


async def test_a_status_update_after_recorded_heartbeats_keeps_its_own_time(store: Store) -> None:
    node = await store.nodes.create(new_node())
    await store.record_heartbeats({node.id: LATER_TIME})
    newer = LATER_TIME + timedelta(seconds=1)

    updated = await store.nodes.update(
        replace(node, status=NodeStatus.SUSPECT, last_heartbeat_time=newer), node.revision
    )

    assert await store.nodes.get(node.id) == updated
    assert updated.last_heartbeat_time == newer
