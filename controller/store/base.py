"""The store's contract. Every implementation (SQLite, PostgreSQL) passes `tests/contract/`.
The store persists and knows no rules: validation and state transitions belong to the registry.

Revisions: every change (create, update, delete) gets the next value of one monotonic revision
counter, recorded in the change log in the same transaction as the change itself. A resource's
`revision` is the revision of its last change, so it doubles as its etag and as the resume point
of a watch.

Reads never queue behind writes, nor writes behind reads: a store serves them on separate
connections, so a burst of reads (watchers replaying the change log) cannot delay a write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, Protocol, TypeVar

from controller.models import Deployment, Node

ResourceKind = Literal["node", "deployment"]
T = TypeVar("T", Node, Deployment)
T_co = TypeVar("T_co", Node, Deployment, covariant=True)


@dataclass(frozen=True)
class Change:
    """One entry of the change log: `resource_id` of `kind` was put or deleted at `revision`.

    `resource` is the resource as that change left it (for a put, at `revision`) or, for a
    delete, as it was just before (at its last revision): the log alone says what every change
    did. None only for entries written before the log kept documents (schema version 1)."""

    revision: int
    kind: ResourceKind
    resource_id: str
    deleted: bool
    resource: Node | Deployment | None = None


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease, in which epoch (it grows every time the lease changes hands or
    runs out), and for how much longer, by the store's clock when it was read."""

    name: str
    holder: str
    epoch: int
    ttl_left_s: float


@dataclass(frozen=True)
class Fence:
    """Makes a write conditional on `holder` still holding lease `name` in `epoch`, checked in
    the write's own transaction (FencedError otherwise)."""

    name: str
    holder: str
    epoch: int


class StoreInUseError(Exception):
    """Another process holds the embedded store: it has exactly one replica. The message names
    the other process."""


@dataclass(frozen=True)
class RequestKey:
    """An idempotency key (AIP-155) and a fingerprint of the request that first used it."""

    request_id: str
    fingerprint: str


@dataclass(frozen=True)
class RequestRecord:
    """What a request id was first used for."""

    fingerprint: str
    resource_id: str


class Table(Protocol, Generic[T]):
    """The resources of one kind. Every method is a coroutine and safe to call concurrently;
    each write is one atomic transaction, durable before the coroutine returns.

    Returned values are fresh objects the caller may keep; the store keeps no reference to
    arguments."""

    async def get(self, resource_id: str) -> T | None:
        """The resource, or None."""
        ...

    async def list_all(self) -> list[T]:
        """Every resource, ordered by id (used to build in-memory indexes at start-up)."""
        ...

    async def create(self, resource: T, request: RequestKey | None = None) -> T:
        """Stores a new resource and returns it with its new revision.

        With `request`, also records that `request.request_id` created it, atomically.
        Raises AlreadyExistsError if the id, a unique key of the kind (a deployment's name) or
        the request id is taken."""
        ...

    async def create_many(
        self, items: Sequence[tuple[T, RequestKey | None]]
    ) -> list[T | RequestRecord]:
        """Stores new resources in one transaction (a group commit), each with its own
        revision, in order, with its request id when it has one; returns, in order, each stored
        resource with its revision or, for an item whose request id was already used (before,
        or by an earlier item of `items`), that request's record, writing nothing for it.
        Raises AlreadyExistsError if an id or a unique key is taken: then nothing at all is
        written (the transaction is whole or absent)."""
        ...

    async def update(self, resource: T, expect_revision: int) -> T:
        """Replaces the stored resource if its revision still equals `expect_revision` and
        returns it with its new revision. Raises NotFoundError if it does not exist,
        ConflictError if the revision moved on, AlreadyExistsError on a unique-key clash."""
        ...

    async def update_many(
        self, resources: Sequence[T], fence: Fence | None = None
    ) -> list[T | None]:
        """Like `update` for each resource at its own `revision`, all in one transaction; a
        resource that is gone or changed is skipped (None in its place), not an error. With
        `fence`, nothing is written (FencedError) unless the fence's lease is still held."""
        ...

    async def delete(
        self, resource_id: str, expect_revision: int | None = None, fence: Fence | None = None
    ) -> int:
        """Deletes the resource (if `expect_revision` is given, only at that revision) and
        returns the revision of the deletion. Raises NotFoundError or ConflictError, and
        FencedError if `fence`'s lease is no longer held."""
        ...

    async def find_request(self, request_id: str) -> RequestRecord | None:
        """What `request_id` created in this table, or None. Survives deletion of the resource."""
        ...


class Store(Protocol):
    """A durable store: tables for nodes and deployments, one revision counter, a change log."""

    @property
    def nodes(self) -> Table[Node]: ...

    @property
    def deployments(self) -> Table[Deployment]: ...

    async def open(self) -> None:
        """Opens the store: creates it if new and applies pending schema migrations."""
        ...

    async def close(self) -> None:
        """Waits for writes in progress and closes the store. Later calls raise UnavailableError."""
        ...

    async def revision(self) -> int:
        """The revision of the latest change (0 for a new store)."""
        ...

    async def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        """Changes with a revision greater than `revision`, oldest first, at most `limit`: one
        page; the next starts after the last revision returned. Keep pages small (hundreds):
        each is one read, and reads take turns."""
        ...

    async def campaign(self, name: str, holder: str, ttl_s: float) -> Lease:
        """Takes lease `name` for `holder` for `ttl_s` if it is free or has run out, or renews
        it if `holder` holds it; returns the lease as it then is (another holder's if it was
        not taken). The epoch grows whenever the lease changes hands or had run out. Time is
        the store's (one clock for every replica)."""
        ...

    async def leases(self, prefix: str) -> list[Lease]:
        """The leases whose name starts with `prefix` that have not run out, by name."""
        ...

    async def wait_for_changes(self, timeout_s: float) -> None:
        """Returns when another process may have changed the store (PostgreSQL: a notification
        of a committed change), or after `timeout_s`. Changes are then read with
        `changes_since`; a store no other process writes only waits out the timeout."""
        ...

    async def record_heartbeats(self, times: Mapping[str, datetime]) -> None:
        """Stores nodes' last-heartbeat times in one transaction, without a new revision or a
        change-log entry (like etcd's lease renewals, they are not changes watchers see).
        Unknown node ids are ignored.

        The times are kept apart from the nodes' documents (rewriting every document was the
        cost of this call). A node read from `nodes` (`get`, `list_all`) has the newer of the
        time recorded here and the `last_heartbeat_time` its last write carried, so a write
        that carries an older time (a node from memory) does not take the recorded one back.
        The change log holds what each write carried; a delete logs the node as reads last
        returned it. Deleting a node forgets its recorded time: a node created later with the
        same id has none."""
        ...
