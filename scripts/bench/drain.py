"""What a node drain costs the scheduler, in process (no server): `--deployments` deployments
of `--replicas` replicas spread over `--nodes` nodes, reconciled pass after pass as the
scheduler loop does (controller.scheduler.reconcile with a capacity snapshot), with agents that
answer at once (what a pass assigns runs by the next one). Then one node is drained and passes
run until nothing is left on it.

Figures: a pass over every deployment with no drain (the floor), passes with the drain active
(each deployment runs drain.step, and those on the node move), the number of passes the drain
took (each replacement must run before its old replica stops: two passes per move at least),
and the per-pass cost of the drain's bookkeeping (drain.moves on every step, drain.remaining
for the node).

    python scripts/bench/drain.py --nodes 1000 --deployments 1000 --replicas 3

Prints a markdown table; `--json` writes the figures."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from controller.models import (
    Deployment,
    DesiredState,
    NodeStatus,
    PlacementStrategy,
    ReplicaState,
    Resources,
    frozen_map,
)
from controller.registry.replicas import Report, apply_report
from controller.scheduler import drain
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import Context, reconcile

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class World:
    def __init__(self, nodes: int, deployments: int, replicas: int) -> None:
        cap = Resources(64, 64, 1000)
        self.nodes = {
            f"n{i:05d}": NodeView(f"n{i:05d}", NodeStatus.READY, "p", "r", frozen_map(), cap)
            for i in range(nodes)
        }
        self.deps = [
            Deployment(
                id=f"d{i:05d}",
                name=f"d{i}",
                create_time=T0,
                update_time=T0,
                image="x",
                resources=Resources(0.5, 0.5, 0),
                replicas=replicas,
            )
            for i in range(deployments)
        ]
        self.now = T0
        self.drains: dict[str, datetime] = {}
        self.rng = random.Random(1)

    def one_pass(self, observe: bool) -> tuple[float, float]:
        """Reconciles every deployment, then lets the agents answer; returns (seconds of the
        reconcile steps, seconds of the drain's bookkeeping)."""
        used: dict[str, Resources] = {}
        for dep in self.deps:
            for r in dep.replica_set:
                if r.node_id and r.state is not ReplicaState.STOPPED:
                    used[r.node_id] = used.get(r.node_id, Resources()).plus(dep.resources)
        ctx = Context(
            now=self.now,
            snapshot=Snapshot(list(self.nodes.values()), used),
            node_status=lambda n: self.nodes[n].status if n in self.nodes else None,
            may_evict=lambda _: True,
            default_strategy=PlacementStrategy.SPREAD,
            rng=self.rng,
            drains=self.drains,
        )
        steps = book = 0.0
        for i, dep in enumerate(self.deps):
            started = time.perf_counter()
            new, _ = reconcile(dep, ctx)
            steps += time.perf_counter() - started
            if observe and self.drains:
                started = time.perf_counter()
                drain.moves(dep, new, self.drains, self.now)
                book += time.perf_counter() - started
            self.deps[i] = self._agents(new)
        if observe:
            for node_id in self.drains:
                started = time.perf_counter()
                drain.remaining(
                    (d, r) for d in self.deps for r in d.replica_set if r.node_id == node_id
                )
                book += time.perf_counter() - started
        self.now += timedelta(seconds=1)
        return steps, book

    def _agents(self, dep: Deployment) -> Deployment:
        for r in dep.replica_set:
            if not r.node_id:
                continue
            state = ReplicaState.RUNNING if r.desired is DesiredState.RUN else ReplicaState.STOPPED
            if r.state is state:
                continue
            report = Report(dep.id, r.index, state, placement_id=r.placement_id)
            dep = apply_report(dep, r.node_id, report, self.now) or dep
        return dep

    def on_node(self, node_id: str) -> int:
        return sum(
            1
            for d in self.deps
            for r in d.replica_set
            if r.node_id == node_id and r.state is not ReplicaState.STOPPED
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5, help="floor passes measured")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    world = World(args.nodes, args.deployments, args.replicas)
    for _ in range(3):  # place and run everything
        world.one_pass(observe=False)
    floor = [world.one_pass(observe=False)[0] for _ in range(args.passes)]
    target = max(world.nodes, key=world.on_node)
    placed = world.on_node(target)
    world.nodes[target] = replace(world.nodes[target], schedulable=False)
    world.drains[target] = world.now + timedelta(hours=1)
    draining: list[float] = []
    bookkeeping: list[float] = []
    while world.on_node(target) and len(draining) < 100:
        steps, book = world.one_pass(observe=True)
        draining.append(steps)
        bookkeeping.append(book)
    figures = {
        "nodes": args.nodes,
        "deployments": args.deployments,
        "replicas": args.replicas,
        "placements_on_drained_node": placed,
        "left_on_node": world.on_node(target),
        "passes_to_drain": len(draining),
        "pass_ms_no_drain_median": round(statistics.median(floor) * 1000, 2),
        "pass_ms_draining_median": round(statistics.median(draining) * 1000, 2),
        "pass_ms_draining_max": round(max(draining) * 1000, 2),
        "bookkeeping_ms_per_pass_median": round(statistics.median(bookkeeping) * 1000, 2),
    }
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
