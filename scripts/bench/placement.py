"""Placement rate: deployments placed on a simulated fleet, in one process, through the same
pure functions the scheduler runs (`reconcile` -> `place`), with no I/O.

    python scripts/bench/placement.py --nodes 10000 --deployments 1000 --replicas 3

Prints a markdown table: placements per second for the whole pass (snapshot build included),
median, min and max of `--runs` passes."""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import report

from controller.models import (
    Deployment,
    NodeStatus,
    PlacementConstraints,
    PlacementStrategy,
    Resources,
    frozen_map,
)
from controller.scheduler.placement import NodeView, Snapshot
from controller.scheduler.reconcile import Context, reconcile

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")


def fleet(count: int, rng: random.Random) -> list[NodeView]:
    return [
        NodeView(
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            status=NodeStatus.READY if rng.random() > 0.05 else NodeStatus.OFFLINE,
            provider=rng.choice(("render", "fly", "bare-metal")),
            region=rng.choice(REGIONS),
            labels=frozen_map({"tier": rng.choice(("web", "batch", "gpu"))}),
            capacity=Resources(rng.choice((2, 4, 8, 16)), rng.choice((4, 8, 16, 32)), 100),
        )
        for _ in range(count)
    ]


def deployments(count: int, replicas: int, rng: random.Random, now: datetime) -> list[Deployment]:
    result = []
    for i in range(count):
        constrained = rng.random() < 0.3
        result.append(
            Deployment(
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                name=f"app-{i}",
                image="nginx",
                create_time=now,
                update_time=now,
                replicas=replicas,
                resources=Resources(rng.choice((0.25, 0.5, 1.0)), rng.choice((0.5, 1.0, 2.0)), 1),
                constraints=PlacementConstraints(region=rng.choice(REGIONS))
                if constrained
                else PlacementConstraints(),
                strategy=rng.choice((PlacementStrategy.SPREAD, PlacementStrategy.BINPACK)),
            )
        )
    return result


def placement(
    nodes: int, deployments_n: int, replicas: int, runs: int, seed: int = 67
) -> dict[str, Any]:
    """Placements per second over `runs` passes (snapshot build included)."""
    rng = random.Random(seed)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    views = fleet(nodes, rng)
    rates = []
    for _ in range(runs):
        deps = deployments(deployments_n, replicas, rng, now)
        started = time.perf_counter()
        ctx = Context(
            now=now,
            snapshot=Snapshot(views, {}),
            node_status={n.id: n.status for n in views}.get,
            may_evict=lambda _node: True,
            default_strategy=PlacementStrategy.SPREAD,
            rng=rng,
        )
        placed = 0
        for dep in deps:
            new, _ = reconcile(dep, ctx)
            placed += sum(1 for r in new.replica_set if r.node_id)
        rates.append(placed / (time.perf_counter() - started))
    return {
        "nodes": nodes,
        "deployments": deployments_n,
        "replicas_each": replicas,
        "runs": runs,
        "placements_per_s": {k: round(v) for k, v in common.spread(rates).items()},
        "per_run": [round(r) for r in rates],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=1_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=67)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = placement(args.nodes, args.deployments, args.replicas, args.runs, args.seed)
    print(report.placement_table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "placement": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
