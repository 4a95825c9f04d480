"""The store contract: recorded last-heartbeat times (`Store.record_heartbeats`).

They are stored apart from the nodes' documents (no revision, no change-log entry); every read
of a node returns the newer of the time its last revision carried and the time last recorded,
and a deleted node's recorded time goes with it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from controller.models import NodeStatus, frozen_map
from controller.store.base import Change, Store

from .conftest import LATER_TIME, Reopen, new_node

EARLIER = LATER_TIME - timedelta(seconds=30)
NEWER = LATER_TIME + timedelta(seconds=30)
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def test_recorded_times_survive_a_restart_and_load_with_every_node(
    store: Store, reopen: Reopen
) -> None:
    beating, silent = await store.nodes.create(new_node()), await store.nodes.create(new_node())
    await store.record_heartbeats({beating.id: EARLIER})
    await store.record_heartbeats({beating.id: LATER_TIME})

    reopened = await reopen()

    expected = sorted(
        [replace(beating, last_heartbeat_time=LATER_TIME), silent], key=lambda n: n.id
    )
    assert await reopened.nodes.list_all() == expected
    assert await reopened.nodes.get(beating.id) == replace(beating, last_heartbeat_time=LATER_TIME)
    assert await reopened.nodes.get(silent.id) == silent


async def test_an_unknown_id_is_ignored_and_not_kept_for_a_later_node(store: Store) -> None:
    node = await store.nodes.create(new_node())

    await store.record_heartbeats({UNKNOWN_ID: LATER_TIME, node.id: LATER_TIME})

    assert [n.id for n in await store.nodes.list_all()] == [node.id]
    late = await store.nodes.create(replace(new_node(), id=UNKNOWN_ID))
    assert await store.nodes.get(UNKNOWN_ID) == late
    assert late.last_heartbeat_time is None


async def test_a_deleted_nodes_time_does_not_come_back(store: Store, reopen: Reopen) -> None:
    node = await store.nodes.create(new_node())
    await store.record_heartbeats({node.id: LATER_TIME})
    start = await store.revision()

    revision = await store.nodes.delete(node.id)

    # The log keeps the node as reads last returned it, recorded time included.
    assert await store.changes_since(start) == [
        Change(revision, "node", node.id, True, replace(node, last_heartbeat_time=LATER_TIME))
    ]
    await store.record_heartbeats({node.id: NEWER})  # a beat persisted after the delete
    again = await store.nodes.create(replace(new_node(), id=node.id))
    reopened = await reopen()
    assert await reopened.nodes.get(node.id) == again
    assert again.last_heartbeat_time is None


async def test_recording_changes_no_revision_so_a_later_update_is_not_a_conflict(
    store: Store,
) -> None:
    node = await store.nodes.create(new_node())
    await store.record_heartbeats({node.id: LATER_TIME})

    stored = await store.nodes.get(node.id)
    assert stored is not None and stored.revision == node.revision
    updated = await store.nodes.update(replace(stored, status=NodeStatus.READY), node.revision)

    assert updated.revision == node.revision + 1
    assert await store.nodes.get(node.id) == updated


async def test_the_newest_time_wins_between_a_status_write_and_a_recorded_time(
    store: Store, reopen: Reopen
) -> None:
    """A status write carries the liveness time (newer than any recorded); another write may
    carry the time the in-memory node had (older): either way a read returns the newest."""
    node = await store.nodes.create(new_node())
    await store.record_heartbeats({node.id: LATER_TIME})

    stale = await store.nodes.update(
        replace(node, labels=frozen_map({"zone": "b"}), last_heartbeat_time=EARLIER), node.revision
    )
    assert await store.nodes.get(node.id) == replace(stale, last_heartbeat_time=LATER_TIME)

    suspect = await store.nodes.update(
        replace(stale, status=NodeStatus.SUSPECT, last_heartbeat_time=NEWER), stale.revision
    )
    assert await store.nodes.get(node.id) == suspect

    await store.record_heartbeats({node.id: LATER_TIME})  # older than the document's: kept out
    reopened = await reopen()
    assert await reopened.nodes.list_all() == [suspect]


async def test_a_status_write_logs_the_time_it_carries(store: Store) -> None:
    """As before recorded times had a table of their own: the change log holds what each
    revision wrote, and recorded times are not changes."""
    node = await store.nodes.create(new_node())
    await store.record_heartbeats({node.id: NEWER})
    start = await store.revision()

    updated = await store.nodes.update(
        replace(node, status=NodeStatus.READY, last_heartbeat_time=LATER_TIME), node.revision
    )

    assert await store.changes_since(start) == [
        Change(updated.revision, "node", node.id, False, updated)
    ]
