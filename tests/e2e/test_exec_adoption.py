"""A SIGKILLed exec agent's workloads are adopted by its restart (agent/drivers/adoption.py): a real
controller and a real `python -m controller agent --driver exec`; a deployment of 3 replicas
runs a long-lived command that writes to stderr all the time and carries a marker in its argv;
kill -9 the agent (its processes live on, each in its own session, writing to a file); while
it is down the deployment is scaled to 2; restarted with the same state file, the agent adopts
the processes: exactly one process per replica, the very same ones (same pids, so nothing was
started again), and the one whose assignment was removed while the agent was away is stopped."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from automator67.aio import AsyncClient
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import node_pb2

from .controller_process import ControllerProcess
from .test_orchestration import (  # noqa: F401  (fixtures)
    FAST,
    R_RUNNING,
    RUNNING,
    WAIT_S,
    Cluster,
    Env,
    StartAgent,
    current,
    start_agent,
)

# The node only turns SUSPECT while its agent is down: its replicas stay where they are.
SLOW_OFFLINE = (*FAST, "--offline-after-s", "300", "--failover-grace-s", "300")


@pytest_asyncio.fixture
async def patient_cluster(data_dir: Path) -> AsyncIterator[Env]:
    controller = ControllerProcess(data_dir, extra_args=SLOW_OFFLINE, auth=False)
    try:
        controller.start()
        async with AsyncClient(controller.address) as client:
            cluster = Cluster(client)
            try:
                yield client, cluster, controller.address
            finally:
                await cluster.close()
    finally:
        controller.stop()


@pytest.fixture
def marker() -> Iterator[str]:
    """A word in the argv of every workload of the test; they are all killed at teardown."""
    word = f"adoption-{uuid.uuid4().hex[:12]}"
    yield word
    for process in marked(word):
        process.kill()


def marked(word: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if word in (process.info["cmdline"] or []) and process.info["status"] != "zombie":
            found.append(process)
    return found


def placements(word: str) -> dict[str, int]:
    """placement id -> pid of every live marked process."""
    return {p.environ()["A67_PLACEMENT_ID"]: p.pid for p in marked(word)}


async def test_a_restarted_exec_agent_adopts_its_workloads_and_stops_the_unassigned(
    patient_cluster: Env,
    start_agent: StartAgent,  # noqa: F811  (the fixture)
    marker: str,
) -> None:
    client, cluster, address = patient_cluster
    agent = start_agent(address, "exec-0", driver="exec")
    node_id = await agent.node_id()
    # It writes to stderr all along: with stderr a pipe to the agent, the first write after
    # the kill would end it (BrokenPipeError; SIGPIPE for most programs).
    chatty = (
        "import sys, time\n"
        "while True:\n"
        "    print('tick', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.1)"
    )
    command = [sys.executable, "-c", chatty, marker]
    dep = await client.create_deployment(
        dpb.Deployment(
            name="sleepers", command=command, replicas=3, resources=dpb.Resources(cpu_cores=0.1)
        )
    )

    def running(count: int) -> bool:
        d = cluster.deployments.get(dep.id)
        return (
            d is not None
            and d.status == RUNNING
            and sum(r.state == R_RUNNING for r in current(d)) == count == len(current(d))
        )

    await cluster.until("3 replicas RUNNING", lambda: running(3))
    before = placements(marker)
    assert len(before) == 3
    by_index = {r.index: r.placement_id for r in current(cluster.deployments[dep.id])}

    assert await agent.exit_code(signal.SIGKILL) == -signal.SIGKILL
    assert placements(marker) == before  # the workloads outlive their agent
    await cluster.until(
        "the node SUSPECT", lambda: cluster.node_status(node_id) == node_pb2.NODE_STATUS_SUSPECT
    )
    await client.update_deployment(dpb.Deployment(id=dep.id, replicas=2), ["replicas"])
    await cluster.until("replica 2 dropped", lambda: len(current(cluster.deployments[dep.id])) == 2)

    again = start_agent(address, "exec-0", driver="exec")
    adopted = await again.line(lambda line: line.get("msg") == "workloads from before the restart")
    assert (adopted["adopted"], adopted["recorded"]) == (3, 3)
    gone = psutil.Process(before[by_index[2]])
    _, alive = await asyncio.to_thread(psutil.wait_procs, [gone], WAIT_S)
    assert not alive, "the workload whose assignment was removed still runs"
    await cluster.until("2 replicas RUNNING", lambda: running(2))

    kept = {by_index[0]: before[by_index[0]], by_index[1]: before[by_index[1]]}
    assert placements(marker) == kept  # exactly one copy of each, the original processes
    assert again.log is not None
    starts = [line for line in again.log.lines if line.get("msg") == "replica starting"]
    assert starts == []  # nothing was started again
