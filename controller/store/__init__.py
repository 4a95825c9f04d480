"""Stores persist nodes and deployments. `open_store(url)` picks the implementation by URL scheme;
this is the one place that knows the implementations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from controller.store.base import Store
from controller.store.sealing import RotatingSealer, Sealer

if TYPE_CHECKING:
    from controller.store.reseal import ResealReport

SCHEMES = ("sqlite", "postgresql")


def open_store(url: str, sealer: Sealer | None = None, *, serving: bool = False) -> Store:
    """Builds (does not open) the store for `url`. `serving`: for the controller that serves
    from it (an embedded store then refuses a second one: StoreInUseError on open).

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
        return SQLiteStore(Path(url[len(prefix) :]), sealer, serving=serving)
    if scheme == "postgresql":
        from controller.store.postgres import PostgresStore

        if not urlparse(url).path.strip("/"):
            raise ValueError(
                f"a PostgreSQL store URL names its database: postgresql://host/dbname, not {url!r}"
            )
        return PostgresStore(url, sealer)
    raise ValueError(f"unknown store URL scheme {scheme!r}; supported: {', '.join(SCHEMES)}")


def is_embedded(url: str) -> bool:
    """Whether `url` names a store inside this process (one replica only, keys beside it)."""
    return urlparse(url).scheme == "sqlite"


async def reencrypt_credentials(store: Store, sealer: RotatingSealer) -> ResealReport:
    """Re-encrypts every stored credential with `sealer`'s newest key (see `store/reseal.py`).
    Raises ValueError for a store that cannot."""
    from controller.store.postgres import PostgresStore
    from controller.store.reseal import reseal_postgres, reseal_sqlite
    from controller.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return await reseal_sqlite(store, sealer)
    if isinstance(store, PostgresStore):
        return await reseal_postgres(store, sealer)
    raise ValueError(f"{type(store).__name__} cannot re-encrypt credentials")
