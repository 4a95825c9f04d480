"""The store contract: creates grouped in one transaction (`Table.create_many`, the group
commit of registrations): each item is stored with its own revision or replays its request id;
a clash writes nothing at all."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.errors import AlreadyExistsError
from controller.store.base import Change, RequestKey, RequestRecord, Store

from .conftest import Kind, Reopen


def stored(results: list[Any]) -> list[Any]:
    """The results of a create_many that replayed nothing."""
    assert not any(isinstance(r, RequestRecord) for r in results)
    return results


async def test_create_many_stores_each_item_with_its_own_revision_in_order(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    before = await table.create(kind.new())
    new = [kind.new() for _ in range(5)]

    created = stored(await table.create_many([(resource, None) for resource in new]))

    assert [c.revision for c in created] == [before.revision + i for i in range(1, 6)]
    assert created == [replace(r, revision=c.revision) for r, c in zip(new, created, strict=True)]
    for resource in created:
        assert await table.get(resource.id) == resource
    assert await store.changes_since(before.revision) == [
        Change(c.revision, kind.name, c.id, False, c) for c in created
    ]


async def test_create_many_of_nothing_writes_nothing(kind: Kind[Any], store: Store) -> None:
    assert await kind.table(store).create_many([]) == []
    assert await store.revision() == 0


async def test_create_many_records_request_ids_and_replays_used_ones(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    earlier = await table.create(kind.new(), RequestKey("req-old", "fp-old"))
    fresh, reused, again = kind.new(), kind.new(), kind.new()

    results = await table.create_many(
        [
            (fresh, RequestKey("req-new", "fp-new")),
            (reused, RequestKey("req-old", "fp-other")),  # used by an earlier transaction
            (again, RequestKey("req-new", "fp-again")),  # used by an earlier item
        ]
    )

    assert results[0] == replace(fresh, revision=earlier.revision + 1)
    assert results[1] == RequestRecord("fp-old", earlier.id)
    assert results[2] == RequestRecord("fp-new", fresh.id)
    assert await table.get(reused.id) is None
    assert await table.get(again.id) is None
    assert await table.find_request("req-new") == RequestRecord("fp-new", fresh.id)
    assert await store.revision() == earlier.revision + 1


async def test_a_clash_in_create_many_writes_nothing_at_all(kind: Kind[Any], store: Store) -> None:
    table = kind.table(store)
    taken = await table.create(kind.new())
    first, last = kind.new(), kind.new()

    with pytest.raises(AlreadyExistsError):
        await table.create_many(
            [
                (first, RequestKey("req-1", "fp-1")),
                (replace(kind.new(), id=taken.id), None),
                (last, None),
            ]
        )

    assert await table.list_all() == [taken]
    assert await table.find_request("req-1") is None
    assert await store.revision() == taken.revision
    assert await store.changes_since(0) == [
        Change(taken.revision, kind.name, taken.id, False, taken)
    ]


async def test_what_create_many_stored_survives_a_reopen(
    kind: Kind[Any], store: Store, reopen: Reopen
) -> None:
    created = stored(
        await kind.table(store).create_many(
            [(kind.new(), RequestKey(f"req-{i}", f"fp-{i}")) for i in range(3)]
        )
    )

    store = await reopen()

    table = kind.table(store)
    for i, resource in enumerate(created):
        assert await table.get(resource.id) == resource
        assert await table.find_request(f"req-{i}") == RequestRecord(f"fp-{i}", resource.id)


async def test_a_large_create_many_replays_request_ids_wherever_they_are_in_it(
    kind: Kind[Any], store: Store
) -> None:
    table = kind.table(store)
    earlier = await table.create(kind.new(), RequestKey("req-700", "fp-old"))
    new = [kind.new() for _ in range(1_000)]

    results = await table.create_many(
        [(resource, RequestKey(f"req-{i}", f"fp-{i}")) for i, resource in enumerate(new)]
    )

    assert results[700] == RequestRecord("fp-old", earlier.id)
    created = stored(results[:700] + results[701:])
    assert [c.revision for c in created] == [earlier.revision + i for i in range(1, 1_000)]
    assert await store.revision() == earlier.revision + 999
    assert await table.find_request("req-999") == RequestRecord("fp-999", new[999].id)
    assert await table.get(new[999].id) == replace(new[999], revision=earlier.revision + 999)
