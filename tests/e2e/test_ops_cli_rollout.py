"""`automator67 deployments rollout status|history|undo|pause|resume` and the rollout fields of
`deployments get`, run as the installed console script against a real controller with real
agents (`automator67 agent`, simulated workloads whose health check a deployment can make fail
with A67_SIMULATED_HEALTH=fail): an update followed to completion with `status --watch`, a
version failing its health check rolled back on its own (`status` exits 7 with the reason, also
once the rollback ended), the history as a table and as proto3 JSON, undo refused while paused
and accepted after resume, a watch that ends at --timeout (exit 5), an unknown name (exit 3);
and a deployment no node fits says UNSCHEDULABLE in its status_reason_code."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from automator67 import Client
from automator67.v1 import deployment_pb2 as dpb
from google.protobuf import duration_pb2, json_format

from .cli_helpers import assert_one_line_error, run
from .conftest import StartController
from .test_ops_cli_wait import (  # noqa: F401  (fixtures)
    FAST,
    StartAgent,
    start_agent,
    wait_for_ready_nodes,
)

ROLLOUT_S = 120.0  # generous: a loaded 2-core machine
WATCH = ("--watch", "--timeout", "120s")


def web(name: str = "web", cpu: float = 0.25) -> dpb.Deployment:
    return dpb.Deployment(
        name=name,
        image="nginx:1",
        replicas=2,
        resources=dpb.Resources(cpu_cores=cpu, memory_gb=0.1),
        health_check=dpb.HealthCheck(
            command=["true"],
            interval=duration_pb2.Duration(nanos=200_000_000),
            failure_threshold=1,
        ),
    )


@pytest.mark.timeout(600)
def test_rollout_commands_follow_list_undo_pause_and_resume(
    start_controller: StartController,
    start_agent: StartAgent,  # noqa: F811
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    start_agent(controller, "b")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 2)
        dep = client.create_deployment(web())
        client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)

        done = run(controller, "deployments", "rollout", "status", "web")
        assert (done.code, done.out) == (
            0,
            'deployment "web" successfully rolled out (generation 1)\n',
        ), done
        got = run(controller, "deployments", "get", "web")
        assert got.code == 0, got
        assert "Generation:   1 (observed 1)" in got.out, got
        assert "Rollout:      2 updated, 2 ready, 2 available" in got.out, got
        assert (
            "Update:       max surge 25%, max unavailable 25%, min ready 0s, "
            "progress deadline 600s" in got.out
        ), got

        assert run(controller, "deployments", "update", "web", "--env", "V=2").code == 0
        followed = run(controller, "deployments", "rollout", "status", "web", *WATCH)
        assert followed.code == 0, followed
        assert followed.out == 'deployment "web" successfully rolled out (generation 2)\n'
        assert all(line.startswith(("waiting for ", "deployment ")) for line in followed.err_lines)

        broken = run(
            controller, "deployments", "update", "web", "--env", "A67_SIMULATED_HEALTH=fail"
        )
        assert broken.code == 0, broken
        failed = run(controller, "deployments", "rollout", "status", "web", *WATCH)
        line = failed.err_lines[-1]
        assert failed.code == 7, failed
        assert line.startswith('automator67: deployment "web": the rollout of generation 3 '), line
        assert "rolled back (ROLLOUT_HEALTH_CHECK_FAILED)" in line, line
        assert "failed its health check" in line, line
        # Once the automatic rollback ended, status still says the update failed.
        client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        after = run(controller, "deployments", "rollout", "status", "web")
        assert_one_line_error(after, 7, "generation 3", "ROLLOUT_HEALTH_CHECK_FAILED")

        table = run(controller, "deployments", "rollout", "history", "web")
        assert table.code == 0, table
        header, *rows = table.out.splitlines()
        assert header.split()[:5] == ["GENERATION", "TEMPLATE", "OUTCOME", "STARTED", "ENDED"]
        assert [r.split()[:3] for r in rows] == [
            ["1", "1", "COMPLETE"],
            ["2", "2", "COMPLETE"],
            ["3", "3", "ROLLED_BACK"],
            ["4", "2", "COMPLETE"],
        ], table
        as_json = run(controller, "deployments", "rollout", "history", "web", "-o", "json")
        parsed = json_format.Parse(as_json.out, dpb.Deployment())
        assert [r.reason for r in parsed.rollout_history] == [
            "",
            "",
            "ROLLOUT_HEALTH_CHECK_FAILED",
            "ROLLBACK",
        ]

        paused = run(controller, "deployments", "rollout", "pause", "web")
        assert (paused.code, paused.out) == (0, "deployment/web paused\n"), paused
        refused = run(controller, "deployments", "rollout", "undo", "web")
        assert_one_line_error(refused, 4, "paused")
        resumed = run(controller, "deployments", "rollout", "resume", "web")
        assert (resumed.code, resumed.out) == (0, "deployment/web resumed\n"), resumed

        undone = run(controller, "deployments", "rollout", "undo", "web", "--to-generation", "1")
        assert (undone.code, undone.out) == (
            0,
            "deployment/web rolled back to generation 1\n",
        ), undone
        back = run(controller, "deployments", "rollout", "status", "web", *WATCH)
        assert back.code == 0, back
        assert back.out == 'deployment "web" successfully rolled out (generation 1)\n'
        assert client.get_deployment(dep.id).env == {}


def test_rollout_status_watch_ends_at_its_timeout_and_names_are_checked(
    start_controller: StartController,
    start_agent: StartAgent,  # noqa: F811
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 1)
        huge = client.create_deployment(web("huge", cpu=64))  # no node fits: never completes

        now = run(controller, "deployments", "rollout", "status", "huge")
        assert now.code == 0, now  # without --watch: where it stands, as kubectl --watch=false
        assert now.out.startswith(('waiting for deployment "huge" ',)), now
        timed = run(controller, "deployments", "rollout", "status", "huge", "-w", "--timeout", "3s")
        assert timed.code == 5, timed
        assert timed.err_lines[-1].startswith(
            "automator67: timed out after 3s waiting for the rollout of huge; last: waiting"
        ), timed

        missing = run(controller, "deployments", "rollout", "history", "nope")
        assert_one_line_error(missing, 3, "nope")

        # Over gRPC, why it waits is said for programs too (what `--wait` goes by).
        unschedulable = first_version(client, huge.id, lambda d: bool(d.status_reason_code))
        assert unschedulable.status_reason_code == "UNSCHEDULABLE", unschedulable
        assert "no READY node with 64 cpu" in unschedulable.status_reason


def first_version(
    client: Client, deployment_id: str, wanted: Callable[[dpb.Deployment], bool]
) -> dpb.Deployment:
    """The first version of the deployment that is `wanted`, as WatchDeployments shows it."""
    watch = client.watch_deployments()
    timer = threading.Timer(ROLLOUT_S, watch.close)
    timer.start()
    try:
        for event in watch:
            if event.deployment.id == deployment_id and wanted(event.deployment):
                return event.deployment
        raise AssertionError(f"no such version of {deployment_id} within {ROLLOUT_S}s")
    finally:
        timer.cancel()
        watch.close()
