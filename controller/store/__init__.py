"""Stores persist nodes and deployments. `open_store(url)` picks the implementation by URL scheme;
this is the one place that knows the implementations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from controller.store.base import Store
from controller.store.sealing import Sealer

SCHEMES = ("sqlite", "postgresql")


def open_store(url: str, sealer: Sealer | None = None) -> Store:
    """Builds (does not open) the store for `url`.

    `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` (SQLAlchemy's convention: the
    path is what follows `sqlite:///`), or `postgresql://user:password@host:port/dbname?options`
    (any libpq connection URL; the database must exist). Raises ValueError for an unknown scheme
    or a bad URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from controller.store.sqlite import SQLiteStore

        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(
                f"a SQLite store URL looks like sqlite:///path/to/file.db, not {url!r}"
            )
        return SQLiteStore(Path(url[len(prefix) :]), sealer)
    if scheme == "postgresql":
        from controller.store.postgres import PostgresStore

        if not urlparse(url).path.strip("/"):
            raise ValueError(
                f"a PostgreSQL store URL names its database: postgresql://host/dbname, not {url!r}"
            )
        return PostgresStore(url, sealer)
    raise ValueError(f"unknown store URL scheme {scheme!r}; supported: {', '.join(SCHEMES)}")
