"""The sync Python client's `wait_for_rollout` against a real controller with real agents
(`automator67 agent`, simulated workloads): it returns once an update completed, once a version
failing its health check was rolled back on its own, at once for a paused rollout; it raises
TimeoutError for a rollout that cannot move and LookupError when the deployment is deleted
meanwhile. Same decision as the async client's (automator67._methods.rollout_done)."""

from __future__ import annotations

import threading

import pytest
from automator67 import Client
from automator67.v1 import deployment_pb2 as dpb
from google.protobuf import duration_pb2

from .conftest import StartController
from .test_ops_cli_wait import (  # noqa: F401  (fixtures)
    FAST,
    StartAgent,
    start_agent,
    wait_for_ready_nodes,
)

ROLLOUT_S = 120.0  # generous: a loaded 2-core machine
COMPLETE = dpb.ROLLOUT_OUTCOME_COMPLETE
ROLLED_BACK = dpb.ROLLOUT_OUTCOME_ROLLED_BACK


def web(replicas: int = 2, cpu: float = 0.25) -> dpb.Deployment:
    return dpb.Deployment(
        name="web",
        image="nginx:1",
        replicas=replicas,
        resources=dpb.Resources(cpu_cores=cpu, memory_gb=0.1),
        health_check=dpb.HealthCheck(
            command=["true"],
            interval=duration_pb2.Duration(nanos=200_000_000),
            failure_threshold=1,
        ),
    )


def test_wait_for_rollout_follows_updates_rollbacks_and_pauses(
    start_controller: StartController,
    start_agent: StartAgent,  # noqa: F811
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    start_agent(controller, "b")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 2)
        dep = client.create_deployment(web())
        first = client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        assert [r.outcome for r in first.rollout_history] == [COMPLETE]

        client.update_deployment(dpb.Deployment(id=dep.id, env={"V": "2"}), ["env"])
        done = client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        assert done.observed_generation == done.generation == 2
        assert [r.outcome for r in done.rollout_history] == [COMPLETE, COMPLETE]
        assert done.updated_replicas == done.available_replicas == 2

        broken = {"V": "3", "A67_SIMULATED_HEALTH": "fail"}
        client.update_deployment(dpb.Deployment(id=dep.id, env=broken), ["env"])
        back = client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        assert back.generation == back.observed_generation == 4
        failed, rollback = back.rollout_history[-2:]
        assert (failed.outcome, failed.reason) == (ROLLED_BACK, "ROLLOUT_HEALTH_CHECK_FAILED")
        assert (rollback.outcome, rollback.reason) == (COMPLETE, "ROLLBACK")
        assert back.env == {"V": "2"}

        client.pause_deployment(dep.id)
        client.update_deployment(dpb.Deployment(id=dep.id, env={"V": "5"}), ["env"])
        paused = client.wait_for_rollout(dep.id, timeout_s=ROLLOUT_S)
        assert paused.paused and paused.observed_generation == paused.generation  # pause: +1
        assert paused.rollout_history[-1].outcome == dpb.ROLLOUT_OUTCOME_PROGRESSING


def test_wait_for_rollout_times_out_and_sees_a_delete(
    start_controller: StartController,
    start_agent: StartAgent,  # noqa: F811
) -> None:
    controller = start_controller(extra_args=FAST)
    start_agent(controller, "a")
    with Client(controller.address, token=controller.admin_token) as client:
        wait_for_ready_nodes(client, 1)
        huge = client.create_deployment(web(replicas=1, cpu=64))  # no node fits: never done
        with pytest.raises(TimeoutError, match="did not end in 2"):
            client.wait_for_rollout(huge.id, timeout_s=2)

        outcome: list[BaseException | dpb.Deployment] = []

        def wait() -> None:
            try:
                outcome.append(client.wait_for_rollout(huge.id, timeout_s=ROLLOUT_S))
            except BaseException as error:  # the test reads it
                outcome.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        client.delete_deployment(huge.id)
        waiter.join(ROLLOUT_S)
        assert not waiter.is_alive()
        (error,) = outcome
        assert isinstance(error, LookupError) and "was deleted" in str(error), error
