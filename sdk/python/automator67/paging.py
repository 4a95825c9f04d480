"""Iterators over every page of a List call (AIP-158): iterate the pager for the items, or its
`pages()` for the responses. A page is fetched only when the previous one is used up, with the
filter and page size of the first request and the `next_page_token` of the last response.

    for node in client.list_nodes('status = READY'):          # sync
        ...
    async for node in aclient.list_nodes('status = READY'):   # asyncio
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R", bound="_Page")


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


class Pager(Generic[R, T]):
    """The items of every page (sync). `fetch(token)` returns one page; `items(page)` its
    items. Each iteration starts again from `page_token`."""

    def __init__(
        self,
        fetch: Callable[[str], R],
        items: Callable[[R], Sequence[T]],
        page_token: str = "",
    ) -> None:
        self._fetch = fetch
        self._items = items
        self._page_token = page_token

    def pages(self) -> Iterator[R]:
        token = self._page_token
        while True:
            page = self._fetch(token)
            yield page
            token = page.next_page_token
            if not token:
                return

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from self._items(page)


class AsyncPager(Generic[R, T]):
    """The items of every page (asyncio); the same contract as `Pager`."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[R]],
        items: Callable[[R], Sequence[T]],
        page_token: str = "",
    ) -> None:
        self._fetch = fetch
        self._items = items
        self._page_token = page_token

    async def pages(self) -> AsyncIterator[R]:
        token = self._page_token
        while True:
            page = await self._fetch(token)
            yield page
            token = page.next_page_token
            if not token:
                return

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in self._items(page):
                yield item

    async def all(self) -> list[T]:
        """Every item of every page, in a list."""
        return [item async for item in self]
