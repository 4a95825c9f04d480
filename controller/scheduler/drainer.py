"""The leader's side of node drains: which nodes drain (and until when), what each scheduling
pass did on them, and the progress it records on each draining node after the pass (fenced by
the leader's epoch, like the placements): `Node.drain` shows replicas remaining, moved and
stopped, and turns COMPLETE once nothing is left on the node, which stays cordoned. WatchNodes
shows every report, and a node is written only when its report changed. The rules of the moves
are in scheduler/drain.py.

`remaining` and the state are read from the placements each pass, so they are always right.
`moved` and `stopped` are counted here, from each pass's steps, and added to the node's report:
a placement that moved is gone from the deployment once its agent confirmed the stop, so the
store keeps no trace to count them from again. A report refused because another replica changed
the node meanwhile keeps its counts for the next pass. What a leader counted but could not
report when it was deposed (or died) is lost: the next leader does not count those moves, so
`moved` and `stopped` may fall short of what happened (never above it: a deposed leader drops
its counts, whose deployment writes may have been refused too)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from functools import partial

from controller.clock import Clock
from controller.models import Deployment, Node, NodeStatus
from controller.registry.deployments import DeploymentRegistry
from controller.registry.node_updates import draining
from controller.registry.nodes import NodeRegistry
from controller.scheduler import drain
from controller.store.base import Fence


class Drainer:
    """Not thread-safe: owned by the scheduler, on the event loop."""

    def __init__(self, nodes: NodeRegistry, deployments: DeploymentRegistry, clock: Clock) -> None:
        self._nodes = nodes
        self._deployments = deployments
        self._clock = clock
        self.deadlines: dict[str, datetime] = {}  # draining node id -> its drain's deadline
        self._done: dict[str, drain.Moves] = {}  # what passes did since the last report

    def sync(self, nodes: Iterable[Node]) -> None:
        """The draining nodes, from every node (call when the nodes changed)."""
        self.deadlines = {
            n.id: n.drain.deadline for n in nodes if draining(n) and n.drain is not None
        }
        for gone in self._done.keys() - self.deadlines.keys():
            del self._done[gone]

    def observe(self, before: Deployment, after: Deployment) -> None:
        """One reconcile step of a deployment, from `before` to `after`."""
        if not self.deadlines:
            return
        now = self._clock.now()
        for node_id, did in drain.moves(before, after, self.deadlines, now).items():
            self._count(node_id, did)

    def forget(self) -> None:
        """This replica was deposed: what it counted and did not report is dropped (see the
        module's docstring)."""
        self._done.clear()

    async def report(self, fence: Fence | None) -> None:
        """Records each drain's progress on its node (after the pass's placements persisted).
        Raises FencedError if this replica no longer leads."""
        for node_id in list(self.deadlines):
            on_node, waiting, why = drain.remaining(self._deployments.assignments(node_id))
            done = self._done.pop(node_id, drain.Moves())
            report = partial(next_version, on_node, waiting, why, done, self._clock.now())
            if not await self._nodes.record_drain(node_id, report, fence):
                self._count(node_id, done)  # refused: reported with the next pass's

    def _count(self, node_id: str, did: drain.Moves) -> None:
        if did.moved or did.stopped:
            had = self._done.get(node_id, drain.Moves())
            self._done[node_id] = drain.Moves(had.moved + did.moved, had.stopped + did.stopped)


def next_version(
    on_node: int, waiting: int, why: str, done: drain.Moves, now: datetime, node: Node
) -> Node | None:
    """The node with its drain's next report; None if nothing changed or the drain was
    cancelled meanwhile."""
    if not draining(node) or node.drain is None:
        return None
    if node.status is NodeStatus.OFFLINE and now >= node.drain.deadline:
        # Past the deadline no agent confirms the stops: what it ran is replaced as lost, and
        # its agent, if it returns, stops what is in no assignment. The drain is over.
        on_node = waiting = 0
    reported = drain.progress(node.drain, on_node, waiting, done, now, why)
    if reported == node.drain:
        return None
    return replace(node, drain=reported, update_time=now)
