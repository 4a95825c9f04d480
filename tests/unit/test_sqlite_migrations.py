"""A store written by an older schema opens with the newest: migrations apply in order and keep
what was there (change-log entries from before the log kept documents carry none)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.store.base import Change
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
