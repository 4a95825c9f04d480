"""The PostgreSQL schema, as an ordered list of migrations. The `schema_version` table records
which have been applied; append new migrations, never edit applied ones.

The shape mirrors `sqlite_migrations.py`: the change log's key is the revision (since migration
4 taken as max + 1 under the write lock, so it never goes backwards, repeats or skips, even
after a transaction that died), and each resource table has its indexed columns beside a
JSONB document. Ids sort
bytewise (COLLATE "C"), as in SQLite, whatever the database's locale."""

MIGRATIONS: list[str] = [
    # 1: nodes, deployments, the change log (its identity column is the revision) and
    # idempotency keys.
    """
    CREATE TABLE changes (
        revision    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind        TEXT    NOT NULL,
        resource_id TEXT    NOT NULL,
        deleted     BOOLEAN NOT NULL
    );
    CREATE TABLE nodes (
        id       TEXT   COLLATE "C" PRIMARY KEY,
        revision BIGINT NOT NULL,
        status   TEXT   NOT NULL,
        provider TEXT   NOT NULL,
        region   TEXT   NOT NULL,
        data     JSONB  NOT NULL
    );
    CREATE INDEX nodes_by_status ON nodes (status, id);
    CREATE INDEX nodes_by_provider ON nodes (provider, id);
    CREATE INDEX nodes_by_region ON nodes (region, id);
    CREATE TABLE deployments (
        id       TEXT   COLLATE "C" PRIMARY KEY,
        revision BIGINT NOT NULL,
        name     TEXT   COLLATE "C" NOT NULL UNIQUE,
        status   TEXT   NOT NULL,
        data     JSONB  NOT NULL
    );
    CREATE INDEX deployments_by_status ON deployments (status, id);
    CREATE TABLE requests (
        scope       TEXT NOT NULL,
        request_id  TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        PRIMARY KEY (scope, request_id)
    );
    """,
    # 2: the change log keeps what each change did: the document after a put, the last one
    # (and its revision) for a delete.
    """
    ALTER TABLE changes ADD COLUMN data JSONB, ADD COLUMN prior_revision BIGINT;
    """,
    # 3: named leases (the leader's), with an epoch that only grows.
    """
    CREATE TABLE leases (
        name       TEXT        PRIMARY KEY,
        holder     TEXT        NOT NULL,
        epoch      BIGINT      NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    """,
    # 4: revisions without gaps: taken as max + 1 under the write lock, not from a sequence
    # (a transaction that died after taking a sequence value left a hole in the log).
    """
    ALTER TABLE changes ALTER COLUMN revision DROP IDENTITY IF EXISTS;
    """,
    # 5: nodes' last-heartbeat times as `record_heartbeats` records them, one small row each
    # (rewriting every node's document to set them was most of the cost of recording them).
    # Documents keep the time their revision carried; a read returns the newer of the two, so
    # the times stored before this migration stay as they are. The time is the ISO 8601 text
    # the documents hold, so a read returns exactly the value that was recorded.
    """
    CREATE TABLE node_heartbeats (
        node_id TEXT COLLATE "C" PRIMARY KEY,
        time    TEXT NOT NULL
    );
    """,
]
