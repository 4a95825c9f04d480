"""The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so that a write is on
disk before it is acknowledged and survives `kill -9`.

Writes run on one dedicated thread with the one read-write connection (SQLite allows one writer
at a time anyway). Reads run beside them, never in front of them: `READERS` threads, each with
its own read-only connection (WAL lets readers and the writer proceed at once). A read is one
statement in autocommit, so it sees every write whose coroutine has returned. The event loop
never blocks on disk."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from controller.errors import (
    AlreadyExistsError,
    ConflictError,
    FencedError,
    NotFoundError,
    UnavailableError,
)
from controller.models import Deployment, Node
from controller.store import codec
from controller.store.base import (
    Change,
    Fence,
    Lease,
    RequestKey,
    RequestRecord,
    StoreInUseError,
    T,
)
from controller.store.sealing import PlaintextSealer, Sealer
from controller.store.sqlite_migrations import MIGRATIONS

R = TypeVar("R")
READERS = 2  # read threads, each with its own connection; reads of a page take milliseconds
IDS_PER_QUERY = 500  # request ids looked up per statement (SQLite binds at most 32,766)


class SQLiteStore:
    """`Store` on a SQLite file. `path` is created (with its folder) if missing."""

    def __init__(self, path: Path, sealer: Sealer | None = None, *, serving: bool = False) -> None:
        """`serving`: this process is the controller serving from the file, which only one may
        be (a lock file beside it, held while open); admin commands (`keys reencrypt`) open it
        beside a running controller, SQLite serializing the writers."""
        self.path = path
        self._serving = serving
        sealer = sealer or PlaintextSealer()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader = threading.local()  # .conn: the reader thread's own connection
        self._reader_conns: list[sqlite3.Connection] = []  # every one opened, to close them
        self._reader_conns_lock = threading.Lock()
        self._lock_fd: int | None = None  # holds the store's lock file while open
        self._nodes = SQLiteTable[Node](self, codec.node_layout(sealer))
        self._deployments = SQLiteTable[Deployment](self, codec.DEPLOYMENT_LAYOUT)

    @property
    def nodes(self) -> SQLiteTable[Node]:
        return self._nodes

    @property
    def deployments(self) -> SQLiteTable[Deployment]:
        return self._deployments

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="a67-sqlite")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open_sync)
        # After the writer: it creates the file, the schema and the WAL the readers open.
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="a67-sqlite-read")

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._serving:
            self._lock_fd = _lock(self.path.with_name(self.path.name + ".lock"))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits on its own; the version bump is its last statement.
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        self._conn = conn

    def _open_reader(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        with self._reader_conns_lock:
            self._reader_conns.append(conn)
        return conn

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        readers, self._readers = self._readers, None
        if executor is None:
            return
        if readers is not None:  # reads in progress finish first; later ones raise
            await asyncio.to_thread(readers.shutdown, wait=True)
        with self._reader_conns_lock:
            reader_conns, self._reader_conns = self._reader_conns, []
        for reader_conn in reader_conns:
            reader_conn.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            os.close(lock_fd)  # releases the lock

    async def run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Runs `fn(connection)` on the writer thread, with the read-write connection, after the
        writes queued before it. Raises UnavailableError once closed."""
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            raise UnavailableError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Runs `fn(connection)` on a reader thread, with that thread's read-only connection,
        beside the writer: a read never waits for a write, nor a write for a read. Keep `fn`
        short (one page): the readers are few and taken first come, first served. Raises
        UnavailableError once closed."""
        readers = self._readers
        if readers is None:
            raise UnavailableError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(readers, self._on_reader, fn)

    def _on_reader(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn: sqlite3.Connection | None = getattr(self._reader, "conn", None)
        if conn is None:
            conn = self._reader.conn = self._open_reader()
        return fn(conn)

    async def revision(self) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
            return int(row[0]) if row else 0

        return await self.read(query)

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        layouts: dict[str, codec.Layout[Node] | codec.Layout[Deployment]] = {
            "node": self._nodes.layout,
            "deployment": self._deployments.layout,
        }

        def query(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT revision, kind, resource_id, deleted, data, prior_revision FROM changes"
                " WHERE revision > ? ORDER BY revision LIMIT ?",
                (revision, limit),
            ).fetchall()
            return [codec.change(layouts, *row) for row in rows]

        return await self.read(query)

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        def write(conn: sqlite3.Connection) -> Lease:
            conn.execute(
                "INSERT INTO leases (name, holder, epoch, expires_at)"
                f" VALUES (?, ?, 1, {_NOW} + ?)"
                " ON CONFLICT (name) DO UPDATE SET"
                f"  epoch = CASE WHEN holder = excluded.holder AND expires_at > {_NOW}"
                "   THEN epoch ELSE epoch + 1 END,"
                "  holder = excluded.holder, expires_at = excluded.expires_at"
                f" WHERE holder = excluded.holder OR expires_at <= {_NOW}",
                (name, holder, ttl_s),
            )
            row = conn.execute(
                f"SELECT holder, epoch, expires_at - {_NOW} FROM leases WHERE name = ?", (name,)
            ).fetchone()
            return Lease(name, row[0], int(row[1]), float(row[2]))

        return await self.run(lambda conn: _transaction(conn, write, "lease"))

    async def leases(self, prefix: str) -> list[Lease]:
        def query(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute(
                f"SELECT name, holder, epoch, expires_at - {_NOW} FROM leases"
                f" WHERE substr(name, 1, ?) = ? AND expires_at > {_NOW} ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
            return [Lease(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

        return await self.read(query)

    async def wait_for_changes(self, timeout_s: float) -> None:
        # One serving process writes the file (the lock): nothing else to wait for.
        await asyncio.sleep(timeout_s)

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        # In id order: consecutive rows share b-tree pages (half the CPU of random order).
        rows = [(node_id, times[node_id].isoformat()) for node_id in sorted(times)]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO node_heartbeats (node_id, time) SELECT id, ?2 FROM nodes"
                " WHERE id = ?1 ON CONFLICT (node_id) DO UPDATE SET time = excluded.time",
                rows,
            )

        if rows:
            await self.run(lambda conn: _transaction(conn, write, "node"))


class SQLiteTable(Generic[T]):
    """`Table` for one kind. Each write is `BEGIN IMMEDIATE ... COMMIT` with its change-log row."""

    def __init__(self, store: SQLiteStore, layout: codec.Layout[T]) -> None:
        self._store = store
        self._layout: codec.Layout[T] = layout
        self._select = _select(layout)
        self._insert_row = _insert_row(layout)

    @property
    def layout(self) -> codec.Layout[T]:
        return self._layout

    async def get(self, resource_id: str) -> T | None:
        decode = self._layout.decode

        def query(conn: sqlite3.Connection) -> T | None:
            row = conn.execute(f"{self._select} WHERE r.id = ?", (resource_id,)).fetchone()
            return decode(row[0], row[1], row[2], row[3]) if row else None

        return await self._store.read(query)

    async def list_all(self) -> list[T]:
        decode = self._layout.decode

        def query(conn: sqlite3.Connection) -> list[T]:
            rows = conn.execute(f"{self._select} ORDER BY r.id").fetchall()
            return [decode(r[0], r[1], r[2], r[3]) for r in rows]

        return await self._store.read(query)

    async def create(self, resource: T, request: RequestKey | None = None) -> T:
        layout = self._layout

        def write(conn: sqlite3.Connection) -> int:
            if request and self._find_request(conn, request.request_id):
                raise AlreadyExistsError(f"request id {request.request_id!r} was already used")
            return self._insert(conn, resource, request)

        revision = await self._store.run(lambda conn: _transaction(conn, write, layout.kind))
        return _with_revision(resource, revision)

    async def create_many(
        self, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        if not items:
            return []

        def write(conn: sqlite3.Connection) -> list[T | RequestRecord]:
            return self._insert_many(conn, items)

        return await self._store.run(lambda conn: _transaction(conn, write, self._layout.kind))

    def _insert_many(
        self, conn: sqlite3.Connection, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        """Inserts the items whose request id was not used before (earlier in the batch
        included), with one prepared statement per table for the whole batch: change-log rows,
        resource rows, request rows. Revisions are taken in item order, as one insert after
        another would take them (the writer holds the write lock)."""
        layout = self._layout
        earlier = self._find_requests(conn, [r.request_id for _, r in items if r])
        results: list[T | RequestRecord] = []
        changes: list[tuple[int, str, str, str]] = []
        rows: list[tuple[object, ...]] = []
        requests: list[tuple[str, str, str, str]] = []
        revision = _last_revision(conn)
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
            results.append(_with_revision(resource, revision))
        if changes:
            conn.executemany(
                "INSERT INTO changes (revision, kind, resource_id, deleted, data)"
                " VALUES (?, ?, ?, 0, ?)",
                changes,
            )
            conn.executemany(self._insert_row, rows)
        if requests:
            conn.executemany(
                "INSERT INTO requests (scope, request_id, fingerprint, resource_id)"
                " VALUES (?, ?, ?, ?)",
                requests,
            )
        return results

    def _insert(self, conn: sqlite3.Connection, resource: T, request: RequestKey | None) -> int:
        """Logs and inserts a new resource (and its request id); returns its revision."""
        layout = self._layout
        document = layout.encode(resource)
        revision = _log_change(conn, layout.kind, resource.id, document)
        conn.execute(self._insert_row, layout.row(resource, revision, document))
        if request:
            conn.execute(
                "INSERT INTO requests (scope, request_id, fingerprint, resource_id)"
                " VALUES (?, ?, ?, ?)",
                (layout.table, request.request_id, request.fingerprint, resource.id),
            )
        return revision

    async def update(self, resource: T, expect_revision: int) -> T:
        def write(conn: sqlite3.Connection) -> int:
            return self._update(conn, resource, expect_revision)

        revision = await self._store.run(lambda conn: _transaction(conn, write, self._layout.kind))
        return _with_revision(resource, revision)

    def _update(self, conn: sqlite3.Connection, resource: T, expect_revision: int) -> int:
        layout = self._layout
        self._check_revision(conn, resource.id, expect_revision)
        document = layout.encode(resource)
        revision = _log_change(conn, layout.kind, resource.id, document)
        columns: dict[str, object] = {"revision": revision, **layout.columns(resource)}
        columns["data"] = document
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE {layout.table} SET {assignments} WHERE id = ?",
            (*columns.values(), resource.id),
        )
        return revision

    async def update_many(
        self, resources: Sequence[T], fence: Fence | None = None
    ) -> list[T | None]:
        def write(conn: sqlite3.Connection) -> list[T | None]:
            if fence is not None:
                _check_fence(conn, fence)
            results: list[T | None] = []
            for resource in resources:
                try:
                    results.append(
                        _with_revision(resource, self._update(conn, resource, resource.revision))
                    )
                except (NotFoundError, ConflictError):
                    results.append(None)
            return results

        return await self._store.run(lambda conn: _transaction(conn, write, self._layout.kind))

    async def delete(
        self, resource_id: str, expect_revision: int | None = None, fence: Fence | None = None
    ) -> int:
        layout = self._layout

        def write(conn: sqlite3.Connection) -> int:
            if fence is not None:
                _check_fence(conn, fence)
            prior, document = self._check_revision(conn, resource_id, expect_revision)
            if layout.heartbeats:  # the log keeps the node as reads returned it
                row = conn.execute(
                    "SELECT time FROM node_heartbeats WHERE node_id = ?", (resource_id,)
                ).fetchone()
                document = codec.with_heartbeat(document, row[0] if row else None)
                conn.execute("DELETE FROM node_heartbeats WHERE node_id = ?", (resource_id,))
            revision = _log_change(conn, layout.kind, resource_id, document, deleted_at=prior)
            conn.execute(f"DELETE FROM {layout.table} WHERE id = ?", (resource_id,))
            return revision

        return await self._store.run(lambda conn: _transaction(conn, write, layout.kind))

    async def find_request(self, request_id: str) -> RequestRecord | None:
        return await self._store.read(lambda conn: self._find_request(conn, request_id))

    def _find_requests(
        self, conn: sqlite3.Connection, request_ids: Sequence[str]
    ) -> dict[str, RequestRecord]:
        """The records of those of `request_ids` used before, by request id."""
        found: dict[str, RequestRecord] = {}
        for start in range(0, len(request_ids), IDS_PER_QUERY):
            chunk: list[str] = list(request_ids[start : start + IDS_PER_QUERY])
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT request_id, fingerprint, resource_id FROM requests WHERE scope = ?"
                f" AND request_id IN ({marks})",
                [self._layout.table, *chunk],
            ).fetchall()
            found.update((row[0], RequestRecord(row[1], row[2])) for row in rows)
        return found

    def _find_request(self, conn: sqlite3.Connection, request_id: str) -> RequestRecord | None:
        row = conn.execute(
            "SELECT fingerprint, resource_id FROM requests WHERE scope = ? AND request_id = ?",
            (self._layout.table, request_id),
        ).fetchone()
        return RequestRecord(row[0], row[1]) if row else None

    def _check_revision(
        self, conn: sqlite3.Connection, resource_id: str, expect: int | None
    ) -> tuple[int, str]:
        """The stored revision and document, if the revision is `expect` (when given)."""
        row = conn.execute(
            f"SELECT revision, data FROM {self._layout.table} WHERE id = ?", (resource_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(self._layout.kind, resource_id)
        if expect is not None and row[0] != expect:
            kind = self._layout.kind
            raise ConflictError(
                f"{kind} {resource_id!r} is at revision {row[0]}, not {expect}",
                metadata={"current_etag": str(row[0])},
            )
        return int(row[0]), str(row[1])


def _insert_row(layout: codec.Layout[T]) -> str:
    """Inserts one of `layout`'s rows; parameters: id, revision, the layout's columns in their
    order, document."""
    names = layout.row_names
    return f"INSERT INTO {layout.table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


def _select(layout: codec.Layout[T]) -> str:
    """Selects (id, revision, document, recorded heartbeat time or NULL) of `layout`'s rows,
    as `r`; add the WHERE and ORDER BY. A heartbeat row whose node is gone is never read."""
    if layout.heartbeats:
        return (
            f"SELECT r.id, r.revision, r.data, h.time FROM {layout.table} AS r"
            " LEFT JOIN node_heartbeats AS h ON h.node_id = r.id"
        )
    return f"SELECT r.id, r.revision, r.data, NULL FROM {layout.table} AS r"


def _last_revision(conn: sqlite3.Connection) -> int:
    """The change log's last revision taken (the next is one more): AUTOINCREMENT never reuses
    one, even after the rows that held it were deleted."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


# The current time in Unix seconds, with fractions, by SQLite's clock.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def _check_fence(conn: sqlite3.Connection, fence: Fence) -> None:
    row = conn.execute(
        f"SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > {_NOW}",
        (fence.name, fence.holder, fence.epoch),
    ).fetchone()
    if row is None:
        raise FencedError(
            f"{fence.holder} no longer holds lease {fence.name!r} (epoch {fence.epoch})"
        )


def _lock(path: Path) -> int:
    """Takes `path`, an exclusive lock that one process at a time holds (released when the
    process ends, however it ends), and writes our pid in it. Raises StoreInUseError naming the
    process that holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreInUseError(
            f"another controller (pid {holder}) is using {path.with_suffix('')}; the embedded"
            " store has exactly one replica (run several on PostgreSQL)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _log_change(
    conn: sqlite3.Connection,
    kind: str,
    resource_id: str,
    document: str,
    *,
    deleted_at: int | None = None,
) -> int:
    """Appends a put of `document` (or, with `deleted_at`, the delete of the resource whose last
    `document` was at that revision) to the change log; returns its revision."""
    cursor = conn.execute(
        "INSERT INTO changes (kind, resource_id, deleted, data, prior_revision)"
        " VALUES (?, ?, ?, ?, ?)",
        (kind, resource_id, int(deleted_at is not None), document, deleted_at),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _transaction(
    conn: sqlite3.Connection, write: Callable[[sqlite3.Connection], R], kind: str
) -> R:
    """Runs `write` in one immediate transaction; a unique-key clash becomes AlreadyExistsError."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = write(conn)
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK")
        raise AlreadyExistsError(f"a {kind} with the same id or name already exists") from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _with_revision(resource: T, revision: int) -> T:
    return replace(resource, revision=revision)
