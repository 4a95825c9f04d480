"""A PostgreSQL store written by an older schema opens with the newest: migrations apply in
order and keep what was there."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import psycopg

from controller.store import codec
from controller.store.postgres import PostgresStore
from controller.store.postgres_migrations import MIGRATIONS
from controller.store.sealing import PlaintextSealer

from . import postgres_server
from .conftest import LATER_TIME, new_node


async def test_heartbeat_times_in_documents_survive_the_move_to_their_own_table() -> None:
    """Version 5 records heartbeat times apart from the documents; a time a version-4 store
    wrote into a document is still the node's, until a newer one is recorded."""
    url = postgres_server.database_url()
    node = replace(new_node(), last_heartbeat_time=LATER_TIME, revision=1)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_version ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(MIGRATIONS[:4], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        await conn.execute(
            "INSERT INTO nodes (id, revision, status, provider, region, data)"
            " VALUES (%s, 1, 'PENDING', 'aws', 'us-east-1', %s::jsonb)",
            (node.id, codec.encode_node(node, PlaintextSealer())),
        )

    store = PostgresStore(url)
    await store.open()
    try:
        assert await store.nodes.list_all() == [node]
        later = LATER_TIME + timedelta(seconds=10)
        await store.record_heartbeats({node.id: later})
        assert await store.nodes.get(node.id) == replace(node, last_heartbeat_time=later)
    finally:
        await store.close()
