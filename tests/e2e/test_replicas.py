"""Three controller replicas on one real PostgreSQL, with a real agent: any replica answers and
sees every write; one leads (GetNodeStats says which); a deployment created on one replica is
placed by the leader and assigned to the agent streaming to another; kill -9 the leader and a
new one leads within the lease, with no node marked OFFLINE and nothing placed twice; a leader
frozen past its lease (SIGSTOP) steps down when it wakes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from automator67.v1 import deployment_pb2, node_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import deployment_service_pb2_grpc as dsg
from automator67.v1 import node_service_pb2 as npb
from automator67.v1 import node_service_pb2_grpc as nsg

from ..contract import postgres_server
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, LogLine, ServerLog, controller_env
from .seed import seed_node
from .test_postgres_store import provision_keys

pytestmark = pytest.mark.skipif(
    postgres_server.unavailable_reason() is not None,
    reason=str(postgres_server.unavailable_reason()),
)

LEASE_S = 1.5  # a dead leader is replaced within LEASE_S * 4/3
WAIT_S = 20.0
TIMING = [
    *("--heartbeat-interval-s", "0.2", "--suspect-after-s", "1", "--offline-after-s", "3"),
    *("--failover-grace-s", "8", "--shutdown-grace-s", "1", "--leader-lease-s", f"{LEASE_S}"),
]
READY = node_pb2.NODE_STATUS_READY
RUNNING = deployment_pb2.DEPLOYMENT_STATUS_RUNNING


@pytest.fixture(scope="module")
def postgres_module() -> Iterator[None]:
    yield
    postgres_server.stop()


class Cluster:
    def __init__(self, replicas: list[ControllerProcess]) -> None:
        self.replicas = replicas

    def by_id(self, replica_id: str) -> ControllerProcess:
        return self.replicas[int(replica_id[1:]) - 1]

    async def stats(self, replica: ControllerProcess) -> npb.GetNodeStatsResponse:
        async with open_channel(replica.address) as channel:
            return await nsg.NodeServiceStub(channel).GetNodeStats(npb.GetNodeStatsRequest())

    async def leader(
        self, among: list[ControllerProcess] | None = None, other_than: str = ""
    ) -> str:
        """The replica that leads, once every replica in `among` agrees on one other than
        `other_than` (waits for it)."""
        among = among or self.replicas

        async def agreed() -> str:
            while True:
                leaders = {(await self.stats(r)).leader_id for r in among}
                if len(leaders) == 1 and not leaders & {"", other_than}:
                    return leaders.pop()
                await asyncio.sleep(0.1)  # the lease's own clock: nothing to be woken by

        return await asyncio.wait_for(agreed(), WAIT_S)


@pytest_asyncio.fixture
async def cluster(
    start_controller: StartController, data_dir: Path, postgres_module: None
) -> AsyncIterator[Cluster]:
    url = postgres_server.database_url()
    provision_keys(data_dir)  # shared by the three, as an operator provisions them
    replicas = [
        start_controller(extra_args=[*TIMING, "--store-url", url, "--replica-id", f"r{i}"])
        for i in (1, 2, 3)
    ]
    yield Cluster(replicas)


class Agent:
    """`automator67 agent` streaming to one replica, with the simulated driver."""

    def __init__(self, address: str, token: str, state_file: Path) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "controller", "agent", "--controller", address),
                *("--state-file", str(state_file), "--endpoint", "agent-1"),
                *("--cpu-cores", "4", "--memory-gb", "4", "--disk-gb", "10"),
                *("--backoff-base-s", "0.2", "--backoff-max-s", "1"),
            ],
            cwd=ROOT,
            env=controller_env(A67_AGENT_TOKEN=token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ServerLog(self.process.stderr)

    async def line(self, predicate: Callable[[LogLine], bool]) -> LogLine:
        return await asyncio.to_thread(self.log.wait_for, predicate, WAIT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT_S)


@contextlib.contextmanager
def agent_on(
    replica: ControllerProcess, state_file: Path, *others: ControllerProcess
) -> Iterator[Agent]:
    """An agent given `replica`'s address first, then the others' (it moves along the list)."""
    addresses = ",".join(r.address for r in (replica, *others))
    agent = Agent(addresses, replica.admin_token, state_file)
    try:
        yield agent
    finally:
        agent.stop()


async def test_every_replica_answers_sees_every_write_and_agrees_on_one_leader(
    cluster: Cluster,
) -> None:
    r1, r2, r3 = cluster.replicas
    leader = await cluster.leader()
    assert leader in {"r1", "r2", "r3"}
    assert [(await cluster.stats(r)).replica_id for r in cluster.replicas] == ["r1", "r2", "r3"]

    async with (
        open_channel(r2.address) as watching,
        open_channel(r1.address) as writing,
        open_channel(r3.address) as reading,
    ):
        # r2 is watched; r3 is read once its feed has the write (a watch says when).
        watches = [
            nsg.NodeServiceStub(channel).WatchNodes(npb.WatchNodesRequest())
            for channel in (watching, reading)
        ]
        for watch in watches:
            async for event in watch:
                if event.type == npb.NODE_EVENT_TYPE_SYNCED:
                    break
        registered = await nsg.NodeServiceStub(writing).RegisterNode(
            npb.RegisterNodeRequest(node=seed_node())
        )
        for watch in watches:
            async with asyncio.timeout(WAIT_S):  # pushed by each replica's change feed
                async for event in watch:
                    if event.node.id == registered.node.id:
                        assert event.type == npb.NODE_EVENT_TYPE_ADDED
                        break
            watch.cancel()
        got = await nsg.NodeServiceStub(reading).GetNode(
            npb.GetNodeRequest(node_id=registered.node.id)
        )
    assert got.node == registered.node


async def test_placed_by_the_leader_assigned_through_another_and_failover_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    leader_id = await cluster.leader()
    followers = [r for r in cluster.replicas if r is not cluster.by_id(leader_id)]
    streaming, creating = followers
    with (
        agent_on(streaming, tmp_path / "agent.json") as agent,
        agent_on(creating, tmp_path / "moving.json", streaming) as moving,
    ):
        await agent.line(lambda line: line.get("msg") == "heartbeat stream opened")
        opened = await moving.line(lambda line: line.get("msg") == "heartbeat stream opened")
        moving_node = (await moving.line(lambda line: line.get("msg") == "registered"))["node_id"]
        async with open_channel(creating.address) as channel:
            created = await dsg.DeploymentServiceStub(channel).CreateDeployment(
                dpb.CreateDeploymentRequest(
                    deployment=deployment_pb2.Deployment(name="web", image="x", replicas=2)
                )
            )
        dep_id = created.deployment.id
        # Spread over the two nodes: each agent runs one replica, including the agent that
        # streams to a replica which neither leads nor took the create.
        for runner in (agent, moving):
            await runner.line(
                lambda line: (
                    line.get("msg") == "replica state"
                    and line.get("deployment_id") == dep_id
                    and line.get("state") == "RUNNING"
                )
            )
        await wait_for(cluster, creating, lambda d: d.status == RUNNING, dep_id)

        # kill -9 the leader: another leads within the lease, the nodes stay READY (their
        # streams' replicas are alive), and each replica is still placed once.
        seen: list[int] = []
        statuses = asyncio.create_task(node_statuses(streaming, seen))
        killed_at = asyncio.get_running_loop().time()
        cluster.by_id(leader_id).kill()
        new_leader = await cluster.leader(followers, other_than=leader_id)
        took_s = asyncio.get_running_loop().time() - killed_at
        print(f"new leader {new_leader} {took_s:.2f} s after kill -9 of {leader_id}")
        async with open_channel(streaming.address) as channel:
            dep = (
                await dsg.DeploymentServiceStub(channel).GetDeployment(
                    dpb.GetDeploymentRequest(deployment_id=dep_id)
                )
            ).deployment
        assert dep.status == RUNNING
        assert len([r for r in dep.replica_statuses if not r.superseded]) == 2  # none twice
        # kill -9 the replica the second agent streams to: it streams to the other one on its
        # list, and its node stays READY (the leader gives a dead replica's nodes the failover
        # grace; the new holder judges it from its new stream).
        doomed = next(r for r in followers if r.address == opened["controller"])
        survivor = next(r for r in followers if r is not doomed)
        doomed.kill()
        await moving.line(
            lambda line: (
                line.get("msg") == "heartbeat stream opened"
                and line.get("controller") == survivor.address
            )
        )
        await cluster.leader([survivor], other_than=leader_id)
        async with open_channel(survivor.address) as channel:
            node = (
                await nsg.NodeServiceStub(channel).GetNode(npb.GetNodeRequest(node_id=moving_node))
            ).node
        assert node.status == READY
        statuses.cancel()
        await asyncio.gather(statuses, return_exceptions=True)
        assert seen and node_pb2.NODE_STATUS_OFFLINE not in seen, seen


async def test_a_leader_frozen_past_its_lease_steps_down_when_it_wakes(cluster: Cluster) -> None:
    leader_id = await cluster.leader()
    frozen = cluster.by_id(leader_id)
    others = [r for r in cluster.replicas if r is not frozen]
    frozen.send_signal(signal.SIGSTOP)
    try:
        new_leader = await cluster.leader(others, other_than=leader_id)
    finally:
        frozen.send_signal(signal.SIGCONT)
    line = await asyncio.to_thread(
        frozen.log.wait_for, lambda line: line.get("msg") == "no longer leading", WAIT_S
    )
    assert line["epoch"] >= 1
    assert await cluster.leader() == new_leader  # it follows the new leader now


async def wait_for(
    cluster: Cluster,
    replica: ControllerProcess,
    done: Callable[[deployment_pb2.Deployment], bool],
    dep_id: str,
) -> deployment_pb2.Deployment:
    async with open_channel(replica.address) as channel:
        watch = dsg.DeploymentServiceStub(channel).WatchDeployments(dpb.WatchDeploymentsRequest())
        try:
            async with asyncio.timeout(WAIT_S):
                async for event in watch:
                    if event.deployment.id == dep_id and done(event.deployment):
                        return event.deployment
        finally:
            watch.cancel()
    raise AssertionError("the watch ended")


async def node_statuses(replica: ControllerProcess, seen: list[int]) -> None:
    """Appends the status of every node event `replica` sends, until cancelled."""
    async with open_channel(replica.address) as channel:
        watch = nsg.NodeServiceStub(channel).WatchNodes(npb.WatchNodesRequest())
        async for event in watch:
            if event.HasField("node"):
                seen.append(event.node.status)
