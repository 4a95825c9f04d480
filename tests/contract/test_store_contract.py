"""The store contract: create, get, update, delete, list, unique keys, request ids, closing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from controller.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    UnavailableError,
)
from controller.store.base import RequestKey, RequestRecord, Store, Table

from .conftest import Kind, Reopen, new_deployment, new_node


async def test_create_returns_the_resource_with_a_positive_revision(
    store: Store, kind: Kind[Any]
) -> None:
    resource = kind.new()

    created = await kind.table(store).create(resource)

    assert created.revision > 0
    assert created == replace(resource, revision=created.revision)


async def test_get_returns_what_was_created(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())

    assert await table.get(created.id) == created


async def test_get_of_an_unknown_id_returns_none(store: Store, kind: Kind[Any]) -> None:
    assert await kind.table(store).get(kind.new().id) is None


async def test_update_at_the_current_revision_stores_it_with_a_new_revision(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    changed = kind.changed(created)

    updated = await table.update(changed, expect_revision=created.revision)

    assert updated.revision > created.revision
    assert updated == replace(changed, revision=updated.revision)
    assert await table.get(created.id) == updated


async def test_create_ignores_the_revision_of_its_argument(store: Store, kind: Kind[Any]) -> None:
    resource = replace(kind.new(), revision=12345)

    created = await kind.table(store).create(resource)

    assert created.revision == await store.revision()


async def test_update_checks_the_stored_revision_not_the_revision_of_its_argument(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    changed = replace(kind.changed(created), revision=12345)

    updated = await table.update(changed, expect_revision=created.revision)

    assert updated == replace(changed, revision=updated.revision)
    assert updated.revision == await store.revision()


async def test_update_at_a_stale_revision_raises_conflict_and_changes_nothing(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    updated = await table.update(kind.changed(created), expect_revision=created.revision)

    with pytest.raises(ConflictError):
        await table.update(created, expect_revision=created.revision)

    assert await table.get(created.id) == updated
    assert await store.revision() == updated.revision


async def test_update_of_a_missing_resource_raises_not_found(store: Store, kind: Kind[Any]) -> None:
    with pytest.raises(NotFoundError):
        await kind.table(store).update(kind.new(), expect_revision=1)


async def test_delete_returns_the_revision_of_the_deletion(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())

    deleted_at = await table.delete(created.id)

    assert deleted_at > created.revision
    assert await store.revision() == deleted_at
    assert await table.get(created.id) is None


async def test_delete_at_the_current_revision_deletes(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())

    await table.delete(created.id, expect_revision=created.revision)

    assert await table.get(created.id) is None


async def test_delete_of_a_missing_resource_raises_not_found(store: Store, kind: Kind[Any]) -> None:
    with pytest.raises(NotFoundError):
        await kind.table(store).delete(kind.new().id)


async def test_delete_of_a_deleted_resource_raises_not_found(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    await table.delete(created.id)

    with pytest.raises(NotFoundError):
        await table.delete(created.id)


async def test_delete_at_a_stale_revision_raises_conflict_and_keeps_the_resource(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    updated = await table.update(kind.changed(created), expect_revision=created.revision)

    with pytest.raises(ConflictError):
        await table.delete(created.id, expect_revision=created.revision)

    assert await table.get(created.id) == updated
    assert await store.revision() == updated.revision


async def test_create_with_a_taken_id_raises_already_exists_and_changes_nothing(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    same_id = replace(kind.changed(kind.new()), id=created.id)

    with pytest.raises(AlreadyExistsError):
        await table.create(same_id)

    assert await table.get(created.id) == created
    assert await store.revision() == created.revision


async def test_list_all_of_an_empty_table_is_empty(store: Store, kind: Kind[Any]) -> None:
    assert await kind.table(store).list_all() == []


async def test_list_all_returns_every_resource_ordered_by_id(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = [await table.create(kind.new()) for _ in range(5)]
    deleted = await table.create(kind.new())
    await table.delete(deleted.id)

    assert await table.list_all() == sorted(created, key=lambda resource: resource.id)


async def test_list_all_shows_the_latest_version_of_each_resource(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())
    updated = await table.update(kind.changed(created), expect_revision=created.revision)

    assert await table.list_all() == [updated]


# Deployment names are a unique key.


async def test_creating_a_deployment_with_a_taken_name_raises_already_exists(
    store: Store,
) -> None:
    first = await store.deployments.create(new_deployment())

    with pytest.raises(AlreadyExistsError):
        await store.deployments.create(replace(new_deployment(), name=first.name))

    assert await store.deployments.list_all() == [first]
    assert await store.revision() == first.revision


async def test_renaming_a_deployment_to_a_taken_name_raises_already_exists(
    store: Store,
) -> None:
    first = await store.deployments.create(new_deployment())
    second = await store.deployments.create(new_deployment())

    with pytest.raises(AlreadyExistsError):
        await store.deployments.update(
            replace(second, name=first.name), expect_revision=second.revision
        )

    assert await store.deployments.get(second.id) == second
    assert await store.revision() == second.revision


async def test_the_name_of_a_deleted_deployment_can_be_used_again(store: Store) -> None:
    first = await store.deployments.create(new_deployment())
    await store.deployments.delete(first.id)

    second = await store.deployments.create(replace(new_deployment(), name=first.name))

    assert await store.deployments.get(second.id) == second


async def test_renaming_a_deployment_frees_its_old_name(store: Store) -> None:
    first = await store.deployments.create(new_deployment())
    await store.deployments.update(replace(first, name="renamed"), expect_revision=first.revision)

    second = await store.deployments.create(replace(new_deployment(), name=first.name))

    assert await store.deployments.get(second.id) == second


# Request ids (idempotency keys).


async def test_create_with_a_request_key_records_the_request(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)

    created = await table.create(kind.new(), RequestKey("req-1", "fingerprint-1"))

    assert await table.find_request("req-1") == RequestRecord("fingerprint-1", created.id)


async def test_find_request_of_an_unknown_request_id_returns_none(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    await table.create(kind.new(), RequestKey("req-1", "fingerprint-1"))

    assert await table.find_request("req-2") is None


async def test_a_request_record_survives_deleting_the_resource(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new(), RequestKey("req-1", "fingerprint-1"))

    await table.delete(created.id)

    assert await table.find_request("req-1") == RequestRecord("fingerprint-1", created.id)


async def test_a_request_record_survives_a_reopen(
    store: Store, reopen: Reopen, kind: Kind[Any]
) -> None:
    created = await kind.table(store).create(kind.new(), RequestKey("req-1", "fingerprint-1"))

    store = await reopen()

    record = await kind.table(store).find_request("req-1")
    assert record == RequestRecord("fingerprint-1", created.id)


async def test_reusing_a_request_id_raises_already_exists_and_creates_nothing(
    store: Store, kind: Kind[Any]
) -> None:
    table = kind.table(store)
    first = await table.create(kind.new(), RequestKey("req-1", "fingerprint-1"))
    second = kind.new()

    with pytest.raises(AlreadyExistsError):
        await table.create(second, RequestKey("req-1", "fingerprint-2"))

    assert await table.get(second.id) is None
    assert await table.list_all() == [first]
    assert await table.find_request("req-1") == RequestRecord("fingerprint-1", first.id)
    assert await store.revision() == first.revision


async def test_a_failed_create_records_no_request(store: Store, kind: Kind[Any]) -> None:
    table = kind.table(store)
    created = await table.create(kind.new())

    with pytest.raises(AlreadyExistsError):
        await table.create(replace(kind.new(), id=created.id), RequestKey("req-1", "fp"))

    assert await table.find_request("req-1") is None


async def test_request_ids_of_nodes_and_deployments_are_independent(store: Store) -> None:
    node = await store.nodes.create(new_node(), RequestKey("req-1", "node-fingerprint"))
    deployment = await store.deployments.create(
        new_deployment(), RequestKey("req-1", "deployment-fingerprint")
    )

    assert await store.nodes.find_request("req-1") == RequestRecord("node-fingerprint", node.id)
    assert await store.deployments.find_request("req-1") == RequestRecord(
        "deployment-fingerprint", deployment.id
    )


# Closing.

# A call on a table, given the table, a stored resource and a new one.
TableCall = Callable[[Table[Any], Any, Any], Awaitable[object]]

CALLS_ON_A_TABLE: dict[str, TableCall] = {
    "get": lambda table, stored, new: table.get(stored.id),
    "list_all": lambda table, stored, new: table.list_all(),
    "create": lambda table, stored, new: table.create(new),
    "update": lambda table, stored, new: table.update(stored, stored.revision),
    "delete": lambda table, stored, new: table.delete(stored.id),
    "find_request": lambda table, stored, new: table.find_request("req-1"),
}


@pytest.mark.parametrize("call", CALLS_ON_A_TABLE.values(), ids=CALLS_ON_A_TABLE.keys())
async def test_table_calls_after_close_raise_unavailable(
    store: Store, kind: Kind[Any], call: TableCall
) -> None:
    table = kind.table(store)
    created = await table.create(kind.new(), RequestKey("req-1", "fingerprint-1"))

    await store.close()

    with pytest.raises(UnavailableError):
        await call(table, created, kind.new())


StoreCall = Callable[[Store], Awaitable[object]]

CALLS_ON_THE_STORE: dict[str, StoreCall] = {
    "revision": lambda store: store.revision(),
    "changes_since": lambda store: store.changes_since(0),
}


@pytest.mark.parametrize("call", CALLS_ON_THE_STORE.values(), ids=CALLS_ON_THE_STORE.keys())
async def test_store_calls_after_close_raise_unavailable(store: Store, call: StoreCall) -> None:
    await store.nodes.create(new_node())

    await store.close()

    with pytest.raises(UnavailableError):
        await call(store)
