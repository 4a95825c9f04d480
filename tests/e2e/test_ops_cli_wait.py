"""`--wait` of the operator CLI against a real controller: with real agents (`automator67 agent`,
simulated workloads) streaming, `create --wait` and `scale --wait` return once every replica
runs and `delete --wait` once the deployment is gone, each with progress lines on stderr;
without a node that fits, the wait fails at once with the scheduler's reason (exit 7); with
replicas that never start, it ends at --timeout (exit 5) with the last status seen."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from automator67 import Client, NotFoundError
from automator67.v1 import agent_service_pb2_grpc, node_pb2
from automator67.v1 import deployment_pb2 as dpb

from .cli_helpers import run
from .conftest import StartController, open_channel
from .controller_process import ROOT, ControllerProcess, controller_env
from .heartbeat_helpers import STEADY, Agent

# Beats every 0.25 s, and far more slack than a loaded machine delays a beat by: a node that
# flapped SUSPECT would rightly get no replica, and the wait would fail as unschedulable.
FAST = (
    *("--heartbeat-interval-s", "0.25"),
    *("--suspect-after-s", "5"),
    *("--offline-after-s", "10"),
    *("--failover-grace-s", "10"),
)
WAIT_S = 30.0
StartAgent = Callable[[ControllerProcess, str], subprocess.Popen[bytes]]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """`start_agent(controller, name)`: a real agent with simulated workloads and 2 cores,
    registered with the controller's admin token. Stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(controller: ControllerProcess, name: str) -> subprocess.Popen[bytes]:
        command = [
            *(sys.executable, "-m", "controller", "agent", "--controller", controller.address),
            *("--state-file", str(tmp_path / f"{name}.json"), "--endpoint", name),
            *("--driver", "simulated", "--cpu-cores", "2", "--memory-gb", "4", "--disk-gb", "10"),
        ]
        agent = subprocess.Popen(
            command,
            cwd=ROOT,
            env=controller_env(A67_AGENT_TOKEN=controller.admin_token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.terminate()
        try:
            agent.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(WAIT_S)


def wait_for_ready_nodes(client: Client, count: int) -> None:
    """Returns once `count` nodes are READY, as WatchNodes shows them (no polling)."""
    ready: set[str] = set()
    watch = client.watch_nodes()
    timer = threading.Timer(WAIT_S, watch.close)
    timer.start()
    try:
        for event in watch:
            if event.node.status == node_pb2.NODE_STATUS_READY:
                ready.add(event.node.id)
            elif event.node.id:
                ready.discard(event.node.id)
            if len(ready) >= count:
                return
        raise AssertionError(f"{count} READY nodes within {WAIT_S}s: saw {sorted(ready)}")
    finally:
        timer.cancel()
        watch.close()


def running_replicas(dep: dpb.Deployment) -> int:
    return sum(
        1 for r in dep.replica_statuses if not r.superseded and r.state == dpb.REPLICA_STATE_RUNNING
    )


def test_create_scale_and_delete_wait_for_the_agents(
    start_controller: StartController, start_agent: StartAgent
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    start_agent(controller, "b")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 2)

        created = run(
            controller,
            *("deployments", "create", "web", "--image", "nginx", "--cpu", "0.5", "--wait"),
        )
        assert (created.code, created.out) == (0, "deployment/web created\n"), created
        assert created.err_lines[-1].startswith("web: RUNNING, 1/1 running ("), created
        assert running_replicas(by_name(client, "web")) == 1

        scaled = run(controller, "deployments", "scale", "web", "--replicas", "3", "--wait")
        assert (scaled.code, scaled.out) == (0, "deployment/web scaled\n"), scaled
        assert scaled.err_lines[-1].startswith("web: RUNNING, 3/3 running ("), scaled
        web = by_name(client, "web")
        assert (web.replicas, running_replicas(web)) == (3, 3)
        assert web.status == dpb.DEPLOYMENT_STATUS_RUNNING

        deleted = run(controller, "deployments", "delete", "web", "--wait", "-o", "json")
        assert deleted.code == 0, deleted
        assert deleted.err_lines[-1].startswith("web: gone"), deleted
        with pytest.raises(NotFoundError):
            client.get_deployment(web.id)


def test_a_wait_for_what_no_node_fits_fails_at_once_with_the_reason(
    start_controller: StartController, start_agent: StartAgent
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 1)

        huge = run(
            controller,
            *("deployments", "create", "huge", "--image", "x", "--cpu", "64", "--wait"),
        )
        line = huge.err_lines[-1]
        assert huge.code == 7, huge
        assert line.startswith("automator67: huge cannot run: unschedulable"), huge
        assert "no READY node with 64 cpu" in line, huge

        # The agent offers 2 cores: two replicas of one core fit, five do not.
        web = run(controller, "deployments", "create", "web", "--image", "x", "--cpu", "1")
        assert web.code == 0, web
        grown = run(controller, "deployments", "scale", "web", "--replicas", "5", "--wait")
        assert grown.code == 7, grown
        assert "cannot run: unschedulable" in grown.err_lines[-1], grown


async def test_a_wait_ends_at_its_timeout_with_the_last_status(
    start_controller: StartController,
) -> None:
    controller = start_controller(extra_args=STEADY.args)
    with Client(controller.address, token=controller.admin_token) as client:
        node = client.register_node(
            node_pb2.Node(
                provider="bare-metal",
                endpoint="silent",
                capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8),
            )
        ).node
    # A node that beats but never reports its replicas: they stay ASSIGNED, never RUNNING.
    async with open_channel(controller.address) as channel:
        agent = await Agent.connect(agent_service_pb2_grpc.AgentServiceStub(channel), node.id)
        agent.keep_beating(0.2)
        try:
            result = await asyncio.to_thread(
                run,
                controller,
                *("deployments", "create", "web", "--image", "x", "--wait", "--timeout", "5s"),
            )
        finally:
            await agent.discard()
    assert result.code == 5, result
    assert "Traceback" not in result.err
    *progress, line = result.err_lines
    assert line.startswith("automator67: timed out after 5s waiting for web to be running"), result
    assert "last status SCHEDULED, 0/1 running" in line, result
    assert progress and all(p.startswith("web: ") for p in progress), result


def by_name(client: Client, name: str) -> dpb.Deployment:
    (found,) = client.list_deployments(f'name = "{name}"')
    return found
