"""The node registry: registration, lookup, listing, removal and fleet statistics."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.clock import Clock
from controller.models import Node, NodeSpec, NodeStatus, Resources
from controller.registry.collection import Collection
from controller.registry.filtering import enum_normalizer
from controller.registry.idempotency import request_key
from controller.registry.index import Term
from controller.registry.paging import Page
from controller.registry.validation import validate_node
from controller.store.base import Store

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


@dataclass(frozen=True)
class NodeStats:
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_provider: Counter[str] = field(default_factory=Counter)
    by_region: Counter[str] = field(default_factory=Counter)
    total_capacity: Resources = field(default_factory=Resources)
    ready_capacity: Resources = field(default_factory=Resources)


class NodeRegistry:
    """Owns the nodes. Call `load()` once before serving."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._clock = clock
        self._nodes = Collection[Node]("node", store.nodes, _terms, FILTER_FIELDS)

    async def load(self) -> None:
        await self._nodes.load()

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

        return await self._nodes.create(build, request_key(request_id, spec), _no_check)

    def get(self, node_id: str) -> Node:
        return self._nodes.get(node_id, "node_id")

    def list(self, filter_text: str = "", page_size: int = 0, page_token: str = "") -> Page[Node]:
        return self._nodes.list(filter_text, page_size, page_token)

    async def delete(self, node_id: str, etag: str = "") -> None:
        await self._nodes.delete(node_id, etag, "node_id")

    def stats(self) -> NodeStats:
        by_status: Counter[str] = Counter()
        by_provider: Counter[str] = Counter()
        by_region: Counter[str] = Counter()
        total = ready = Resources()
        for node in self._nodes.index.values():
            by_status[node.status.value] += 1
            by_provider[node.provider] += 1
            by_region[node.region] += 1
            caps = node.capabilities
            offered = Resources(caps.cpu_cores, caps.memory_gb, caps.disk_gb)
            total = total.plus(offered)
            if node.status is NodeStatus.READY:
                ready = ready.plus(offered)
        return NodeStats(len(self._nodes.index), by_status, by_provider, by_region, total, ready)


async def _no_check() -> None:
    return None
