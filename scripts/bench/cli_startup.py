"""The operator CLI's wall time: exec of the installed `automator67` console script to its exit,
for `--help` (no connection) and for reads against a controller holding `--nodes` nodes and
`--deployments` deployments, median (min-max) of `--runs`, run in turn so that a burst of load
hits every command alike. The floor: `python -c pass` and `python -c "import grpc"` with the
same interpreter, measured the same way.

    python scripts/bench/cli_startup.py --runs 20 --nodes 100 --deployments 20
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import common
from automator67 import Client
from automator67.v1 import deployment_pb2, node_pb2

SCRIPT = Path(sys.executable).with_name("automator67")


def commands() -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import grpc'": [sys.executable, "-c", "import grpc"],
        "automator67 --help": [str(SCRIPT), "--help"],
        "automator67 nodes list": [str(SCRIPT), "nodes", "list"],
        "automator67 nodes list -o json": [str(SCRIPT), "nodes", "list", "-o", "json"],
        "automator67 deployments list": [str(SCRIPT), "deployments", "list"],
        "automator67 status": [str(SCRIPT), "status"],
    }


def fill(server: common.Server, nodes: int, deployments: int) -> None:
    with Client(server.address, token=server.token) as client:
        for i in range(nodes):
            caps = node_pb2.Capabilities(cpu_cores=4, memory_gb=8)
            client.register_node(
                node_pb2.Node(provider="bench", endpoint=f"n{i}", capabilities=caps)
            )
        for i in range(deployments):
            client.create_deployment(deployment_pb2.Deployment(name=f"d{i}", image="x"))


def measure(server: common.Server, runs: int) -> dict[str, dict[str, float]]:
    env = {
        **common.controller_env("warning"),
        "A67_ADDR": server.address,
        "A67_TOKEN": server.token,
    }
    times: dict[str, list[float]] = {name: [] for name in commands()}
    for _ in range(runs):
        for name, argv in commands().items():
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, timeout=120)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.decode()[-500:]}")
            times[name].append(elapsed_ms)
    return {name: common.spread(values) for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=20)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    with common.workdir("cli") as work, common.controller(work) as server:
        fill(server, args.nodes, args.deployments)
        load_before = common.load_average()
        results = measure(server, args.runs)
    rows = [[name, common.fmt(figures, 0)] for name, figures in results.items()]
    print(
        f"{args.runs} runs, {args.nodes} nodes, {args.deployments} deployments; "
        f"load average {load_before} before"
    )
    print(common.markdown_table(["command", "wall ms, median (min-max)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
