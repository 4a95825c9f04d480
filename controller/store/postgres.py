"""The shared store: PostgreSQL, for several controller replicas on one database.

Writes run at READ COMMITTED in one transaction each, and each write transaction that logs a
change first takes one transaction-scoped advisory lock (`WRITE_LOCK`). Writers are therefore
serialized across every replica, like SQLite's single writer: a revision is taken from the
change log's sequence and committed before the next writer takes its own, so the change log
becomes visible in revision order and a watcher resuming after revision N never misses a change
that commits later with a smaller revision. The revision check of `update` and `delete` reads
the row with `SELECT ... FOR UPDATE`, so it also holds for a writer that does not take the lock
(re-encryption). Heartbeats write only `node_heartbeats` rows, never a node's, so they neither
wait for node writes nor hold them up; they upsert their rows in id order, so two replicas'
batches cannot deadlock; a transaction that still fails to serialize is retried.

Two connections: writes take turns on one (an asyncio lock, first come first served), which is
also how `close` waits for the writes in progress; reads take turns on the other, so a read
never waits for a write nor a write for a read (each read is one autocommit statement, which
sees every write whose coroutine has returned). A broken connection is reopened on the next
call; the call that saw it break raises UnavailableError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors

from controller.errors import (
    AlreadyExistsError,
    ConflictError,
    FencedError,
    NotFoundError,
    UnavailableError,
)
from controller.models import Deployment, Node
from controller.store import codec
from controller.store.base import Change, Fence, Lease, RequestKey, RequestRecord, T
from controller.store.postgres_migrations import MIGRATIONS
from controller.store.sealing import PlaintextSealer, Sealer

R = TypeVar("R")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# pg_advisory_xact_lock keys (any 64-bit numbers unique to this application).
WRITE_LOCK = 0x0A67_0001
MIGRATION_LOCK = 0x0A67_0002
CHANGES_CHANNEL = "a67_changes"  # NOTIFY channel: a change was committed to the log
# Attempts of a transaction that PostgreSQL aborted to serialize it (deadlock, serialization).
ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10


class PostgresStore:
    """`Store` on a PostgreSQL database (`postgresql://user@host:port/dbname?...`, any libpq
    connection URL). The database must exist; the schema is created on open."""

    def __init__(self, url: str, sealer: Sealer | None = None) -> None:
        self.url = url
        self.sealer: Sealer = sealer or PlaintextSealer()
        sealer = self.sealer
        self._open = False
        self._writer = _Line(self._connect)
        self._reader = _Line(self._connect)
        self._listener = _Line(self._connect)  # LISTENs for other replicas' changes
        self._listening: Connection | None = None
        self._nodes = PostgresTable[Node](self, codec.node_layout(sealer))
        self._deployments = PostgresTable[Deployment](self, codec.DEPLOYMENT_LAYOUT)

    @property
    def nodes(self) -> PostgresTable[Node]:
        return self._nodes

    @property
    def deployments(self) -> PostgresTable[Deployment]:
        return self._deployments

    async def open(self) -> None:
        conn = await self._connect()
        try:
            await _migrate(conn)
        except BaseException:
            await conn.close()
            raise
        self._writer.conn = conn  # the reader connects on the first read
        self._open = True

    async def _connect(self) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"cannot connect to the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        async with self._writer.turn, self._reader.turn:  # lock order: writer, then reader
            if not self._open:
                return
            self._open = False
            await self._writer.close()
            await self._reader.close()
            await self._listener.close()

    async def _connection(self, line: _Line) -> Connection:
        """The line's open connection (reopened if it broke). Call only in its turn."""
        if not self._open:
            raise UnavailableError("the store is closed")
        return await line.connection()

    async def run(self, fn: Callable[[Connection], Awaitable[R]]) -> R:
        """Runs `fn(connection)` in this call's turn on the read connection, each statement on
        its own (reads). Raises UnavailableError once closed or if the database cannot be
        reached."""
        async with self._reader.turn:
            conn = await self._connection(self._reader)
            try:
                return await fn(conn)
            except psycopg.OperationalError as exc:
                raise UnavailableError(f"the PostgreSQL store failed: {exc}") from exc

    async def transaction(
        self, fn: Callable[[Connection], Awaitable[R]], kind: str, *, logged: bool = True
    ) -> R:
        """Runs `fn(connection)` in one transaction, after taking the write lock if `logged`
        (the transaction writes the change log). A unique-key clash becomes AlreadyExistsError;
        a transaction aborted to serialize it is retried."""
        async with self._writer.turn:
            for attempt in range(1, ATTEMPTS + 1):
                conn = await self._connection(self._writer)
                try:
                    async with conn.transaction():
                        if logged:
                            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                            # Delivered at commit, once per transaction: followers read the log.
                            await conn.execute(f"NOTIFY {CHANGES_CHANNEL}")
                        return await fn(conn)
                except pg_errors.UniqueViolation as exc:
                    raise AlreadyExistsError(
                        f"a {kind} with the same id or name already exists"
                    ) from exc
                except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected):
                    if attempt == ATTEMPTS:
                        raise
                except psycopg.OperationalError as exc:
                    raise UnavailableError(f"the PostgreSQL store failed: {exc}") from exc
            raise AssertionError("unreachable")

    async def revision(self) -> int:
        async def query(conn: Connection) -> int:
            cursor = await conn.execute("SELECT coalesce(max(revision), 0) FROM changes")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self.run(query)

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        layouts: dict[str, codec.Layout[Node] | codec.Layout[Deployment]] = {
            "node": self._nodes.layout,
            "deployment": self._deployments.layout,
        }

        async def query(conn: Connection) -> list[Change]:
            cursor = await conn.execute(
                "SELECT revision, kind, resource_id, deleted, data::text, prior_revision"
                " FROM changes WHERE revision > %s ORDER BY revision LIMIT %s",
                (revision, limit),
            )
            return [codec.change(layouts, *row) for row in await cursor.fetchall()]

        return await self.run(query)

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        async def write(conn: Connection) -> Lease:
            await conn.execute(
                "INSERT INTO leases (name, holder, epoch, expires_at)"
                " VALUES (%s, %s, 1, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (name) DO UPDATE SET"
                "  epoch = CASE WHEN leases.holder = excluded.holder"
                "   AND leases.expires_at > clock_timestamp()"
                "   THEN leases.epoch ELSE leases.epoch + 1 END,"
                "  holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= clock_timestamp()",
                (name, holder, ttl_s),
            )
            cursor = await conn.execute(
                "SELECT holder, epoch, extract(epoch FROM expires_at - clock_timestamp())"
                " FROM leases WHERE name = %s",
                (name,),
            )
            row = await cursor.fetchone()
            assert row is not None
            return Lease(name, row[0], int(row[1]), float(row[2]))

        return await self.transaction(write, "lease", logged=False)

    async def leases(self, prefix: str) -> list[Lease]:
        async def query(conn: Connection) -> list[Lease]:
            cursor = await conn.execute(
                "SELECT name, holder, epoch, extract(epoch FROM expires_at - clock_timestamp())"
                " FROM leases WHERE left(name, %s) = %s AND expires_at > clock_timestamp()"
                " ORDER BY name",
                (len(prefix), prefix),
            )
            return [Lease(r[0], r[1], int(r[2]), float(r[3])) for r in await cursor.fetchall()]

        return await self.run(query)

    async def wait_for_changes(self, timeout_s: float) -> None:
        async with self._listener.turn:
            conn = await self._connection(self._listener)
            try:
                if self._listening is not conn:  # a new connection: listen again
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._listening = conn
                async for _ in conn.notifies(timeout=timeout_s, stop_after=1):
                    pass
            except psycopg.OperationalError as exc:
                await self._listener.close()
                raise UnavailableError(f"the PostgreSQL store failed: {exc}") from exc

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        ids = sorted(times)
        stamps = [times[node_id].isoformat() for node_id in ids]

        async def write(conn: Connection) -> None:
            # The join drops unknown ids. A node deleted by another replica while this runs
            # may leave its row behind: reads join from nodes, so it is never read, and a node
            # created with that id removes it.
            await conn.execute(
                "INSERT INTO node_heartbeats (node_id, time)"
                " SELECT t.id, t.time FROM unnest(%s::text[], %s::text[]) AS t(id, time)"
                " JOIN nodes ON nodes.id = t.id ORDER BY t.id"
                " ON CONFLICT (node_id) DO UPDATE SET time = excluded.time",
                (ids, stamps),
            )

        if ids:
            await self.transaction(write, "node", logged=False)


class _Line:
    """One connection, used by one call at a time (`turn`), connected again if it broke."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]]) -> None:
        self._connect = connect
        self.conn: Connection | None = None
        self.turn = asyncio.Lock()

    async def connection(self) -> Connection:
        if self.conn is None or self.conn.closed:
            self.conn = await self._connect()
        return self.conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()


class PostgresTable(Generic[T]):
    """`Table` for one kind. Each write is one transaction with its change-log row; the change
    row and the resource row are written by one statement (a data-modifying CTE)."""

    def __init__(self, store: PostgresStore, layout: codec.Layout[T]) -> None:
        self._store = store
        self._layout: codec.Layout[T] = layout
        self._select = _select(layout)
        names = layout.row_names
        self._insert_row = (
            f"INSERT INTO {layout.table} ({', '.join(names)})"
            f" VALUES ({', '.join(['%s'] * (len(names) - 1))}, %s::jsonb)"
        )

    @property
    def layout(self) -> codec.Layout[T]:
        return self._layout

    async def get(self, resource_id: str) -> T | None:
        decode = self._layout.decode

        async def query(conn: Connection) -> T | None:
            cursor = await conn.execute(f"{self._select} WHERE r.id = %s", (resource_id,))
            row = await cursor.fetchone()
            return decode(row[0], int(row[1]), row[2], row[3]) if row else None

        return await self._store.run(query)

    async def list_all(self) -> list[T]:
        decode = self._layout.decode

        async def query(conn: Connection) -> list[T]:
            cursor = await conn.execute(f"{self._select} ORDER BY r.id")
            rows = await cursor.fetchall()
            return [decode(r[0], int(r[1]), r[2], r[3]) for r in rows]

        return await self._store.run(query)

    async def create(self, resource: T, request: RequestKey | None = None) -> T:
        layout = self._layout

        async def write(conn: Connection) -> int:
            if request and await self._find_request(conn, request.request_id):
                raise AlreadyExistsError(f"request id {request.request_id!r} was already used")
            return await self._insert(conn, resource, request)

        revision = await self._store.transaction(write, layout.kind)
        return replace(resource, revision=revision)

    async def create_many(
        self, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        if not items:
            return []
        return await self._store.transaction(
            lambda conn: self._insert_many(conn, items), self._layout.kind
        )

    async def _insert_many(
        self, conn: Connection, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        """Inserts the items whose request id was not used before (earlier in the batch
        included), with one statement per table for the whole batch (`executemany`: one
        prepared statement, pipelined). Revisions are taken in item order from the log's
        last, as one insert after another would take them: the caller holds the write lock."""
        layout = self._layout
        earlier = await self._find_requests(conn, [r.request_id for _, r in items if r])
        results: list[T | RequestRecord] = []
        changes: list[tuple[int, str, str, str]] = []
        rows: list[tuple[object, ...]] = []
        requests: list[tuple[str, str, str, str]] = []
        cursor = await conn.execute(f"SELECT {_NEXT_REVISION} - 1")
        revision = await _returned(cursor)
        for resource, request in items:
            if request:
                found = earlier.get(request.request_id)
                if found is not None:
                    results.append(found)
                    continue
                earlier[request.request_id] = RequestRecord(request.fingerprint, resource.id)
                requests.append(
                    (layout.table, request.request_id, request.fingerprint, resource.id)
                )
            revision += 1
            document = layout.encode(resource)
            changes.append((revision, layout.kind, resource.id, document))
            rows.append(layout.row(resource, revision, document))
            results.append(replace(resource, revision=revision))
        async with conn.cursor() as cur:
            if changes:
                await cur.executemany(
                    "INSERT INTO changes (revision, kind, resource_id, deleted, data)"
                    " VALUES (%s, %s, %s, FALSE, %s::jsonb)",
                    changes,
                )
                if layout.heartbeats:  # see _insert
                    await cur.execute(
                        "DELETE FROM node_heartbeats WHERE node_id = ANY(%s)",
                        ([row[0] for row in rows],),
                    )
                await cur.executemany(self._insert_row, rows)
            if requests:
                await cur.executemany(
                    "INSERT INTO requests (scope, request_id, fingerprint, resource_id)"
                    " VALUES (%s, %s, %s, %s)",
                    requests,
                )
        return results

    async def _insert(self, conn: Connection, resource: T, request: RequestKey | None) -> int:
        """Logs and inserts a new resource (and its request id); returns its revision."""
        layout = self._layout
        columns: dict[str, object] = {"id": resource.id, **layout.columns(resource)}
        names = ", ".join(["revision", *columns, "data"])
        marks = ", ".join(["c.revision", *("%s" for _ in columns), "c.data"])
        # A node's new row takes the place of any heartbeat row its id left behind (see
        # record_heartbeats): a new node has no recorded heartbeat.
        clear = ""
        cleared: tuple[str, ...] = ()
        if layout.heartbeats:
            clear = ", h AS (DELETE FROM node_heartbeats WHERE node_id = %s)"
            cleared = (resource.id,)
        cursor = await conn.execute(
            f"WITH c AS ({_LOG_PUT}){clear} INSERT INTO {layout.table} ({names})"
            f" SELECT {marks} FROM c RETURNING revision",
            (layout.kind, resource.id, layout.encode(resource), *cleared, *columns.values()),
        )
        revision = await _returned(cursor)
        if request:
            await conn.execute(
                "INSERT INTO requests (scope, request_id, fingerprint, resource_id)"
                " VALUES (%s, %s, %s, %s)",
                (layout.table, request.request_id, request.fingerprint, resource.id),
            )
        return revision

    async def update(self, resource: T, expect_revision: int) -> T:
        async def write(conn: Connection) -> int:
            await self._check_revision(conn, resource.id, expect_revision)
            return await self._write_update(conn, resource)

        revision = await self._store.transaction(write, self._layout.kind)
        return replace(resource, revision=revision)

    async def _write_update(self, conn: Connection, resource: T) -> int:
        """Logs the change and writes the row (which the caller has locked and checked)."""
        layout = self._layout
        columns: dict[str, str] = layout.columns(resource)
        assignments = ", ".join(
            ["revision = c.revision", *(f"{name} = %s" for name in columns), "data = c.data"]
        )
        cursor = await conn.execute(
            f"WITH c AS ({_LOG_PUT}) UPDATE {layout.table} SET {assignments}"
            f" FROM c WHERE id = %s RETURNING {layout.table}.revision",
            (layout.kind, resource.id, layout.encode(resource), *columns.values(), resource.id),
        )
        return await _returned(cursor)

    async def update_many(
        self, resources: Sequence[T], fence: Fence | None = None
    ) -> list[T | None]:
        table = self._layout.table

        async def write(conn: Connection) -> list[T | None]:
            if fence is not None:
                await _check_fence(conn, fence)
            # Lock every row in id order (concurrent batches cannot deadlock), then write those
            # still at the caller's revision.
            cursor = await conn.execute(
                f"SELECT id, revision FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                (sorted({r.id for r in resources}),),
            )
            stored = {row[0]: int(row[1]) for row in await cursor.fetchall()}
            results: list[T | None] = []
            for resource in resources:
                if stored.get(resource.id) != resource.revision:
                    results.append(None)
                    continue
                revision = await self._write_update(conn, resource)
                stored[resource.id] = revision
                results.append(replace(resource, revision=revision))
            return results

        if not resources:
            return []
        return await self._store.transaction(write, self._layout.kind)

    async def delete(
        self, resource_id: str, expect_revision: int | None = None, fence: Fence | None = None
    ) -> int:
        layout = self._layout

        async def write(conn: Connection) -> int:
            if fence is not None:
                await _check_fence(conn, fence)
            await self._check_revision(conn, resource_id, expect_revision)
            if layout.heartbeats:  # the log keeps the node as reads returned it
                beats = " hb AS (DELETE FROM node_heartbeats WHERE node_id = %s RETURNING time),"
                source, document = "old LEFT JOIN hb ON TRUE", _WITH_HEARTBEAT
                ids: tuple[str, ...] = (resource_id, resource_id)
            else:
                beats, source, document, ids = "", "old", "old.data", (resource_id,)
            cursor = await conn.execute(
                f"WITH old AS (SELECT revision, data FROM {layout.table} WHERE id = %s),{beats}"
                " c AS (INSERT INTO changes"
                "  (revision, kind, resource_id, deleted, data, prior_revision)"
                f"  SELECT {_NEXT_REVISION}, %s, %s, TRUE, {document}, old.revision"
                f"  FROM {source} RETURNING revision),"
                f" d AS (DELETE FROM {layout.table} WHERE id = %s)"
                " SELECT revision FROM c",
                (*ids, layout.kind, resource_id, resource_id),
            )
            return await _returned(cursor)

        return await self._store.transaction(write, layout.kind)

    async def find_request(self, request_id: str) -> RequestRecord | None:
        return await self._store.run(lambda conn: self._find_request(conn, request_id))

    async def _find_requests(
        self, conn: Connection, request_ids: Sequence[str]
    ) -> dict[str, RequestRecord]:
        """The records of those of `request_ids` used before, by request id."""
        if not request_ids:
            return {}
        cursor = await conn.execute(
            "SELECT request_id, fingerprint, resource_id FROM requests"
            " WHERE scope = %s AND request_id = ANY(%s)",
            (self._layout.table, list(request_ids)),
        )
        return {row[0]: RequestRecord(row[1], row[2]) for row in await cursor.fetchall()}

    async def _find_request(self, conn: Connection, request_id: str) -> RequestRecord | None:
        cursor = await conn.execute(
            "SELECT fingerprint, resource_id FROM requests WHERE scope = %s AND request_id = %s",
            (self._layout.table, request_id),
        )
        row = await cursor.fetchone()
        return RequestRecord(row[0], row[1]) if row else None

    async def _check_revision(self, conn: Connection, resource_id: str, expect: int | None) -> None:
        """Locks the row until the transaction ends and checks its revision."""
        cursor = await conn.execute(
            f"SELECT revision FROM {self._layout.table} WHERE id = %s FOR UPDATE", (resource_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(self._layout.kind, resource_id)
        if expect is not None and row[0] != expect:
            kind = self._layout.kind
            raise ConflictError(
                f"{kind} {resource_id!r} is at revision {row[0]}, not {expect}",
                metadata={"current_etag": str(row[0])},
            )


# The next revision: every logged write holds the write lock (pg_advisory_xact_lock) when it
# takes it, so revisions are dense, never repeat, and commit in order.
_NEXT_REVISION = "(SELECT coalesce(max(revision), 0) + 1 FROM changes)"

# Appends a put to the change log; parameters: kind, resource id, document. Returns the
# revision and the document (as stored, for the resource row).
_LOG_PUT = (
    f"INSERT INTO changes (revision, kind, resource_id, deleted, data) VALUES ({_NEXT_REVISION},"
    " %s, %s, FALSE, %s::jsonb) RETURNING revision, data"
)


# The node document `old.data` with the recorded heartbeat time `hb.time` in it if newer (as
# `codec.with_heartbeat` does): the node as reads returned it.
_WITH_HEARTBEAT = (
    "CASE WHEN hb.time IS NOT NULL AND (old.data->>'last_heartbeat_time' IS NULL"
    " OR hb.time::timestamptz > (old.data->>'last_heartbeat_time')::timestamptz)"
    " THEN jsonb_set(old.data, '{last_heartbeat_time}', to_jsonb(hb.time)) ELSE old.data END"
)


def _select(layout: codec.Layout[T]) -> str:
    """Selects (id, revision, document, recorded heartbeat time or NULL) of `layout`'s rows,
    as `r`; add the WHERE and ORDER BY. A heartbeat row whose node is gone is never read."""
    if layout.heartbeats:
        return (
            f"SELECT r.id, r.revision, r.data::text, h.time FROM {layout.table} AS r"
            " LEFT JOIN node_heartbeats AS h ON h.node_id = r.id"
        )
    return f"SELECT r.id, r.revision, r.data::text, NULL FROM {layout.table} AS r"


async def _check_fence(conn: Connection, fence: Fence) -> None:
    """Refuses the transaction unless the fence's lease is held; the row stays share-locked
    until the transaction ends, so the lease cannot change hands before this write commits."""
    cursor = await conn.execute(
        "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND epoch = %s"
        " AND expires_at > clock_timestamp() FOR SHARE",
        (fence.name, fence.holder, fence.epoch),
    )
    if await cursor.fetchone() is None:
        raise FencedError(
            f"{fence.holder} no longer holds lease {fence.name!r} (epoch {fence.epoch})"
        )


async def _returned(cursor: psycopg.AsyncCursor[tuple[Any, ...]]) -> int:
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _migrate(conn: Connection) -> None:
    """Applies the pending migrations, each in the transaction that records it. Replicas that
    start together take turns (an advisory lock), so each migration runs once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version    INTEGER     PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise UnavailableError(
                f"the PostgreSQL store is at schema version {version}, newer than this"
                f" controller knows ({len(MIGRATIONS)}); upgrade the controller"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
