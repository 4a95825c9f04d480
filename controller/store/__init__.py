"""Stores persist nodes and deployments. `open_store(url)` picks the implementation by URL scheme;
this is the one place that knows the implementations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from controller.store.base import Store
from controller.store.sealing import Sealer

SCHEMES = ("sqlite",)


def open_store(url: str, sealer: Sealer | None = None) -> Store:
    """Builds (does not open) the store for `url`.

    `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` (SQLAlchemy's convention: the
    path is what follows `sqlite:///`). Raises ValueError for an unknown scheme or a bad URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from controller.store.sqlite import SQLiteStore

        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(
                f"a SQLite store URL looks like sqlite:///path/to/file.db, not {url!r}"
            )
        return SQLiteStore(Path(url[len(prefix) :]), sealer)
    raise ValueError(f"unknown store URL scheme {scheme!r}; supported: {', '.join(SCHEMES)}")
