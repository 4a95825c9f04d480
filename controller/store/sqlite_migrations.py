"""The SQLite schema, as an ordered list of migrations. `PRAGMA user_version` records how many
have been applied; append new migrations, never edit applied ones."""

MIGRATIONS: list[str] = [
    # 1: nodes, deployments, the change log (its rowid is the revision) and idempotency keys.
    """
    CREATE TABLE changes (
        revision    INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT    NOT NULL,
        resource_id TEXT    NOT NULL,
        deleted     INTEGER NOT NULL
    );
    CREATE TABLE nodes (
        id       TEXT    PRIMARY KEY,
        revision INTEGER NOT NULL,
        status   TEXT    NOT NULL,
        provider TEXT    NOT NULL,
        region   TEXT    NOT NULL,
        data     TEXT    NOT NULL
    );
    CREATE INDEX nodes_by_status ON nodes (status, id);
    CREATE INDEX nodes_by_provider ON nodes (provider, id);
    CREATE INDEX nodes_by_region ON nodes (region, id);
    CREATE TABLE deployments (
        id       TEXT    PRIMARY KEY,
        revision INTEGER NOT NULL,
        name     TEXT    NOT NULL UNIQUE,
        status   TEXT    NOT NULL,
        data     TEXT    NOT NULL
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
    ALTER TABLE changes ADD COLUMN data TEXT;
    ALTER TABLE changes ADD COLUMN prior_revision INTEGER;
    """,
    # 3: named leases (the leader's), with an epoch that only grows; expires_at in Unix seconds.
    """
    CREATE TABLE leases (
        name       TEXT    PRIMARY KEY,
        holder     TEXT    NOT NULL,
        epoch      INTEGER NOT NULL,
        expires_at REAL    NOT NULL
    );
    """,
    # 4: nodes' last-heartbeat times as `record_heartbeats` records them, one small row each
    # (rewriting every node's document to set them was most of the cost of recording them).
    # Documents keep the time their revision carried; a read returns the newer of the two, so
    # the times stored before this migration stay as they are.
    """
    CREATE TABLE node_heartbeats (
        node_id TEXT PRIMARY KEY,
        time    TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
]
