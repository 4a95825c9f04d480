"""The capacity the scheduler places against, kept between passes and updated by what changed:
a view per node (rebuilt only when its node changed), the resources each deployment's placements
hold on each node, and what is free on each node. A pass takes a `Snapshot` of it (copies of a
list and a dict) instead of rebuilding every view and summing every replica.

It also says what a parked deployment (one a step left unchanged) waits for:
- `grown` counts the changes that may let an unplaced replica fit: a node joined or turned READY
  or changed otherwise, resources were released on a node. A node that leaves READY does not
  count (nothing fits better for it), so the reason an unplaced replica gives may count that
  node under its old status until the next change that counts;
- `drain_changed_nodes()`: the nodes whose status changed or that went away, whose
  deployments (`placed_on`) need a step.

Not thread-safe: owned by the scheduler, on the event loop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from controller.models import Capabilities, Deployment, Node, NodeStatus, ReplicaState, Resources
from controller.registry.replicas import nodes_of
from controller.scheduler.placement import NodeView, Snapshot

FREE_STATES = frozenset(
    {ReplicaState.PENDING, ReplicaState.STOPPED, ReplicaState.EXITED, ReplicaState.FAILED}
)


class Capacity:
    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}  # the node each view was built from
        self._views: list[NodeView] = []  # by id
        self._position: dict[str, int] = {}
        self.status: dict[str, NodeStatus] = {}
        self.free: dict[str, Resources] = {}
        self._held: dict[str, dict[str, Resources]] = defaultdict(dict)  # node -> dep -> used
        self._deployments: dict[str, tuple[Deployment, dict[str, Resources], set[str]]] = {}
        self.placed_on: dict[str, set[str]] = defaultdict(set)  # node -> deployments on it
        self.grown = 0
        self._changed_nodes: set[str] = set()
        self._turned_ready: set[str] = set()

    def snapshot(self) -> Snapshot:
        return Snapshot(self._views, {}, free=self.free)

    def sync_nodes(self, nodes: Iterable[Node]) -> None:
        """Brings the views up to date with `nodes` (every node): O(nodes) identity checks, a
        view rebuilt only for a node that changed."""
        seen: set[str] = set()
        joined = False
        for node in nodes:
            seen.add(node.id)
            if self._nodes.get(node.id) is node:
                continue
            self._nodes[node.id] = node
            view = NodeView(
                node.id,
                node.status,
                node.provider,
                node.region,
                node.labels,
                _of(node),
                not node.unschedulable,
            )
            position = self._position.get(node.id)
            before = self._views[position] if position is not None else None
            if before == view:
                continue
            if before is None:
                joined = True
                self._views.append(view)  # sorted below
            else:
                self._views[position] = view  # type: ignore[index]
                if before.status is not view.status:
                    self._changed_nodes.add(node.id)
            self.status[node.id] = view.status
            ready = view.status is NodeStatus.READY
            if ready and (before is None or before.status is not NodeStatus.READY):
                self._turned_ready.add(node.id)
            if before is None or ready or before.status is view.status:
                self.grown += 1  # joined, READY now, or changed otherwise
            self._refresh_free(node.id)
        gone = self._nodes.keys() - seen
        for node_id in gone:
            del self._nodes[node_id], self.status[node_id], self.free[node_id]
            self._changed_nodes.add(node_id)
        if joined or gone:
            self._views = sorted((v for v in self._views if v.id not in gone), key=_id)
            self._position = {view.id: i for i, view in enumerate(self._views)}

    def sync_deployments(self, deployments: Iterable[Deployment]) -> None:
        """Brings what the placements hold up to date with `deployments` (every deployment)."""
        seen: set[str] = set()
        for dep in deployments:
            seen.add(dep.id)
            self.sync_deployment(dep)
        for gone in self._deployments.keys() - seen:
            self._hold(gone, {}, set())
            del self._deployments[gone]

    def sync_deployment(self, dep: Deployment) -> None:
        known = self._deployments.get(dep.id)
        if known is not None and known[0] is dep:
            return
        held: dict[str, Resources] = {}
        for r in dep.replica_set:
            if r.node_id and r.state not in FREE_STATES:
                held[r.node_id] = held.get(r.node_id, Resources()).plus(dep.resources)
        self._hold(dep.id, held, nodes_of(dep.replica_set))
        self._deployments[dep.id] = (dep, held, nodes_of(dep.replica_set))

    def drain_changed_nodes(self) -> set[str]:
        changed, self._changed_nodes = self._changed_nodes, set()
        return changed

    def drain_turned_ready(self) -> set[str]:
        ready, self._turned_ready = self._turned_ready, set()
        return ready

    def _hold(self, dep_id: str, held: dict[str, Resources], on: set[str]) -> None:
        _, before, was_on = self._deployments.get(dep_id, (None, {}, set()))
        released = False
        for node_id in before.keys() | held.keys():
            old, new = before.get(node_id), held.get(node_id)
            if old == new:
                continue
            if new is None:
                del self._held[node_id][dep_id]
            else:
                self._held[node_id][dep_id] = new
            released = released or _less(new or Resources(), old or Resources())
            self._refresh_free(node_id)
        if released:
            self.grown += 1
        for node_id in was_on - on:
            self.placed_on[node_id].discard(dep_id)
        for node_id in on - was_on:
            self.placed_on[node_id].add(dep_id)

    def _refresh_free(self, node_id: str) -> None:
        position = self._position.get(node_id)
        node = self._nodes.get(node_id)
        if node is None:
            return
        # Summed in deployment order from zero, as a full rebuild would: no drift over time.
        used = Resources()
        for _, amount in sorted(self._held.get(node_id, {}).items()):
            used = used.plus(amount)
        capacity = self._views[position].capacity if position is not None else _of(node)
        self.free[node_id] = Resources(
            capacity.cpu_cores - used.cpu_cores,
            capacity.memory_gb - used.memory_gb,
            capacity.disk_gb - used.disk_gb,
        )


def _of(node: Node) -> Resources:
    caps: Capabilities = node.capabilities
    return Resources(caps.cpu_cores, caps.memory_gb, caps.disk_gb)


def _id(view: NodeView) -> str:
    return view.id


def _less(a: Resources, b: Resources) -> bool:
    return a.cpu_cores < b.cpu_cores or a.memory_gb < b.memory_gb or a.disk_gb < b.disk_gb
