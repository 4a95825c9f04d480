"""Deployments run by real agents: a real controller process with fast liveness and real
`python -m controller agent` processes, observed only through WatchNodes and WatchDeployments.

Every wait is for an event, with a timeout; nothing sleeps. A `Cluster` follows both watches
and checks, on every deployment event, that a replica never has more placements than the
deployment asks for."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from automator67.aio import AsyncClient
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns

from .controller_process import ROOT, ControllerProcess, LogLine, ServerLog, controller_env

# Beats every 0.25 s; SUSPECT after 2 s without one (at once when a stream breaks), OFFLINE
# after 3 s: fast, and still far above what a loaded 2-core machine delays a beat by (a node
# that flaps SUSPECT while a deployment is placed would rightly get no replica). Lost replicas
# are replaced at once.
FAST = (
    *("--heartbeat-interval-s", "0.25"),
    *("--suspect-after-s", "2"),
    *("--offline-after-s", "3"),
    *("--failover-grace-s", "3"),
    *("--eviction-rate-per-s", "100"),
    # Only an agent's report stops a replica of a deleted deployment within a test.
    *("--stop-timeout-s", "60"),
)
WAIT_S = 20.0  # the longest wait for one step; a healthy run takes a second or two
READY = node_pb2.NODE_STATUS_READY
OFFLINE = node_pb2.NODE_STATUS_OFFLINE
RUNNING = dpb.DEPLOYMENT_STATUS_RUNNING
PENDING = dpb.DEPLOYMENT_STATUS_PENDING
STOPPING = dpb.DEPLOYMENT_STATUS_STOPPING
R_RUNNING = dpb.REPLICA_STATE_RUNNING
R_STOPPED = dpb.REPLICA_STATE_STOPPED
R_LOST = dpb.REPLICA_STATE_LOST


class AgentProcess:
    """`python -m controller agent` with its own state file; its JSON log lines are collected."""

    def __init__(
        self, address: str, state_file: Path, driver: str, cpu_cores: float, name: str
    ) -> None:
        self.name = name
        self.command = [
            *(sys.executable, "-m", "controller", "agent"),
            *("--controller", address, "--state-file", str(state_file)),
            *("--driver", driver, "--endpoint", name),
            *("--cpu-cores", f"{cpu_cores:g}", "--memory-gb", "4", "--disk-gb", "10"),
            *("--backoff-base-s", "0.2", "--backoff-max-s", "1"),
        ]
        self.process: subprocess.Popen[str] | None = None
        self.log: ServerLog | None = None

    def start(self) -> AgentProcess:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=controller_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ServerLog(self.process.stderr)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def line(self, predicate: Callable[[LogLine], bool]) -> LogLine:
        assert self.log is not None
        return await asyncio.to_thread(self.log.wait_for, predicate, WAIT_S)

    async def node_id(self) -> str:
        """The node this agent runs as, from its "registered" or "reusing node" line."""
        line = await self.line(lambda line: line.get("msg") in ("registered", "reusing node"))
        return str(line["node_id"])

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def exit_code(self, sig: signal.Signals) -> int:
        """Sends `sig`; the exit code, once the process exited."""
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.to_thread(self.process.wait, WAIT_S)
        assert self.log is not None
        await asyncio.to_thread(self.log.join, WAIT_S)
        return code

    def stop(self) -> None:
        """Teardown: if the process still runs, resumes it and asks it to stop (it stops its
        workloads), kills it if it does not; then kills any workload left behind."""
        if self.process is None:
            return
        children: list[psutil.Process] = []
        if self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.process.pid).children()
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT_S)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if self.process.stderr is not None:
            self.process.stderr.close()


StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """`start_agent(address, name, driver="simulated", cpu_cores=2)`: an agent whose state file
    is named for `name`, so a restart under that name is the same node. Killed at teardown."""
    started: list[AgentProcess] = []

    def start(
        address: str, name: str, driver: str = "simulated", cpu_cores: float = 2
    ) -> AgentProcess:
        state_file = tmp_path / "agents" / f"{name}.json"
        agent = AgentProcess(address, state_file, driver, cpu_cores, name)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.stop()


def current(dep: dpb.Deployment) -> list[dpb.Replica]:
    return [r for r in dep.replica_statuses if not r.superseded]


def running_current(dep: dpb.Deployment) -> list[dpb.Replica]:
    return [r for r in current(dep) if r.state == R_RUNNING]


def show(dep: dpb.Deployment) -> str:
    """One line of a deployment for failure messages: status, then each placement."""
    replicas = [
        f"{r.index}@{r.node_id[:8] or '-'}:{dpb.ReplicaState.Name(r.state)[14:]}"
        f"{'(superseded)' if r.superseded else ''} {r.message!r}"
        for r in dep.replica_statuses
    ]
    status = dpb.DeploymentStatus.Name(dep.status)[18:]
    return f"{dep.name} {status} {dep.status_reason!r}: {'; '.join(replicas)}"


class Cluster:
    """The nodes and deployments as the two watches show them, kept up to date by background
    tasks. `until()` waits for a condition on them. `violations` collects every deployment
    event that had more current placements, or more RUNNING placements, than replicas."""

    def __init__(self, client: AsyncClient) -> None:
        self.nodes: dict[str, node_pb2.Node] = {}
        self.deployments: dict[str, dpb.Deployment] = {}
        self.deleted: dict[str, dpb.Deployment] = {}
        self.statuses: dict[str, list[int]] = {}  # every status each deployment was seen in
        self.transitions: list[str] = []  # every node status change, for failure messages
        self.violations: list[str] = []
        self._synced = {"nodes": False, "deployments": False}
        self._news = asyncio.Event()
        self._node_watch = client.watch_nodes()
        self._deployment_watch = client.watch_deployments()
        self._tasks = [
            asyncio.ensure_future(self._follow_nodes()),
            asyncio.ensure_future(self._follow_deployments()),
        ]

    async def close(self) -> None:
        self._node_watch.cancel()
        self._deployment_watch.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def until(self, what: str, ready: Callable[[], bool], wait_s: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(wait_s):
                while not (all(self._synced.values()) and ready()):
                    for task in self._tasks:
                        if task.done():
                            raise AssertionError(f"a watch ended: {task!r}")
                    news = asyncio.ensure_future(self._news.wait())
                    await asyncio.wait((news, *self._tasks), return_when=asyncio.FIRST_COMPLETED)
                    news.cancel()
        except TimeoutError:
            raise AssertionError(
                f"waited {wait_s}s for {what}; nodes: {self._show_nodes()} after "
                f"{self.transitions}; deployments: {[show(d) for d in self.deployments.values()]}"
            ) from None

    def node_status(self, node_id: str) -> int:
        node = self.nodes.get(node_id)
        return node.status if node is not None else node_pb2.NODE_STATUS_UNSPECIFIED

    def _show_nodes(self) -> dict[str, str]:
        return {n.id[:8]: node_pb2.NodeStatus.Name(n.status)[12:] for n in self.nodes.values()}

    def notify(self) -> None:
        """Wakes `until`'s waiters to check again: for conditions that read state the cluster's
        watches do not bring (a test's own sampler)."""
        self._notify()

    def _notify(self) -> None:
        # Wakes every waiter; later waiters wait on a fresh event.
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _follow_nodes(self) -> None:
        async for event in self._node_watch:
            if event.type in (
                ns.NODE_EVENT_TYPE_ADDED,
                ns.NODE_EVENT_TYPE_CHANGED,
                ns.NODE_EVENT_TYPE_STATUS_CHANGED,
            ):
                self.nodes[event.node.id] = event.node
                if event.type == ns.NODE_EVENT_TYPE_STATUS_CHANGED:
                    status = node_pb2.NodeStatus.Name(event.node.status)[12:]
                    self.transitions.append(f"{event.node.id[:8]}->{status}")
            elif event.type == ns.NODE_EVENT_TYPE_DELETED:
                self.nodes.pop(event.node.id, None)
            elif event.type == ns.NODE_EVENT_TYPE_SYNCED:
                self._synced["nodes"] = True
            self._notify()

    async def _follow_deployments(self) -> None:
        async for event in self._deployment_watch:
            dep = event.deployment
            if event.type in (ds.DEPLOYMENT_EVENT_TYPE_ADDED, ds.DEPLOYMENT_EVENT_TYPE_CHANGED):
                self.deployments[dep.id] = dep
                self.statuses.setdefault(dep.id, []).append(dep.status)
                self._check(dep)
            elif event.type == ds.DEPLOYMENT_EVENT_TYPE_DELETED:
                self.deployments.pop(dep.id, None)
                self.deleted[dep.id] = dep
            elif event.type == ds.DEPLOYMENT_EVENT_TYPE_SYNCED:
                self._synced["deployments"] = True
            self._notify()

    def _check(self, dep: dpb.Deployment) -> None:
        """One current placement per replica at most; RUNNING ones at most `replicas +
        max_surge` (a rolling update or a drain runs a replacement beside the replica it
        replaces, within the surge)."""
        placed = len(current(dep))
        running = sum(r.state == R_RUNNING for r in dep.replica_statuses)
        if placed > dep.replicas or running > dep.replicas + max_surge(dep):
            self.violations.append(
                f"{placed} current and {running} RUNNING placements of {dep.replicas} "
                f"replicas (max surge {max_surge(dep)}): {list(dep.replica_statuses)}"
            )


def max_surge(dep: dpb.Deployment) -> int:
    """The update strategy's max_surge as a count: a percentage of the replicas rounded up,
    as Kubernetes does (the server fills in the default, 25%)."""
    surge = dep.update_strategy.max_surge
    if surge.HasField("percent"):
        return math.ceil(dep.replicas * int(surge.percent.rstrip("%")) / 100)
    return surge.count


@pytest_asyncio.fixture
async def cluster_client(data_dir: Path) -> AsyncIterator[tuple[AsyncClient, Cluster, str]]:
    """A fast controller, a client of it, and a `Cluster` following it. Authentication is off:
    what is tested here is orchestration, and the agent is not given a token."""
    controller = ControllerProcess(data_dir, extra_args=FAST, auth=False)
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


Env = tuple[AsyncClient, Cluster, str]


async def start_fleet(
    env: Env, start_agent: StartAgent, count: int, **options: object
) -> dict[str, AgentProcess]:
    """Starts `count` agents; returns them by node id once every node is READY."""
    _, cluster, address = env
    agents = [start_agent(address, f"agent-{i}", **options) for i in range(count)]
    by_node = {await agent.node_id(): agent for agent in agents}
    await cluster.until(
        f"{count} READY nodes", lambda: all(cluster.node_status(n) == READY for n in by_node)
    )
    return by_node


def web() -> dpb.Deployment:
    """Three replicas of 1 cpu and 1 GiB each."""
    return dpb.Deployment(
        name="web",
        image="nginx:1.27",
        replicas=3,
        resources=dpb.Resources(cpu_cores=1, memory_gb=1),
    )


def sleepers(agent: AgentProcess) -> list[psutil.Process]:
    """The agent's children that run the sleeper's command."""
    children = psutil.Process(agent.pid).children()
    return [p for p in children if "time.sleep(60)" in " ".join(p.cmdline())]


def spread_and_running(dep: dpb.Deployment | None, nodes: int = 3) -> bool:
    if dep is None or dep.status != RUNNING:
        return False
    running = running_current(dep)
    return len(running) == dep.replicas and len({r.node_id for r in running}) == nodes


async def test_a_deployment_spreads_moves_off_a_dead_node_and_stops_when_deleted(
    cluster_client: Env, start_agent: StartAgent
) -> None:
    client, cluster, address = cluster_client
    agents = await start_fleet(cluster_client, start_agent, 3)

    # Three replicas of 1 cpu on three nodes of 2 cpu: spread puts one on each.
    dep_id = (await client.create_deployment(web())).id
    await cluster.until(
        "3 replicas RUNNING on 3 nodes",
        lambda: spread_and_running(cluster.deployments.get(dep_id)),
    )

    # SIGKILL one agent: once its node is OFFLINE, its replica is placed on another node.
    victim = current(cluster.deployments[dep_id])[0].node_id
    assert await agents[victim].exit_code(signal.SIGKILL) == -signal.SIGKILL
    await cluster.until("the node OFFLINE", lambda: cluster.node_status(victim) == OFFLINE)

    def replaced() -> bool:
        dep = cluster.deployments[dep_id]
        return spread_and_running(dep, nodes=2) and victim not in {r.node_id for r in current(dep)}

    await cluster.until("3 RUNNING replicas on the 2 nodes left", replaced)

    # The agent comes back as the same node; nothing of the deployment runs on it any more.
    again = start_agent(address, agents[victim].name)
    assert await again.node_id() == victim
    await cluster.until("the node READY again", lambda: cluster.node_status(victim) == READY)

    def settled() -> bool:
        dep = cluster.deployments[dep_id]
        on_victim = [r for r in dep.replica_statuses if r.node_id == victim]
        return replaced() and all(r.state == R_STOPPED for r in on_victim)

    await cluster.until("no replica left on the returned node", settled)
    assert len(running_current(cluster.deployments[dep_id])) == 3

    # Delete: STOPPING, every agent reports its replica STOPPED, then the deployment is gone.
    await client.delete_deployment(dep_id)
    await cluster.until("the deployment removed", lambda: dep_id in cluster.deleted)
    last = cluster.deleted[dep_id]
    assert STOPPING in cluster.statuses[dep_id]
    assert [r.state for r in last.replica_statuses] == [R_STOPPED] * 3
    assert cluster.violations == []


async def test_a_paused_node_that_returns_has_its_duplicate_stopped_by_its_agent(
    cluster_client: Env, start_agent: StartAgent
) -> None:
    # SIGSTOP is a partition that heals: the agent keeps its stream and its replica, and when
    # it resumes it learns from its new assignments that the replica now runs elsewhere.
    client, cluster, _ = cluster_client
    agents = await start_fleet(cluster_client, start_agent, 3)
    dep_id = (await client.create_deployment(web())).id
    await cluster.until(
        "3 replicas RUNNING on 3 nodes",
        lambda: spread_and_running(cluster.deployments.get(dep_id)),
    )
    paused = current(cluster.deployments[dep_id])[0]
    agent = agents[paused.node_id]

    agent.send(signal.SIGSTOP)
    await cluster.until("the node OFFLINE", lambda: cluster.node_status(paused.node_id) == OFFLINE)

    def replaced() -> bool:
        dep = cluster.deployments[dep_id]
        return spread_and_running(dep, nodes=2) and paused.node_id not in {
            r.node_id for r in dep.replica_statuses
        }

    await cluster.until("the replica RUNNING on another node", replaced)

    agent.send(signal.SIGCONT)
    await cluster.until("the node READY", lambda: cluster.node_status(paused.node_id) == READY)
    stopping = await agent.line(
        lambda line: (
            line.get("msg") == "replica stopping"
            and (line.get("deployment_id"), line.get("replica_index")) == (dep_id, paused.index)
        )
    )
    assert stopping["reason"] == "no longer assigned"
    assert replaced()
    assert cluster.violations == []


class NotRestored(AssertionError):
    """The step that checks a returning node kept its replica."""


async def test_a_paused_node_that_returns_before_its_replica_could_move_keeps_it(
    cluster_client: Env, start_agent: StartAgent
) -> None:
    # One cpu per node, one replica per node: a replica lost with its node has nowhere to go.
    client, cluster, _ = cluster_client
    agents = await start_fleet(cluster_client, start_agent, 3, cpu_cores=1)
    dep_id = (await client.create_deployment(web())).id
    await cluster.until(
        "3 replicas RUNNING on 3 nodes",
        lambda: spread_and_running(cluster.deployments.get(dep_id)),
    )
    paused = current(cluster.deployments[dep_id])[0]
    agent = agents[paused.node_id]

    agent.send(signal.SIGSTOP)

    def lost_and_unplaceable() -> bool:
        dep = cluster.deployments[dep_id]
        lost = [r for r in dep.replica_statuses if r.superseded and r.state == R_LOST]
        return dep.status == PENDING and [r.node_id for r in lost] == [paused.node_id]

    await cluster.until("the replica LOST with nowhere to go", lost_and_unplaceable)

    agent.send(signal.SIGCONT)
    await cluster.until("the node READY", lambda: cluster.node_status(paused.node_id) == READY)
    try:
        await cluster.until(
            "the original placement kept and the deployment RUNNING",
            lambda: (
                spread_and_running(cluster.deployments[dep_id])
                and not any(r.superseded for r in cluster.deployments[dep_id].replica_statuses)
            ),
            wait_s=10,  # a beat and a scheduling pass, when it works
        )
    except AssertionError as error:
        raise NotRestored(str(error)) from None
    assert cluster.violations == []


async def test_the_exec_driver_runs_commands_reports_failures_and_stops_them_on_sigterm(
    cluster_client: Env, start_agent: StartAgent
) -> None:
    client, cluster, _ = cluster_client
    [agent] = (await start_fleet(cluster_client, start_agent, 1, driver="exec")).values()
    small = dpb.Resources(cpu_cores=0.5, memory_gb=0.5)
    sleeper = await client.create_deployment(
        dpb.Deployment(
            name="sleeper",
            command=["python3", "-c", "import time; time.sleep(60)"],
            replicas=1,
            resources=small,
        )
    )
    crasher = await client.create_deployment(
        dpb.Deployment(name="crasher", command=["false"], replicas=1, resources=small)
    )

    await cluster.until(
        "the sleeper RUNNING",
        lambda: (
            cluster.deployments[sleeper.id].status == RUNNING
            and len(running_current(cluster.deployments[sleeper.id])) == 1
        ),
    )
    [child] = sleepers(agent)

    def failed_and_backing_off() -> bool:
        [replica] = current(cluster.deployments[crasher.id])
        return replica.failures >= 1 and "exit code 1" in replica.message

    await cluster.until("the crasher FAILED and backing off", failed_and_backing_off)
    assert cluster.deployments[crasher.id].status != RUNNING

    # A new template (here its env) is rolled out: a new placement starts beside the old
    # process (a surge of one), which is stopped once the new one runs.
    started = await agent.line(
        lambda line: line.get("msg") == "replica starting" and line["deployment_id"] == sleeper.id
    )
    update = dpb.Deployment(id=sleeper.id, env={"VERSION": "2"})
    await client.update_deployment(update, ["env"])
    await agent.line(
        lambda line: (
            line.get("msg") == "replica state"
            and line.get("deployment_id") == sleeper.id
            and line.get("state") == "RUNNING"
            and line.get("etag") != started["etag"]
        )
    )
    await agent.line(
        lambda line: (
            line.get("msg") == "replica stopping"
            and line.get("deployment_id") == sleeper.id
            and line.get("placement_id") == started.get("placement_id")
        )
    )
    psutil.wait_procs([child], timeout=60)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    [child] = sleepers(agent)
    assert child.environ()["VERSION"] == "2"

    # SIGTERM: the agent stops its processes before it exits.
    assert await agent.exit_code(signal.SIGTERM) == 0
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert agent.log is not None
    assert [line["count"] for line in agent.log.lines if line.get("msg") == "replicas stopped"]
    assert cluster.violations == []
