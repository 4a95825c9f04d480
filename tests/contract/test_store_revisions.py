"""The store contract: the revision counter, the change log, durability and concurrency."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from controller.errors import AlreadyExistsError, ConflictError, NotFoundError
from controller.store.base import Change, RequestKey, RequestRecord, Store

from .conftest import DEPLOYMENTS, NODES, Kind, Reopen, new_deployment, new_node


async def test_a_new_store_is_at_revision_zero_with_no_changes(store: Store) -> None:
    assert await store.revision() == 0
    assert await store.changes_since(0) == []


async def test_revisions_strictly_increase_across_every_change_of_both_kinds(
    store: Store,
) -> None:
    node = await store.nodes.create(new_node())
    deployment = await store.deployments.create(new_deployment())
    node_update = await store.nodes.update(NODES.changed(node), node.revision)
    deployment_update = await store.deployments.update(
        DEPLOYMENTS.changed(deployment), deployment.revision
    )
    node_deletion = await store.nodes.delete(node.id)
    deployment_deletion = await store.deployments.delete(deployment.id)

    revisions = [
        node.revision,
        deployment.revision,
        node_update.revision,
        deployment_update.revision,
        node_deletion,
        deployment_deletion,
    ]
    assert revisions == sorted(set(revisions))
    assert revisions[0] > 0
    assert await store.revision() == deployment_deletion


async def test_the_store_revision_is_the_revision_of_the_latest_change(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    assert await store.revision() == created.revision

    updated = await table.update(kind.changed(created), created.revision)
    assert await store.revision() == updated.revision

    deleted_at = await table.delete(created.id)
    assert await store.revision() == deleted_at


async def test_changes_since_lists_the_changes_after_a_revision_oldest_first(
    store: Store,
) -> None:
    start = await store.revision()
    node = await store.nodes.create(new_node())
    deployment = await store.deployments.create(new_deployment())
    node_update = await store.nodes.update(NODES.changed(node), node.revision)
    deployment_deletion = await store.deployments.delete(deployment.id)
    node_deletion = await store.nodes.delete(node.id, expect_revision=node_update.revision)

    # Each entry carries what the change did: the state it left, or (a delete) the last state.
    changes = [
        Change(node.revision, "node", node.id, False, node),
        Change(deployment.revision, "deployment", deployment.id, False, deployment),
        Change(node_update.revision, "node", node.id, False, node_update),
        Change(deployment_deletion, "deployment", deployment.id, True, deployment),
        Change(node_deletion, "node", node.id, True, node_update),
    ]
    assert await store.changes_since(start) == changes
    assert await store.changes_since(deployment.revision) == changes[2:]


async def test_changes_since_returns_at_most_limit_changes(store: Store, kind: Kind[Any]) -> None:
    start = await store.revision()
    table = kind.table(store)
    created = [await table.create(kind.new()) for _ in range(5)]

    changes = await store.changes_since(start, limit=2)

    assert changes == [Change(r.revision, kind.name, r.id, False, r) for r in created[:2]]
    assert await store.changes_since(changes[-1].revision, limit=2) == [
        Change(r.revision, kind.name, r.id, False, r) for r in created[2:4]
    ]


async def test_changes_since_the_latest_revision_is_empty(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    await table.update(kind.changed(created), created.revision)

    assert await store.changes_since(await store.revision()) == []


async def test_failed_writes_record_no_change(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    updated = await table.update(kind.changed(created), created.revision)
    changes = await store.changes_since(0)

    with pytest.raises(AlreadyExistsError):
        await table.create(replace(kind.new(), id=created.id))
    with pytest.raises(ConflictError):
        await table.update(created, created.revision)
    with pytest.raises(NotFoundError):
        await table.update(kind.new(), 1)
    with pytest.raises(ConflictError):
        await table.delete(created.id, expect_revision=created.revision)
    with pytest.raises(NotFoundError):
        await table.delete(kind.new().id)

    assert await store.revision() == updated.revision
    assert await store.changes_since(0) == changes


# Durability.


async def test_everything_written_is_there_after_a_reopen(store: Store, reopen: Reopen) -> None:
    kept_node = await store.nodes.create(new_node(), RequestKey("req-n", "fingerprint-n"))
    deleted_node = await store.nodes.create(new_node())
    kept_node = await store.nodes.update(NODES.changed(kept_node), kept_node.revision)
    await store.nodes.delete(deleted_node.id)
    kept_deployment = await store.deployments.create(
        new_deployment(), RequestKey("req-d", "fingerprint-d")
    )
    deleted_deployment = await store.deployments.create(new_deployment())
    await store.deployments.delete(deleted_deployment.id)
    kept_deployment = await store.deployments.update(
        DEPLOYMENTS.changed(kept_deployment), kept_deployment.revision
    )
    revision = await store.revision()
    changes = await store.changes_since(0)

    store = await reopen()

    assert await store.nodes.list_all() == [kept_node]
    assert await store.nodes.get(kept_node.id) == kept_node
    assert await store.nodes.get(deleted_node.id) is None
    assert await store.deployments.list_all() == [kept_deployment]
    assert await store.deployments.get(kept_deployment.id) == kept_deployment
    assert await store.deployments.get(deleted_deployment.id) is None
    assert await store.nodes.find_request("req-n") == RequestRecord("fingerprint-n", kept_node.id)
    assert await store.deployments.find_request("req-d") == RequestRecord(
        "fingerprint-d", kept_deployment.id
    )
    assert await store.revision() == revision
    assert await store.changes_since(0) == changes


async def test_the_revision_counter_continues_after_a_reopen(
    store: Store, reopen: Reopen, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    kept = await table.create(kind.new())
    deleted = await table.create(kind.new())
    deleted_at = await table.delete(deleted.id)  # the latest change leaves no resource behind

    store = await reopen()
    table = kind.table(store)
    created = await table.create(kind.new())
    updated = await table.update(kind.changed(kept), kept.revision)

    assert deleted_at < created.revision < updated.revision
    assert await store.revision() == updated.revision


async def test_a_reopened_store_still_detects_conflicts_and_taken_names(
    store: Store, reopen: Reopen
) -> None:
    deployment = await store.deployments.create(new_deployment())
    updated = await store.deployments.update(DEPLOYMENTS.changed(deployment), deployment.revision)

    store = await reopen()

    with pytest.raises(ConflictError):
        await store.deployments.update(deployment, deployment.revision)
    with pytest.raises(AlreadyExistsError):
        await store.deployments.create(replace(new_deployment(), name=deployment.name))
    assert await store.deployments.list_all() == [updated]


# Concurrency.


async def test_fifty_concurrent_creates_all_succeed_with_distinct_revisions(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    resources = [kind.new() for _ in range(50)]

    created = await asyncio.gather(*(table.create(resource) for resource in resources))

    assert [resource.id for resource in created] == [resource.id for resource in resources]
    revisions = {resource.revision for resource in created}
    assert len(revisions) == 50
    assert await store.revision() == max(revisions)
    assert await table.list_all() == sorted(created, key=lambda resource: resource.id)


async def test_concurrent_creates_of_both_kinds_get_distinct_revisions(store: Store) -> None:
    nodes = asyncio.gather(*(store.nodes.create(new_node()) for _ in range(25)))
    deployments = asyncio.gather(*(store.deployments.create(new_deployment()) for _ in range(25)))

    created_nodes, created_deployments = await asyncio.gather(nodes, deployments)

    revisions = {r.revision for r in created_nodes} | {r.revision for r in created_deployments}
    assert len(revisions) == 50
    assert await store.revision() == max(revisions)
    assert len(await store.changes_since(0)) == 50


async def test_of_concurrent_updates_at_the_same_revision_exactly_one_wins(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())

    results = await asyncio.gather(
        *(table.update(kind.changed(created), created.revision) for _ in range(10)),
        return_exceptions=True,
    )

    winners = [result for result in results if not isinstance(result, BaseException)]
    losers = [result for result in results if isinstance(result, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(loser, ConflictError) for loser in losers)
    assert await table.get(created.id) == winners[0]


async def test_of_concurrent_creates_with_the_same_request_id_exactly_one_wins(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)

    results = await asyncio.gather(
        *(table.create(kind.new(), RequestKey("req-1", f"fp-{i}")) for i in range(10)),
        return_exceptions=True,
    )

    winners = [result for result in results if not isinstance(result, BaseException)]
    losers = [result for result in results if isinstance(result, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(loser, AlreadyExistsError) for loser in losers)
    assert await table.list_all() == winners
    record = await table.find_request("req-1")
    assert record is not None and record.resource_id == winners[0].id


async def test_of_concurrent_creates_of_deployments_with_one_name_exactly_one_wins(
    store: Store,
) -> None:
    results = await asyncio.gather(
        *(store.deployments.create(replace(new_deployment(), name="web")) for _ in range(10)),
        return_exceptions=True,
    )

    winners = [result for result in results if not isinstance(result, BaseException)]
    losers = [result for result in results if isinstance(result, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(loser, AlreadyExistsError) for loser in losers)
    assert await store.deployments.list_all() == winners


async def test_close_waits_for_the_writes_in_progress(
    store: Store, reopen: Reopen, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    resources = [kind.new() for _ in range(20)]

    # gather starts the creates in order, each before close is called.
    *created, _ = await asyncio.gather(*(table.create(r) for r in resources), store.close())

    store = await reopen()
    assert await kind.table(store).list_all() == sorted(created, key=lambda r: r.id)
