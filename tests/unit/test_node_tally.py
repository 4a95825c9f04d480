"""Fleet totals kept as the index changes equal a walk over every node, after any sequence of
registrations, status changes and deletions."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

from controller.models import Capabilities, Node, NodeStatus, Resources
from controller.registry.index import Index
from controller.registry.node_tally import NodeTally

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def walked(nodes: list[Node]) -> tuple[int, Counter[str], Counter[str], Resources, Resources]:
    total = ready = Resources()
    for node in nodes:
        caps = Resources(
            node.capabilities.cpu_cores, node.capabilities.memory_gb, node.capabilities.disk_gb
        )
        total = total.plus(caps)
        if node.status is NodeStatus.READY:
            ready = ready.plus(caps)
    return (
        len(nodes),
        Counter(n.status.value for n in nodes),
        Counter(n.region for n in nodes),
        total,
        ready,
    )


def test_the_tally_equals_a_walk_after_random_changes() -> None:
    rng = random.Random(7)
    tally = NodeTally()
    index: Index[Node] = Index(lambda n: [("status", n.status.value)], tally.changed)
    for _ in range(2000):
        nodes = list(index.values())
        if nodes and rng.random() < 0.2:
            index.remove(rng.choice(nodes).id)
        elif nodes and rng.random() < 0.5:
            node = rng.choice(nodes)
            index.put(replace(node, status=rng.choice(list(NodeStatus))))
        else:
            index.put(
                Node(
                    id=str(uuid.uuid4()),
                    provider="aws",
                    endpoint="e",
                    region=rng.choice(["a", "b", ""]),
                    capabilities=Capabilities(
                        cpu_cores=rng.choice([0.5, 1.25, 4.0]),
                        memory_gb=rng.choice([0.1, 2.0]),
                        disk_gb=rng.choice([0.0, 10.5]),
                    ),
                    status=rng.choice(list(NodeStatus)),
                    create_time=NOW,
                    update_time=NOW,
                )
            )
    stats = tally.stats(self_suspected=False)
    count, by_status, by_region, total, ready = walked(list(index.values()))
    assert (stats.total, stats.by_status, stats.by_region) == (count, by_status, by_region)
    for got, want in ((stats.total_capacity, total), (stats.ready_capacity, ready)):
        assert abs(got.cpu_cores - want.cpu_cores) < 1e-6
        assert abs(got.memory_gb - want.memory_gb) < 1e-6
        assert abs(got.disk_gb - want.disk_gb) < 1e-6
    assert 0 not in stats.by_status.values()
