"""The change log as the registry hands it to watchers: the changes since a revision, page by
page, so that the API layer never reaches into the store.

Fairness: each page is one short read on the store's readers, which serve callers first come,
first served; a replay therefore takes its turn again after every page instead of holding a
reader (or, worse, the writer) for the whole log. A replay that is not consumed (its client does
not read) stops asking for pages, so it costs at most one page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from controller.store.base import Change

__all__ = ["PAGE_SIZE", "Change", "ChangeLog", "ChangeSource"]

PAGE_SIZE = 500  # changes per read: ~1 ms of a reader thread


class ChangeSource(Protocol):
    """The part of `controller.store.base.Store` a change log reads."""

    async def revision(self) -> int: ...

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]: ...


class ChangeLog:
    """Read access to the store's change log. Safe to share between watchers."""

    def __init__(self, store: ChangeSource, page_size: int = PAGE_SIZE) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._store: ChangeSource = store
        self._page_size = page_size

    async def revision(self) -> int:
        """The store's latest revision (0 for a new store)."""
        return await self._store.revision()

    async def pages(self, after: int, until: int) -> AsyncIterator[list[Change]]:
        """The changes with `after < revision <= until`, oldest first, in pages of at most
        `page_size` (none empty). The next page is read only when the caller asks for it."""
        while after < until:
            page = await self._store.changes_since(after, self._page_size)
            if not page:
                return
            cut = [change for change in page if change.revision <= until]
            if cut:
                yield cut
            if len(cut) < len(page) or len(page) < self._page_size:
                return
            after = page[-1].revision
