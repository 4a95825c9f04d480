"""Fixtures of the unit suite: a fake clock and a real, empty SQLite store in a temporary folder.

The store is real because it is fast (one small file) and its contract is tested on its own in
`tests/contract/`; the registries are tested here on top of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from controller.clock import FakeClock
from controller.store import open_store
from controller.store.base import Store


@pytest.fixture
def clock() -> FakeClock:
    """A clock at 2026-01-01T00:00:00Z that moves only when a test advances it."""
    return FakeClock()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/s.db"


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open, empty store, closed after the test."""
    opened = open_store(store_url)
    await opened.open()
    yield opened
    await opened.close()
