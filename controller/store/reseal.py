"""Re-encrypts every stored node credential with the sealer's newest key (`automator67 keys
reencrypt`), after a rotation.

Each node document (in the nodes table and in the change log) is decoded and encoded again
through the codec, in one transaction, and only its sealed credential changes: no revision, no
new change-log entry, no etag change (the resource is the same). With `secure_delete` on, SQLite
zeroes the pages it frees, and the WAL is checkpointed at the end, so old ciphertexts (and
plaintext written before encryption was on) do not linger.
Safe while a controller runs on the same file: SQLite serializes the writers.

On PostgreSQL the rewrite is one transaction that locks every node row (`FOR UPDATE`, in id
order, as the store's writers do), so it is safe while replicas run. A `VACUUM` of the nodes
table afterwards lets PostgreSQL reuse the space of the old row versions; it does not zero them,
and the WAL and backups keep old ciphertexts until they are recycled (old keys stay needed for
those until then)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from controller.store import codec
from controller.store.postgres import Connection, PostgresStore
from controller.store.sealing import RotatingSealer
from controller.store.sqlite import SQLiteStore


@dataclass(frozen=True)
class ResealReport:
    resealed: int  # credentials rewritten with the newest key
    current: int  # credentials already under the newest key
    key_id: str  # the newest key


async def reseal_sqlite(store: SQLiteStore, sealer: RotatingSealer) -> ResealReport:
    """Rewrites every credential not sealed with `sealer.current_key_id`. Raises ValueError (and
    changes nothing) if any credential cannot be opened with the keys the sealer has."""

    def rewrite(conn: sqlite3.Connection) -> ResealReport:
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            resealed = current = 0
            rows = conn.execute("SELECT id, revision, data FROM nodes").fetchall()
            for node_id, revision, data in rows:
                document = _resealed(node_id, revision, data, sealer)
                if document is None:
                    current += _sealed(data)
                    continue
                conn.execute("UPDATE nodes SET data = ? WHERE id = ?", (document, node_id))
                resealed += 1
            logged = conn.execute(
                "SELECT revision, resource_id, data FROM changes"
                " WHERE kind = 'node' AND data IS NOT NULL"
            ).fetchall()
            for revision, node_id, data in logged:
                document = _resealed(node_id, revision, data, sealer)
                if document is not None:
                    conn.execute(
                        "UPDATE changes SET data = ? WHERE revision = ?", (document, revision)
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ResealReport(resealed, current, sealer.current_key_id)

    return await store.run(rewrite)


async def reseal_postgres(store: PostgresStore, sealer: RotatingSealer) -> ResealReport:
    """`reseal_sqlite` on PostgreSQL."""

    async def rewrite(conn: Connection) -> ResealReport:
        resealed = current = 0
        cursor = await conn.execute(
            "SELECT id, revision, data::text FROM nodes ORDER BY id FOR UPDATE"
        )
        for node_id, revision, data in await cursor.fetchall():
            document = _resealed(node_id, int(revision), data, sealer)
            if document is None:
                current += _sealed(data)
                continue
            await conn.execute(
                "UPDATE nodes SET data = %s::jsonb WHERE id = %s", (document, node_id)
            )
            resealed += 1
        cursor = await conn.execute(
            "SELECT revision, resource_id, data::text FROM changes"
            " WHERE kind = 'node' AND data IS NOT NULL ORDER BY revision FOR UPDATE"
        )
        for revision, node_id, data in await cursor.fetchall():
            document = _resealed(node_id, int(revision), data, sealer)
            if document is not None:
                await conn.execute(
                    "UPDATE changes SET data = %s::jsonb WHERE revision = %s", (document, revision)
                )
        return ResealReport(resealed, current, sealer.current_key_id)

    async def vacuum(conn: Connection) -> None:
        await conn.execute("VACUUM nodes")
        await conn.execute("VACUUM changes")

    report = await store.transaction(rewrite, "node", logged=False)
    await store.run(vacuum)
    return report


def _sealed(document: str) -> int:
    """1 if the node document holds a credential, else 0."""
    return int(json.loads(document).get("credentials") is not None)


def _resealed(node_id: str, revision: int, document: str, sealer: RotatingSealer) -> str | None:
    """The node document with its credential sealed by the newest key; None if it has no
    credential or already uses that key. Raises ValueError if no key opens it."""
    credentials = json.loads(document).get("credentials")
    if credentials is None or credentials["key_id"] == sealer.current_key_id:
        return None
    node = codec.decode_node(node_id, revision, document, sealer)
    return codec.encode_node(node, sealer)
