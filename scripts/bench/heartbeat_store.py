"""Heartbeat times in the store: `Store.record_heartbeats` of every node of a fleet (what the
controller does every `heartbeat_persist_interval_s`), and the start-up load of that fleet
(open, then `nodes.list_all()`), on SQLite and on PostgreSQL, for two source trees side by side.

    python scripts/bench/heartbeat_store.py --nodes 50000 --runs 5 --before /tmp/old-tree

`--before` is a folder holding another version's `controller/` package (for example
`git archive <commit> controller | tar -x -C /tmp/old-tree`); without it only this tree is
measured. Each (tree, store) pair is one worker process that fills a new store with `--nodes`
READY nodes through the store's contract (one transaction per 5,000), records one heartbeat
for each, then waits for commands: the driver alternates the trees run by run (which goes first
alternates too), so a change in the machine's load hits both alike. Medians of `--runs`.

PostgreSQL is the tests' own launcher (`tests/contract/postgres_server.py`: a server of its own,
with fsync off, so the figures are CPU and I/O, not disk flushes); `--stores sqlite` skips it.
SQLite runs as the controller runs it (WAL, synchronous=FULL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BATCH = 5000  # nodes per transaction when filling the store


async def worker(url: str, count: int) -> None:
    """Fills a store at `url`, then answers commands read from stdin, one JSON line each:
    `beat` (record a new time for every node) and `load` (reopen, list every node)."""
    from controller.models import Capabilities, Node, NodeStatus
    from controller.store import open_store

    store = open_store(url)
    await store.open()
    now = datetime.now(UTC)
    ids: list[str] = []
    for first in range(0, count, BATCH):
        batch = [
            Node(
                id=str(uuid.uuid4()),
                provider=("fly", "aws", "gcp", "hetzner")[i % 4],
                endpoint=f"https://sim-{i}.bench.invalid",
                region=("us-east-1", "eu-west-1", "ap-south-1")[(i // 3) % 3],
                capabilities=Capabilities(cpu_cores=4, memory_gb=8, disk_gb=50),
                create_time=now,
                update_time=now,
                labels={"tier": ("web", "batch", "db")[(i // 12) % 3]},
                status=NodeStatus.READY,
                last_heartbeat_time=now,
            )
            for i in range(first, min(count, first + BATCH))
        ]
        await store.nodes.create_many([(node, None) for node in batch])
        ids.extend(node.id for node in batch)
    beats = 0

    async def beat() -> dict[str, float]:
        nonlocal beats
        beats += 1
        time_ = now + timedelta(seconds=beats)
        times = {node_id: time_ for node_id in ids}  # as liveness hands them: a dict
        wall, cpu = time.perf_counter(), time.process_time()
        await store.record_heartbeats(times)
        return {
            "ms": (time.perf_counter() - wall) * 1e3,
            "cpu_ms": (time.process_time() - cpu) * 1e3,
        }

    await beat()  # every node has a recorded time, as in a running fleet
    print(json.dumps({"ready": True, "controller": __import__("controller").__file__}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = line.strip()
        if command == "beat":
            result = await beat()
        elif command == "load":
            await store.close()
            wall = time.perf_counter()
            store = open_store(url)
            await store.open()
            opened = time.perf_counter()
            nodes = await store.nodes.list_all()
            loaded = time.perf_counter()
            assert len(nodes) == count and nodes[0].last_heartbeat_time == now + timedelta(
                seconds=beats
            ), "the load did not return the last recorded time"
            result = {"ms": (loaded - wall) * 1e3, "list_ms": (loaded - opened) * 1e3}
        else:
            break
        print(json.dumps(result), flush=True)
    await store.close()


class Worker:
    def __init__(self, tree: Path, url: str, count: int, label: str) -> None:
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", url, "--nodes", str(count)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._reply()
        expected = (tree / "controller" / "__init__.py").resolve()
        assert Path(ready["controller"]).resolve() == expected, f"{label}: imported {ready}"

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} ended early")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def compare(trees: dict[str, Path], store: str, url_for: Any, count: int, runs: int) -> Any:
    """Per tree, per command: the medians (and every run) of `runs` alternated runs."""
    workers: dict[str, Worker] = {}
    try:
        for label, tree in trees.items():
            started = time.perf_counter()
            workers[label] = Worker(tree, url_for(label), count, f"{label}/{store}")
            log(
                f"{store}: {label}: {count:,} nodes filled in {time.perf_counter() - started:.0f} s"
            )
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            label: {"beat": [], "load": []} for label in trees
        }
        for run in range(runs):
            order = list(trees) if run % 2 == 0 else list(reversed(trees))
            for command in ("beat", "load"):
                for label in order:
                    results[label][command].append(workers[label].ask(command))
            log(
                f"{store}: run {run + 1}/{runs}: "
                + ", ".join(
                    f"{label} beat {r['beat'][-1]['ms']:.0f} ms load {r['load'][-1]['ms']:.0f} ms"
                    for label, r in results.items()
                )
            )
    finally:
        for w in workers.values():
            w.stop()
    return {
        label: {
            command: {key: round(statistics.median(r[key] for r in rows), 1) for key in rows[0]}
            | {"runs_ms": [round(r["ms"], 1) for r in rows]}
            for command, rows in by_command.items()
        }
        for label, by_command in results.items()
    }


def log(message: str) -> None:
    print(f"[heartbeat_store] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=50000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another tree's root (holding controller/)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(worker(args.worker, args.nodes))
        return 0

    root = Path(__file__).resolve().parents[2]
    trees = {"after": root}
    if args.before:
        trees = {"before": args.before.resolve(), "after": root}
    result: dict[str, Any] = {"nodes": args.nodes, "runs": args.runs}
    result["load_average_start"] = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="a67-hb-") as tmp:
        for store in args.stores.split(","):
            if store == "sqlite":
                result[store] = compare(
                    trees, store, lambda label: f"sqlite:///{tmp}/{label}.db", args.nodes, args.runs
                )
            elif store == "postgres":
                sys.path.insert(0, str(root))
                from tests.contract import postgres_server  # the tests' PostgreSQL launcher

                try:
                    result[store] = compare(
                        trees,
                        store,
                        lambda _label: postgres_server.database_url(),
                        args.nodes,
                        args.runs,
                    )
                finally:
                    postgres_server.stop()
    result["load_average_end"] = os.getloadavg()
    for store in args.stores.split(","):
        for label, by_command in result[store].items():
            for command, figures in by_command.items():
                print(f"{store:9} {label:7} {command:5} {json.dumps(figures)}")
        if "before" in result[store]:
            for command in ("beat", "load"):
                before = result[store]["before"][command]["ms"]
                after = result[store]["after"][command]["ms"]
                print(f"{store:9} {command:5} after/before = {after / before:.2f}")
    print(f"load average: start {result['load_average_start']}, end {result['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
