"""Where a replica goes. Pure: a function of a capacity snapshot and a random generator, no I/O.

The algorithm follows Nomad's: walk the nodes from a random point, keep the feasible ones
(READY and not cordoned, matching the constraints, with the resources free), stop after
`limit` of them (ceil(log2 N), at least 2) that hold no replica of the same deployment, and pick
the best score among all those seen. `spread` scores by how much
stays free (least allocated), `binpack` by how much is used (most allocated); both subtract a
penalty for each replica of the same deployment already on the node (anti-affinity). So one
placement costs O(limit / share of feasible nodes), not O(N), and stays fast on 10,000 nodes.

A snapshot remembers, per kind of ask (resources and constraints), what a long walk learned:
free resources only shrink while a snapshot lives, so a node that did not fit never fits again
in it. A walk that would examine more than `walk_cap` nodes scans every node once instead and
keeps the feasible ones; later asks of the same kind walk only those (in the same order, so the
choice is the same as a full walk's). When nothing fits, the scan's reasons are counted into one
that a human can act on, and every later ask of that kind gets it at once: a deployment of
1,000 replicas that fit nowhere costs one scan of the nodes, not 2,000."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

from controller.models import NodeStatus, PlacementConstraints, PlacementStrategy, Resources

ANTI_AFFINITY_PENALTY = 1.0  # per replica of the same deployment already on the node


@dataclass(frozen=True)
class NodeView:
    """A node as placement sees it."""

    id: str
    status: NodeStatus
    provider: str
    region: str
    labels: Mapping[str, str]
    capacity: Resources
    schedulable: bool = True  # False: cordoned, nothing new goes there


@dataclass(frozen=True)
class Ask:
    """One replica to place."""

    resources: Resources
    constraints: PlacementConstraints
    strategy: PlacementStrategy  # SPREAD or BINPACK (DEFAULT resolved by the caller)
    avoid: frozenset[str] = frozenset()  # nodes it failed on (used only if nothing else fits)


@dataclass(frozen=True)
class NoFit:
    reason: str


AskKind = tuple[Resources, str, str, tuple[tuple[str, str], ...]]


class _Known:
    """What a scan of every node learned about one kind of ask: why each node did not fit (None:
    it fitted then), the positions that fitted, ascending, and the answer once none fits."""

    __slots__ = ("no_fit", "positions", "stale", "whys")

    def __init__(self, whys: list[str | None]) -> None:
        self.whys = whys
        self.positions = [i for i, why in enumerate(whys) if why is None]
        self.stale = 0  # positions found full since the last compaction
        self.no_fit: NoFit | None = None


class Snapshot:
    """Nodes and what is free on each. `take()` books resources, so one snapshot serves a whole
    pass of placements; `collocated` counts a deployment's replicas per node.

    `free` (node id -> free resources), when given, is used instead of computing it from
    `used` (the scheduler keeps it up to date between passes); it is copied."""

    def __init__(
        self,
        nodes: Sequence[NodeView],
        used: Mapping[str, Resources],
        *,
        free: Mapping[str, Resources] | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self._by_id = {node.id: node for node in self.nodes}
        self.free: dict[str, Resources] = (
            dict(free)
            if free is not None
            else {
                node.id: _minus(node.capacity, used.get(node.id, Resources()))
                for node in self.nodes
            }
        )
        self._known: dict[AskKind, _Known] = {}

    def take(self, node_id: str, amount: Resources) -> None:
        self.free[node_id] = _minus(self.free[node_id], amount)

    def node(self, node_id: str) -> NodeView | None:
        return self._by_id.get(node_id)


def sample_limit(feasible_total: int) -> int:
    return max(2, math.ceil(math.log2(max(feasible_total, 2))))


def walk_cap(nodes: int) -> int:
    """How many nodes a walk examines before it scans them all once instead."""
    return max(4 * sample_limit(nodes), nodes // 8)


def place(
    ask: Ask, snapshot: Snapshot, collocated: Counter[str], rng: random.Random
) -> str | NoFit:
    """The id of the node for `ask`, or why none fits. Does not book the resources."""
    nodes = snapshot.nodes
    if not nodes:
        return NoFit("no nodes are registered")
    start = rng.randrange(len(nodes))
    kind = _kind(ask)
    known = snapshot._known.get(kind)
    if known is None:
        seen: dict[int, str | None] = {}
        chosen = _walk(ask, snapshot, collocated, start, seen)
        if chosen is not None:
            return chosen
        known = snapshot._known[kind] = _Known(
            [
                seen[i] if i in seen else _why_not(n, ask, snapshot.free[n.id])
                for i, n in enumerate(nodes)
            ]
        )
        if len(seen) < len(nodes):  # capped: walk the feasible nodes from the same start
            return _walk_known(ask, snapshot, collocated, start, known)
        known.no_fit = NoFit(_describe(ask, Counter(w for w in known.whys if w is not None)))
        return known.no_fit
    return _walk_known(ask, snapshot, collocated, start, known)


def fits(ask: Ask, snapshot: Snapshot, node_id: str) -> bool:
    """Whether `ask` fits on `node_id` now (READY, schedulable, matching, with room), and the
    node is not one it should avoid."""
    node = snapshot.node(node_id)
    if node is None or node_id in ask.avoid:
        return False
    return _why_not(node, ask, snapshot.free[node_id]) is None


def explain(ask: Ask, snapshot: Snapshot) -> str:
    """Why no node fits, counted over every node: e.g. `no READY node in region eu-west-1 with
    4 cpu, 8 GiB memory free: 3 lack cpu, 2 are OFFLINE`."""
    reasons = Counter(
        why for n in snapshot.nodes if (why := _why_not(n, ask, snapshot.free[n.id])) is not None
    )
    return _describe(ask, reasons)


class _Pick:
    """The sample of one walk: the best node seen, and a fallback among the nodes to avoid."""

    def __init__(self, ask: Ask, collocated: Counter[str], limit: int) -> None:
        self.ask, self.collocated, self.limit = ask, collocated, limit
        self.best: tuple[float, str] | None = None
        self.fallback: tuple[float, str] | None = None  # a feasible node the replica failed on
        self.seen = 0

    def offer(self, node: NodeView, free: Resources) -> bool:
        """Considers a feasible node; True once the sample is full."""
        score = _score(self.ask, node, free, self.collocated[node.id])
        if node.id in self.ask.avoid:
            if self.fallback is None or score > self.fallback[0]:
                self.fallback = (score, node.id)
            return False
        if self.best is None or score > self.best[0]:
            self.best = (score, node.id)
        if not self.collocated[node.id]:  # like Nomad, a sibling's node does not use up the sample
            self.seen += 1
        return self.seen >= self.limit

    def chosen(self) -> str | None:
        pick = self.best or self.fallback
        return pick[1] if pick is not None else None


def _walk(
    ask: Ask, snapshot: Snapshot, collocated: Counter[str], start: int, seen: dict[int, str | None]
) -> str | None:
    """A walk over every node from `start`, recording in `seen` why each examined node did not
    fit; stops after `walk_cap` nodes (then `seen` holds fewer than all, and it returns None)."""
    nodes, free = snapshot.nodes, snapshot.free
    pick = _Pick(ask, collocated, sample_limit(len(nodes)))
    cap = walk_cap(len(nodes))
    for i in chain(range(start, len(nodes)), range(start)):
        if len(seen) >= cap:
            return None
        node = nodes[i]
        why = seen[i] = _why_not(node, ask, free[node.id])
        if why is None and pick.offer(node, free[node.id]):
            break
    return pick.chosen()


def _walk_known(
    ask: Ask, snapshot: Snapshot, collocated: Counter[str], start: int, known: _Known
) -> str | NoFit:
    """The same walk over the nodes a scan found feasible (only their free resources may have
    changed since)."""
    if known.no_fit is not None:
        return known.no_fit
    nodes, free, need = snapshot.nodes, snapshot.free, ask.resources
    pick = _Pick(ask, collocated, sample_limit(len(nodes)))
    positions = known.positions
    first = bisect.bisect_left(positions, start)
    order: Iterable[int] = chain(positions[first:], positions[:first])
    for i in order:
        node = nodes[i]
        if _lacks(free[node.id], need) is not None:
            known.stale += 1
            continue
        if pick.offer(node, free[node.id]):
            break
    if known.stale > len(positions) // 2:  # drop the full nodes: they never fit again
        _compact(known, snapshot, need)
    chosen = pick.chosen()
    if chosen is not None:
        return chosen
    for i in known.positions:  # they all filled up: say so, in the nodes' order
        known.whys[i] = _lacks(free[nodes[i].id], need)
    known.no_fit = NoFit(_describe(ask, Counter(w for w in known.whys if w is not None)))
    return known.no_fit


def _compact(known: _Known, snapshot: Snapshot, need: Resources) -> None:
    keep = []
    for i in known.positions:
        why = _lacks(snapshot.free[snapshot.nodes[i].id], need)
        if why is None:
            keep.append(i)
        else:
            known.whys[i] = why
    known.positions, known.stale = keep, 0


def _describe(ask: Ask, reasons: Counter[str]) -> str:
    where = []
    c = ask.constraints
    if c.provider:
        where.append(f"of provider {c.provider}")
    if c.region:
        where.append(f"in region {c.region}")
    if c.labels:
        where.append("with labels " + ",".join(f"{k}={v}" for k, v in c.labels.items()))
    r = ask.resources
    wanted = f"{r.cpu_cores:g} cpu, {r.memory_gb:g} GiB memory, {r.disk_gb:g} GiB disk free"
    counts = ", ".join(f"{n} {why}" for why, n in reasons.most_common())
    return f"no READY node {' '.join(where) + ' ' if where else ''}with {wanted}: {counts}"


def _kind(ask: Ask) -> AskKind:
    c = ask.constraints
    return (ask.resources, c.provider, c.region, tuple(c.labels.items()))


def _why_not(node: NodeView, ask: Ask, free: Resources) -> str | None:
    if node.status is not NodeStatus.READY:
        return f"are {node.status.value}"
    if not node.schedulable:
        return "are cordoned"
    c = ask.constraints
    if c.provider and node.provider != c.provider:
        return "have another provider"
    if c.region and node.region != c.region:
        return "are in another region"
    if any(node.labels.get(k) != v for k, v in c.labels.items()):
        return "lack the labels"
    return _lacks(free, ask.resources)


def _lacks(free: Resources, need: Resources) -> str | None:
    if free.cpu_cores < need.cpu_cores:
        return "lack cpu"
    if free.memory_gb < need.memory_gb:
        return "lack memory"
    if free.disk_gb < need.disk_gb:
        return "lack disk"
    return None


def _score(ask: Ask, node: NodeView, free: Resources, collocated: int) -> float:
    """Higher is better. The share of cpu and memory left after placing, averaged."""
    after = _minus(free, ask.resources)
    cap = node.capacity
    left = (_share(after.cpu_cores, cap.cpu_cores) + _share(after.memory_gb, cap.memory_gb)) / 2
    fit = left if ask.strategy is PlacementStrategy.SPREAD else 1 - left
    return fit - ANTI_AFFINITY_PENALTY * collocated


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def _minus(a: Resources, b: Resources) -> Resources:
    return Resources(a.cpu_cores - b.cpu_cores, a.memory_gb - b.memory_gb, a.disk_gb - b.disk_gb)
