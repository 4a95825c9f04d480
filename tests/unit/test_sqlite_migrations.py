"""A store written by an older schema opens with the newest: migrations apply in order and keep
what was there (change-log entries from before the log kept documents carry none)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.models import Capabilities, Node
from controller.store import codec
from controller.store.base import Change
from controller.store.sealing import PlaintextSealer
from controller.store.sqlite import SQLiteStore
from controller.store.sqlite_migrations import MIGRATIONS


async def test_a_version_1_store_is_migrated_and_keeps_its_change_log(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute("INSERT INTO changes (kind, resource_id, deleted) VALUES ('node', 'n-1', 1)")
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.changes_since(0) == [Change(1, "node", "n-1", True, None)]
        version = await store.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == len(MIGRATIONS)
    finally:
        await store.close()


async def test_heartbeat_times_in_documents_survive_the_move_to_their_own_table(
    tmp_path: Path,
) -> None:
    """Version 4 records heartbeat times apart from the documents; a time a version-3 store
    wrote into a document is still the node's, until a newer one is recorded."""
    beat = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    node = Node(
        id="n-1",
        provider="aws",
        endpoint="10.0.0.7:7070",
        region="us-east-1",
        capabilities=Capabilities(cpu_cores=4.0, memory_gb=16.0),
        create_time=beat,
        update_time=beat,
        last_heartbeat_time=beat,
        revision=1,
    )
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{''.join(MIGRATIONS[:3])}\nPRAGMA user_version = 3;\nCOMMIT;")
    conn.execute(
        "INSERT INTO nodes (id, revision, status, provider, region, data)"
        " VALUES ('n-1', 1, 'PENDING', 'aws', 'us-east-1', ?)",
        (codec.encode_node(node, PlaintextSealer()),),
    )
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.nodes.list_all() == [node]
        later = beat + timedelta(seconds=10)
        await store.record_heartbeats({"n-1": later})
        assert await store.nodes.get("n-1") == replace(node, last_heartbeat_time=later)
    finally:
        await store.close()
