"""Fixtures of the store contract suite (`controller/store/base.py`).

Every test runs once per store implementation listed in `STORE_URLS`; tests that take `kind` run
once per resource kind as well."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
import pytest_asyncio

from controller.errors import UnavailableError
from controller.models import (
    Capabilities,
    Deployment,
    DeploymentStatus,
    Node,
    NodeStatus,
    frozen_map,
)
from controller.store import open_store
from controller.store.base import ResourceKind, Store, Table

from . import postgres_server

# The store implementations under test, each with the URL of a new, empty store in a test's
# temporary directory. Testing another implementation is one more line here.
STORE_URLS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'a67.db'}",
    "postgres": lambda tmp_path: postgres_server.database_url(),
}

CREATE_TIME = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
UPDATE_TIME = datetime(2025, 1, 2, 4, 5, 6, 789012, tzinfo=UTC)
LATER_TIME = datetime(2025, 1, 3, 5, 6, 7, 890123, tzinfo=UTC)

Reopen = Callable[[], Awaitable[Store]]


def new_node() -> Node:
    """A node that was never stored, with a fresh id."""
    return Node(
        id=str(uuid.uuid4()),
        provider="aws",
        endpoint="10.0.0.7:7070",
        region="us-east-1",
        capabilities=Capabilities(cpu_cores=4.0, memory_gb=16.0),
        create_time=CREATE_TIME,
        update_time=UPDATE_TIME,
    )


def new_deployment() -> Deployment:
    """A deployment that was never stored, with a fresh id and a name of its own."""
    deployment_id = str(uuid.uuid4())
    return Deployment(
        id=deployment_id,
        name=f"web-{deployment_id}",
        create_time=CREATE_TIME,
        update_time=UPDATE_TIME,
        image="nginx:1.27",
    )


R = TypeVar("R", Node, Deployment)


@dataclass(frozen=True)
class Kind(Generic[R]):
    """What the generic tests need to know about one kind of resource."""

    name: ResourceKind
    table: Callable[[Store], Table[R]]
    new: Callable[[], R]
    changed: Callable[[R], R]  # the same resource with some fields changed


NODES = Kind[Node](
    name="node",
    table=lambda store: store.nodes,
    new=new_node,
    changed=lambda node: replace(
        node,
        status=NodeStatus.READY,
        labels=frozen_map({"zone": "b"}),
        last_heartbeat_time=LATER_TIME,
        update_time=LATER_TIME,
    ),
)

DEPLOYMENTS = Kind[Deployment](
    name="deployment",
    table=lambda store: store.deployments,
    new=new_deployment,
    changed=lambda deployment: replace(
        deployment,
        image="nginx:1.28",
        replicas=deployment.replicas + 1,
        status=DeploymentStatus.SCHEDULED,
        update_time=LATER_TIME,
    ),
)


@pytest.fixture(params=[NODES, DEPLOYMENTS], ids=lambda kind: kind.name)
def kind(request: pytest.FixtureRequest) -> Kind[Any]:
    """Each kind of resource in turn."""
    result: Kind[Any] = request.param
    return result


class OpenStores:
    """Opens stores on one URL, one at a time; whichever is open is closed at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.current: Store | None = None

    async def open(self) -> Store:
        store = open_store(self.url)
        await store.open()
        self.current = store
        return store

    async def reopen(self) -> Store:
        await self.close()
        return await self.open()

    async def close(self) -> None:
        if self.current is not None:
            # The test may have closed it already; closing again may then raise this.
            with contextlib.suppress(UnavailableError):
                await self.current.close()


@pytest.fixture(scope="session", autouse=True)
def postgres_session() -> Iterator[None]:
    """Stops the PostgreSQL server at the end of the session, if a test started one."""
    yield
    postgres_server.stop()


@pytest.fixture(params=sorted(STORE_URLS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store of each implementation in turn."""
    return STORE_URLS[request.param](tmp_path)


@pytest_asyncio.fixture
async def stores(store_url: str) -> AsyncIterator[OpenStores]:
    stores = OpenStores(store_url)
    yield stores
    await stores.close()


@pytest_asyncio.fixture
async def store(stores: OpenStores) -> Store:
    """An open, empty store."""
    return await stores.open()


@pytest.fixture
def reopen(store: Store, stores: OpenStores) -> Reopen:
    """Closes the store and returns a newly opened one on the same URL (a restart)."""
    return stores.reopen
