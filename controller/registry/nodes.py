"""The node registry: registration, lookup, listing, removal, fleet statistics, and the
liveness of each node as its heartbeat stream reports it.

Liveness transitions change the in-memory node at once (reads are live) and are persisted in
batches by `persist_statuses()`, which the health monitor calls a moment later; last-heartbeat
times are persisted by `persist_heartbeats()` every `heartbeat_persist_interval_s`. So a beat
costs no store write, and a burst of transitions costs one transaction.

Every store write goes through `Collection.write`, together with what follows from it here
(liveness starts or stops tracking the node), so a caller that gives up mid-write never leaves
a node stored but untracked, or deleted but still judged (see registry/collection.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from controller.clock import Clock
from controller.errors import ConflictError, FencedError, NotFoundError
from controller.models import Node, NodeSpec, NodeStatus
from controller.registry.collection import Collection, check_id, etag_of, parse_etag
from controller.registry.events import Event, EventType
from controller.registry.feed import ChangeFeed
from controller.registry.filtering import enum_normalizer
from controller.registry.group_commit import GroupCommit
from controller.registry.idempotency import request_key
from controller.registry.index import Term
from controller.registry.liveness import Liveness, LivenessSettings, Transition
from controller.registry.node_tally import NodeStats, NodeTally
from controller.registry.node_updates import NodeChanges, apply_update
from controller.registry.paging import Page
from controller.registry.validation import validate_node
from controller.store.base import Fence, Store

log = logging.getLogger("controller.nodes")
R = TypeVar("R")

FILTER_FIELDS = {
    "status": enum_normalizer("NODE_STATUS_", [s.value for s in NodeStatus]),
    "provider": None,
    "region": None,
    "labels.*": None,
}


def _terms(node: Node) -> Iterable[Term]:
    yield ("status", node.status.value)
    yield ("provider", node.provider)
    yield ("region", node.region)
    for key, value in node.labels.items():
        yield (f"labels.{key}", value)


class Replicas(Protocol):
    """What the node registry needs to know of the replicas (`registry/leadership.py`)."""

    @property
    def replica_id(self) -> str: ...

    @property
    def leading(self) -> bool: ...

    @property
    def live_replicas(self) -> frozenset[str]: ...

    def fence(self) -> Fence | None:
        """The leader's fence; None when not leading."""
        ...


class NodeRegistry:
    """Owns the nodes. Call `load()` once before serving."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        liveness: LivenessSettings | None = None,
        feed: ChangeFeed | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        # Which nodes this replica judges (README "Running several replicas"); None: the only
        # replica, which judges every node.
        self._replicas = replicas
        self._streaming: set[str] = set()  # nodes whose heartbeat stream is open here
        self._view: tuple[bool, frozenset[str]] | None = None  # (leading, live) last considered
        # Called with a node whose stream another replica took over (end it here).
        self.on_released: list[Callable[[str, str], None]] = []
        self._clock = clock
        self._store = store
        self._tally = NodeTally()
        self._nodes = Collection[Node](
            "node",
            store.nodes,
            _terms,
            FILTER_FIELDS,
            feed or ChangeFeed(store),
            self._tally.changed,
        )
        self._nodes.on_applied.append(self._applied)
        # Registrations share transactions (a fleet joining at once: registry/group_commit.py).
        self._creates = GroupCommit(self._nodes)
        self.liveness = Liveness(liveness or LivenessSettings(), clock)
        self.events = self._nodes.events
        # Set when transitions wait to be persisted, to wake the health monitor.
        self.transitions_pending = asyncio.Event()
        # Called after every status transition (the scheduler's wake-up).
        # Called with the old and the new status of every transition, after it is staged.
        self.on_transition: list[Callable[[NodeStatus, NodeStatus], None]] = []

    async def load(self) -> None:
        revision = await self._store.revision()
        await self._nodes.load()
        for node in self._nodes.index.values():
            if self._judges(node):
                self.liveness.track(node.id, node.status, restored=True)
        self._nodes.feed.start_at(revision)
        await self._nodes.feed.caught_up()

    def _judges(self, node: Node) -> bool:
        """Whether this replica judges the node's liveness: it holds its stream (or held it
        last), or it leads and the node's holder is gone (not alive, or never was)."""
        r = self._replicas
        if r is None or node.id in self._streaming or node.holder == r.replica_id:
            return True
        return r.leading and node.holder not in r.live_replicas

    def _applied(self, event: Event[Node]) -> None:
        """Liveness tracks the nodes this replica judges, as the log changes them: a new one
        from its status, a deleted one no more; a node whose stream another replica took over
        is released here."""
        node = event.resource
        if event.type is EventType.DELETED:
            self._streaming.discard(node.id)
            self.liveness.forget(node.id)
            return
        me = self._replicas.replica_id if self._replicas is not None else ""
        previous = event.previous
        moved = previous is not None and previous.holder != node.holder
        if moved and node.holder not in ("", me) and node.id in self._streaming:
            self._streaming.discard(node.id)
            for listener in self.on_released:
                listener(node.id, node.holder)
        self._track_if_judged(node, restored=previous is not None)

    def reconsider(self) -> None:
        """Who is alive or leads changed (or may have): track the nodes this replica judges
        now, giving those it takes over the failover grace, and forget the others."""
        r = self._replicas
        if r is None or self._view == (r.leading, r.live_replicas):
            return
        self._view = (r.leading, r.live_replicas)
        for node in self._nodes.index.values():
            self._track_if_judged(node, restored=True)

    def _track_if_judged(self, node: Node, *, restored: bool) -> None:
        """Liveness tracks `node` if and only if this replica judges it; one newly judged
        starts `restored` (with the failover grace) when it may have been alive elsewhere."""
        judged = self._judges(node)
        tracked = self.liveness.status(node.id) is not None
        if judged and not tracked:
            self.liveness.track(node.id, node.status, restored=restored)
        elif tracked and not judged:
            self.liveness.forget(node.id)

    @property
    def revision(self) -> int:
        return self._nodes.revision

    def snapshot_of(self, node_id: str) -> Node | None:
        """The node with its live heartbeat time, or None; no validation (for watch replay)."""
        node = self._nodes.index.get(node_id)
        return self._live(self._nodes.published(node)) if node is not None else None

    def snapshot(self) -> list[Node]:
        """Every node as last persisted, with live heartbeat times, ordered by id (watchers)."""
        return [self._live(self._nodes.published(node)) for node in self._nodes.index.query([])]

    def latest(self) -> list[Node]:
        """Every node with its staged status changes, ordered by id (for the scheduler)."""
        return list(self._nodes.index.query([]))

    async def register(self, spec: NodeSpec, request_id: str = "") -> Node:
        validate_node(spec)
        assert spec.capabilities is not None  # validated

        def build() -> Node:
            now = self._clock.now()
            assert spec.capabilities is not None
            return Node(
                id=str(uuid.uuid4()),
                provider=spec.provider,
                endpoint=spec.endpoint,
                region=spec.region,
                capabilities=spec.capabilities,
                labels=spec.labels,
                credentials=spec.credentials,
                create_time=now,
                update_time=now,
            )

        key = request_key(request_id, spec)

        return await self._creates.create(build, key)

    def get(self, node_id: str) -> Node:
        return self._live(self._nodes.get(node_id, "node_id"))

    def list(self, filter_text: str = "", page_size: int = 0, page_token: str = "") -> Page[Node]:
        page = self._nodes.list(filter_text, page_size, page_token)
        return Page([self._live(node) for node in page.items], page.next_page_token)

    def derived(self, node: Node, make: Callable[[Node], R]) -> R:
        """`make(node)` for a node as `get` or `list` returned it, computed once per change of
        the node (its encoded message, say); `make` must not read `last_heartbeat_time`, which
        moves with every beat (see `Index.derived`)."""
        return self._nodes.index.derived(node, make)

    async def delete(self, node_id: str, etag: str = "") -> None:
        check_id(node_id, "node_id")
        expect = parse_etag(etag)

        await self._nodes.write(lambda: self._nodes.delete_locked(node_id, expect))

    async def update(
        self, node_id: str, changes: NodeChanges, paths: Sequence[str], etag: str = ""
    ) -> Node:
        """Changes the fields named in `paths` (an update mask; rules in node_updates.py)."""
        check_id(node_id, "node.id")
        expect = parse_etag(etag)

        async def update_locked() -> Node:
            current = self._nodes.latest(node_id, "node.id")
            if expect is not None and expect != current.revision:
                raise ConflictError(
                    f"node {node_id!r} changed since etag {etag} (now {current.revision})",
                    metadata={"current_etag": etag_of(current.revision)},
                )
            updated = apply_update(current, changes, paths, self._clock.now())
            if updated is not current:
                self._nodes.stage(updated)
                await self._nodes.persist_locked(must_write=node_id, which=node_id.__eq__)
            return self.get(node_id)

        return await self._nodes.write(update_locked)

    async def record_drain(
        self, node_id: str, progress: Callable[[Node], Node | None], fence: Fence | None
    ) -> bool:
        """The leader's report of a drain: `progress` makes the node's next version from its
        latest (None: no change); written fenced by the leader's epoch. A change made meanwhile
        elsewhere wins: then returns False, and the next pass reports again. True if there was
        nothing to write or it was written."""

        async def record_locked() -> bool:
            current = self._nodes.index.get(node_id)
            updated = progress(current) if current is not None else None
            if updated is None or updated == current:
                return True
            self._nodes.stage(updated)
            return await self._nodes.persist_locked(fence=fence, which=node_id.__eq__) > 0

        return await self._nodes.write(record_locked)

    async def settle(self) -> None:
        """Returns once every write begun so far is whole, including those whose callers left."""
        await self._nodes.settle()

    # Liveness, reported by the heartbeat stream

    def stream_opened(self, node_id: str) -> Node:
        """The node's agent opened a stream here: this replica holds it now (staged, persisted
        with the next statuses; another replica that held it ends its stream when it follows
        that). Raises NotFoundError for an unknown node."""
        node = self._nodes.latest(node_id, "hello.node_id")
        self._streaming.add(node_id)
        self._claim(node)
        if self.liveness.status(node_id) is None:
            self.liveness.track(node_id, node.status)
        self._apply(self.liveness.connected(node_id))
        return self._live(self._nodes.latest(node_id, "hello.node_id"))

    def beat(self, node_id: str) -> None:
        """A beat arrived. Raises NotFoundError if the node was deleted meanwhile."""
        node = self._nodes.index.get(node_id)
        if node is None or self.liveness.status(node_id) is None:
            raise NotFoundError("node", node_id)
        self._claim(node)  # again, if another replica's write overtook ours
        self._apply(self.liveness.beat(node_id))

    def stream_closed(self, node_id: str, reason: str, *, planned: bool = False) -> None:
        self._streaming.discard(node_id)
        self._apply(self.liveness.disconnected(node_id, reason, planned=planned))

    def _claim(self, node: Node) -> None:
        r = self._replicas
        if r is not None and node.holder != r.replica_id:
            self._nodes.stage(replace(node, holder=r.replica_id))
            self.transitions_pending.set()

    def sweep(self) -> None:
        """Applies liveness deadlines that have passed."""
        for transition in self.liveness.sweep():
            self._apply(transition)

    async def persist_statuses(self) -> int:
        """Persists staged statuses and claims: those of the nodes this replica holds (or
        streams) as they are; those it judges only because it leads (their replica died),
        fenced by its epoch, since marking them is the leader's alone."""
        r = self._replicas
        if r is None:
            return await self._nodes.persist()
        written = await self._nodes.persist(which=self._held)
        fence = r.fence()
        if fence is None:
            return written  # a leader's judgements, staged by a leader no more: not written
        try:
            return written + await self._nodes.persist(fence, lambda i: not self._held(i))
        except FencedError as exc:  # deposed meanwhile: the new leader judges them
            log.info("a deposed leader's node statuses were not written: %s", exc)
            return written

    def _held(self, node_id: str) -> bool:
        r = self._replicas
        node = self._nodes.index.get(node_id)
        return (
            r is None
            or node_id in self._streaming
            or (node is not None and node.holder == r.replica_id)
        )

    async def persist_heartbeats(self) -> None:
        beats = self.liveness.drain_beats()
        # Not exclusive: heartbeat times have no revision and nothing in memory follows them.
        await self._nodes.write(lambda: self._store.record_heartbeats(beats), exclusive=False)

    def _apply(self, transition: Transition | None) -> None:
        if transition is None:
            return
        node = self._nodes.index.get(transition.node_id)
        if node is None:
            return
        log.info(
            "node status changed",
            extra={
                "fields": {
                    "node_id": node.id,
                    "from": node.status.value,
                    "to": transition.status.value,
                    "reason": transition.reason,
                }
            },
        )
        now = self._clock.now()
        seen = self.liveness.last_seen(node.id) or node.last_heartbeat_time
        self._nodes.stage(
            replace(node, status=transition.status, update_time=now, last_heartbeat_time=seen)
        )
        self.transitions_pending.set()
        for listener in self.on_transition:
            listener(node.status, transition.status)

    def _live(self, node: Node) -> Node:
        seen = self.liveness.last_seen(node.id)
        if seen is None or seen == node.last_heartbeat_time:
            return node
        return replace(node, last_heartbeat_time=seen)

    @property
    def draining(self) -> int:
        """How many nodes are being drained, kept as the index changes."""
        return self._tally.draining

    def stats(self) -> NodeStats:
        """Counts and capacities of every node (with its staged status), kept as the index
        changes: no walk over the fleet."""
        return self._tally.stats(self.liveness.self_suspected)
