"""Spans for store transactions: a `Store` wrapped so that each call (one write transaction or
one read) is a CLIENT span, by the OpenTelemetry conventions for database calls:
`db.system.name` (sqlite, postgresql), `db.operation.name` (the store's method: create,
create_many, update, update_many, delete, get, ...), `db.collection.name` (nodes, deployments,
changes, leases), `db.operation.batch.size` for batches, `error.type` (the exception's class)
when one fails.

A call makes a span only inside a recording span (an RPC's, a scheduler pass's): background
upkeep that runs on its own (lease renewals, the change feed's polls, heartbeat times) would
otherwise each be a trace of one span, several a second. `wait_for_changes` is a wait, not a
transaction, and `open`/`close` run outside any RPC: none of them is traced.

One wrapper for both implementations, installed by `controller.tracing.otel` only when tracing
is on: the stores themselves know nothing of tracing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Generic

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from controller.models import Deployment, Node
from controller.store.base import Change, Fence, Lease, RequestKey, RequestRecord, Store, T, Table


class _Spans:
    """Starts the spans of one store."""

    def __init__(self, tracer: trace.Tracer, system: str) -> None:
        self._tracer = tracer
        self._system = system

    @contextlib.contextmanager
    def span(self, operation: str, collection: str, batch: int = 0) -> Iterator[None]:
        if not trace.get_current_span().is_recording():
            yield
            return
        attributes: dict[str, str | int] = {
            "db.system.name": self._system,
            "db.operation.name": operation,
            "db.collection.name": collection,
        }
        if batch:
            attributes["db.operation.batch.size"] = batch
        with self._tracer.start_as_current_span(
            f"{operation} {collection}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:256]))
                raise


class TracedTable(Generic[T]):
    """`Table` whose calls are spans."""

    def __init__(self, table: Table[T], spans: _Spans, collection: str) -> None:
        self._table: Table[T] = table
        self._spans = spans
        self._collection = collection

    async def get(self, resource_id: str) -> T | None:
        with self._spans.span("get", self._collection):
            return await self._table.get(resource_id)

    async def list_all(self) -> list[T]:
        with self._spans.span("list_all", self._collection):
            return await self._table.list_all()

    async def create(self, resource: T, request: RequestKey | None = None) -> T:
        with self._spans.span("create", self._collection):
            return await self._table.create(resource, request)

    async def create_many(
        self, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        # A group commit runs in the task of the create that started it: its span is a child
        # of that call's span only (the other creates batched into it show none).
        with self._spans.span("create_many", self._collection, batch=len(items)):
            return await self._table.create_many(items)

    async def update(self, resource: T, expect_revision: int) -> T:
        with self._spans.span("update", self._collection):
            return await self._table.update(resource, expect_revision)

    async def update_many(
        self, resources: Sequence[T], fence: Fence | None = None
    ) -> list[T | None]:
        with self._spans.span("update_many", self._collection, batch=len(resources)):
            return await self._table.update_many(resources, fence)

    async def delete(
        self, resource_id: str, expect_revision: int | None = None, fence: Fence | None = None
    ) -> int:
        with self._spans.span("delete", self._collection):
            return await self._table.delete(resource_id, expect_revision, fence)

    async def find_request(self, request_id: str) -> RequestRecord | None:
        with self._spans.span("find_request", "requests"):
            return await self._table.find_request(request_id)


class TracedStore:
    """`Store` whose transactions are spans; `store` does the work."""

    def __init__(self, store: Store, tracer: trace.Tracer, system: str) -> None:
        self.inner = store
        self._spans = _Spans(tracer, system)
        self._nodes = TracedTable[Node](store.nodes, self._spans, "nodes")
        self._deployments = TracedTable[Deployment](store.deployments, self._spans, "deployments")

    @property
    def nodes(self) -> TracedTable[Node]:
        return self._nodes

    @property
    def deployments(self) -> TracedTable[Deployment]:
        return self._deployments

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def revision(self) -> int:
        with self._spans.span("revision", "changes"):
            return await self.inner.revision()

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        with self._spans.span("changes_since", "changes"):
            return await self.inner.changes_since(revision, limit)

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        with self._spans.span("campaign", "leases"):
            return await self.inner.campaign(name, holder, ttl_s)

    async def leases(self, prefix: str) -> list[Lease]:
        with self._spans.span("leases", "leases"):
            return await self.inner.leases(prefix)

    async def wait_for_changes(self, timeout_s: float) -> None:
        await self.inner.wait_for_changes(timeout_s)

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        with self._spans.span("record_heartbeats", "nodes", batch=len(times)):
            await self.inner.record_heartbeats(times)
