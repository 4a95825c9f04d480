"""An in-memory index of one kind of resource, kept equal to the store by the registry.

Each resource is filed under index terms such as ("status", "READY") or ("labels.zone", "a").
A query is a conjunction of terms; it walks the smallest matching posting list in id order, so
listing by a field never scans every resource. Not thread-safe: owned by the event loop."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from controller.models import Deployment, Node

T = TypeVar("T", Node, Deployment)
Term = tuple[str, str]


class Index(Generic[T]):
    def __init__(
        self,
        terms_of: Callable[[T], Iterable[Term]],
        on_change: Callable[[T | None, T | None], None] | None = None,
    ) -> None:
        """`on_change(old, new)` is called on every put (old may be None) and remove (new is
        None): running totals follow the index with it."""
        self._terms_of: Callable[[T], Iterable[Term]] = terms_of
        self._on_change: Callable[[T | None, T | None], None] | None = on_change
        self._by_id: dict[str, T] = {}
        self._ids: list[str] = []  # sorted
        self._postings: dict[Term, list[str]] = {}  # each sorted

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, resource_id: str) -> T | None:
        return self._by_id.get(resource_id)

    def values(self) -> Iterable[T]:
        return self._by_id.values()

    def put(self, resource: T) -> None:
        self.remove(resource.id)
        self._by_id[resource.id] = resource
        bisect.insort(self._ids, resource.id)
        for term in set(self._terms_of(resource)):
            bisect.insort(self._postings.setdefault(term, []), resource.id)
        if self._on_change is not None:
            self._on_change(None, resource)

    def remove(self, resource_id: str) -> None:
        old = self._by_id.pop(resource_id, None)
        if old is None:
            return
        _discard(self._ids, resource_id)
        for term in set(self._terms_of(old)):
            posting = self._postings[term]
            _discard(posting, resource_id)
            if not posting:
                del self._postings[term]
        if self._on_change is not None:
            self._on_change(old, None)

    def query(self, terms: list[Term], after_id: str = "") -> Iterator[T]:
        """Resources matching every term, in id order, with id > `after_id`."""
        if terms:
            postings = [self._postings.get(term, []) for term in terms]
            ids = min(postings, key=len)
        else:
            ids = self._ids
        wanted = set(terms)
        for i in range(bisect.bisect_right(ids, after_id), len(ids)):
            resource = self._by_id[ids[i]]
            if len(wanted) <= 1 or wanted <= set(self._terms_of(resource)):
                yield resource


def _discard(ids: list[str], resource_id: str) -> None:
    i = bisect.bisect_left(ids, resource_id)
    if i < len(ids) and ids[i] == resource_id:
        del ids[i]
