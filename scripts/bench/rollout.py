"""What a rolling update costs the scheduler, in process (no server): `--deployments`
deployments of `--replicas` replicas on `--nodes` nodes, reconciled pass after pass as the
scheduler loop does (controller.scheduler.reconcile), with agents that answer at once (what a
pass assigns runs, healthy, by the next one). Then every deployment's image changes at once and
passes run until every rollout completed.

Figures: a pass over every deployment with nothing rolling out (the floor: a settled
deployment's step skips the rollout's bookkeeping, `rollout.settled`; wall and CPU time, as a
busy machine's wall time includes other processes' share), passes while every deployment rolls
out, and the passes the rollouts took (a replacement must be available before its old replica
stops, so at least two passes per batch of max_surge + max_unavailable replicas).

Idle pass, 1000 x 4 on 1000 nodes, CPU median: ~20 ms with advance/account on every step
(cde57d7), ~12-14 ms with `settled` (floor without any rollout code ~11-12 ms; loaded machine).

    python scripts/bench/rollout.py --nodes 1000 --deployments 1000 --replicas 4

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
    Health,
    IntOrPercent,
    NodeStatus,
    PlacementStrategy,
    ReplicaState,
    Resources,
    RolloutOutcome,
    UpdateStrategy,
    frozen_map,
)
from controller.registry import rollouts
from controller.registry.replicas import Report, apply_report
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import Context, reconcile

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class World:
    def __init__(self, nodes: int, deployments: int, replicas: int, strategy: UpdateStrategy):
        cap = Resources(64, 64, 1000)
        self.nodes = {
            f"n{i:05d}": NodeView(f"n{i:05d}", NodeStatus.READY, "p", "r", frozen_map(), cap)
            for i in range(nodes)
        }
        self.deps = [
            rollouts.first(
                Deployment(
                    id=f"d{i:05d}",
                    name=f"d{i}",
                    create_time=T0,
                    update_time=T0,
                    image="v1",
                    resources=Resources(0.5, 0.5, 0),
                    replicas=replicas,
                    update_strategy=strategy,
                ),
                T0,
            )
            for i in range(deployments)
        ]
        self.now = T0
        self.rng = random.Random(1)
        self.cpu: list[float] = []

    def one_pass(self) -> float:
        """Reconciles every deployment, then lets the agents answer; returns the seconds of
        the reconcile steps (wall; their CPU seconds are added to `self.cpu`)."""
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
        )
        spent = cpu = 0.0
        for i, dep in enumerate(self.deps):
            started, started_cpu = time.perf_counter(), time.thread_time()
            new, _ = reconcile(dep, ctx)
            spent += time.perf_counter() - started
            cpu += time.thread_time() - started_cpu
            self.deps[i] = self._agents(new)
        self.now += timedelta(seconds=1)
        self.cpu.append(cpu)
        return spent

    def _agents(self, dep: Deployment) -> Deployment:
        for r in dep.replica_set:
            if not r.node_id:
                continue
            state = ReplicaState.RUNNING if r.desired is DesiredState.RUN else ReplicaState.STOPPED
            if r.state is state:
                continue
            report = Report(
                dep.id, r.index, state, "", r.placement_id, r.generation, Health.UNSPECIFIED
            )
            dep = apply_report(dep, r.node_id, report, self.now) or dep
        return dep

    def update_all(self) -> None:
        for i, dep in enumerate(self.deps):
            changed = replace(dep, image="v2", generation=dep.generation + 1)
            self.deps[i] = rollouts.begin(changed, changed.template, self.now)

    def rolling(self) -> int:
        return sum(1 for d in self.deps if d.rollouts[-1].outcome is not RolloutOutcome.COMPLETE)


def parse(value: str) -> IntOrPercent:
    if value.endswith("%"):
        return IntOrPercent(int(value[:-1]), percent=True)
    return IntOrPercent(int(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--max-surge", default="25%")
    parser.add_argument("--max-unavailable", default="25%")
    parser.add_argument("--passes", type=int, default=5, help="floor passes measured")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    strategy = UpdateStrategy(parse(args.max_unavailable), parse(args.max_surge))
    world = World(args.nodes, args.deployments, args.replicas, strategy)
    for _ in range(4):  # place and run everything; the first rollouts complete
        world.one_pass()
    floor = [world.one_pass() for _ in range(args.passes)]
    floor_cpu = world.cpu[-args.passes :]
    world.update_all()
    rolling: list[float] = []
    while world.rolling() and len(rolling) < 200:
        rolling.append(world.one_pass())
    figures = {
        "nodes": args.nodes,
        "deployments": args.deployments,
        "replicas": args.replicas,
        "max_surge": args.max_surge,
        "max_unavailable": args.max_unavailable,
        "still_rolling": world.rolling(),
        "passes_to_complete": len(rolling),
        "pass_ms_idle_median": round(statistics.median(floor) * 1000, 2),
        # CPU time: what a busy machine's wall time hides (other processes' share)
        "pass_cpu_ms_idle_median": round(statistics.median(floor_cpu) * 1000, 2),
        "pass_ms_rolling_median": round(statistics.median(rolling) * 1000, 2),
        "pass_ms_rolling_max": round(max(rolling) * 1000, 2),
        "us_per_deployment_idle": round(statistics.median(floor) / args.deployments * 1e6, 1),
    }
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
