"""Registrations that arrive together share one store transaction (registry/group_commit.py),
on a real SQLite store: each is acknowledged only once durable (a restart sees every one); a
shared transaction that fails fails every registration in it with a retryable error and writes
none of them; request ids replay within a batch as across batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.errors import InvalidArgumentError, UnavailableError
from controller.models import Capabilities, Node, NodeSpec
from controller.registry.nodes import NodeRegistry
from controller.store import open_store
from controller.store.base import RequestKey, RequestRecord, Store

SPEC = NodeSpec(
    provider="render",
    endpoint="https://api.render.com",
    region="us-east-1",
    capabilities=Capabilities(cpu_cores=4.0, memory_gb=8.0),
)

CreateMany = Callable[[Sequence[tuple[Node, RequestKey | None]]], Any]


def spy_on_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every create_many transaction of the store's nodes table, in order."""
    sizes: list[int] = []
    real: CreateMany = store.nodes.create_many

    async def create_many(items: Sequence[tuple[Node, RequestKey | None]]) -> Any:
        sizes.append(len(items))
        return await real(items)

    monkeypatch.setattr(store.nodes, "create_many", create_many)
    return sizes


async def registry_on(store: Store, clock: FakeClock) -> NodeRegistry:
    registry = NodeRegistry(store, clock)
    await registry.load()
    return registry


async def test_concurrent_registrations_share_transactions_and_all_survive_a_restart(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = open_store(url)
    await store.open()
    sizes = spy_on_batches(store, monkeypatch)
    registry = await registry_on(store, clock)

    nodes = await asyncio.gather(
        *(registry.register(replace(SPEC, region=f"r{i}"), f"req-{i}") for i in range(300))
    )

    assert len({n.id for n in nodes}) == 300
    assert sum(sizes) == 300
    assert len(sizes) < 300  # shared: fewer transactions than registrations
    assert [n.region for n in nodes] == [f"r{i}" for i in range(300)]
    for node in nodes:
        assert registry.get(node.id) == node  # acknowledged once in the index
    await registry.settle()
    await store.close()

    restarted = open_store(url)
    await restarted.open()
    try:
        again = await registry_on(restarted, clock)
        for node in nodes:
            assert again.get(node.id) == node
        replayed = await asyncio.gather(
            *(again.register(replace(SPEC, region=f"r{i}"), f"req-{i}") for i in range(300))
        )
        assert replayed == nodes
        assert again.stats().total == 300
    finally:
        await restarted.close()


async def test_a_failed_shared_transaction_fails_every_registration_in_it_and_writes_none(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = await registry_on(store, clock)
    existing = await registry.register(SPEC, "before")
    real: CreateMany = store.nodes.create_many
    failed: list[int] = []

    async def clashing(items: Sequence[tuple[Node, RequestKey | None]]) -> Any:
        # The first shared transaction also carries a node whose id is taken: the real store
        # rolls the whole of it back.
        if not failed:
            failed.append(len(items))
            return await real([*items, (replace(items[0][0], id=existing.id), None)])
        return await real(items)

    monkeypatch.setattr(store.nodes, "create_many", clashing)

    outcomes = await asyncio.gather(
        *(registry.register(SPEC, f"req-{i}") for i in range(50)), return_exceptions=True
    )

    assert failed == [50]  # all fifty were in it
    assert all(isinstance(o, UnavailableError) for o in outcomes), outcomes
    assert [n.id for n in await store.nodes.list_all()] == [existing.id]
    assert registry.stats().total == 1
    for i in range(50):
        assert await store.nodes.find_request(f"req-{i}") is None

    # Retried with the same request ids: each is written once.
    retried = await asyncio.gather(*(registry.register(SPEC, f"req-{i}") for i in range(50)))
    assert len({n.id for n in retried}) == 50
    assert registry.stats().total == 51
    record = await store.nodes.find_request("req-7")
    assert record is not None and record.resource_id == retried[7].id


async def test_one_request_id_twice_in_one_transaction_creates_one_node(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = spy_on_batches(store, monkeypatch)
    registry = await registry_on(store, clock)

    same, other, reused = await asyncio.gather(
        registry.register(SPEC, "req-1"),
        registry.register(SPEC, "req-1"),
        registry.register(replace(SPEC, region="eu-west-1"), "req-1"),
        return_exceptions=True,
    )

    assert sizes == [3]
    assert isinstance(same, Node) and other == same
    assert isinstance(reused, InvalidArgumentError) and reused.reason == "REQUEST_ID_REUSED"
    assert registry.stats().total == 1


async def test_a_caller_that_leaves_does_not_take_its_registration_out(
    store: Store, clock: FakeClock
) -> None:
    registry = await registry_on(store, clock)
    leaving = asyncio.ensure_future(registry.register(SPEC, "req-gone"))
    staying = asyncio.ensure_future(registry.register(SPEC, "req-stays"))
    await asyncio.sleep(0)  # both queued
    leaving.cancel()

    kept = await staying
    await registry.settle()

    record = await store.nodes.find_request("req-gone")
    assert isinstance(record, RequestRecord)
    assert registry.get(record.resource_id).id == record.resource_id
    assert {n.id for n in await store.nodes.list_all()} == {kept.id, record.resource_id}
