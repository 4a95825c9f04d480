"""The operator CLI's pure parts: a deployment from a file and flags, the update mask, error
lines and exit codes, durations, and what `--wait` counts as running or hopeless."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest
from automator67.errors import AbortedError, FieldViolation, InvalidArgumentError
from automator67.v1 import deployment_pb2 as dpb

from controller.cli import build_parser
from controller.ctl import spec, wait
from controller.ctl.commands import duration_s
from controller.ctl.failures import CommandError, ExitCode, describe, exit_code_of


def flags(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["deployments", "update", "web", *argv])


def test_a_yaml_file_and_flags_make_one_deployment(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(
        "name: web\nimage: nginx:1.27\nreplicas: 2\nenv: {A: '1'}\n"
        "resources: {cpuCores: 0.5}\nstrategy: PLACEMENT_STRATEGY_BINPACK\n"
    )
    dep, touched = spec.from_file(str(path))
    assert touched == {"name", "image", "replicas", "env", "resources", "strategy"}
    spec.apply_flags(dep, flags("--replicas", "3", "--env", "B=2", "--memory-gb", "1"))
    assert (dep.name, dep.image, dep.replicas) == ("web", "nginx:1.27", 3)
    assert dict(dep.env) == {"A": "1", "B": "2"}
    assert (dep.resources.cpu_cores, dep.resources.memory_gb) == (0.5, 1.0)
    assert dep.strategy == dpb.PLACEMENT_STRATEGY_BINPACK


def test_a_create_request_body_in_json_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "web.json"
    path.write_text('{"deployment": {"name": "web", "command": ["sleep", "60"]}}')
    dep, touched = spec.from_file(str(path))
    assert (dep.name, list(dep.command), touched) == ("web", ["sleep", "60"], {"name", "command"})


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.yaml", "name: [unclosed", "not valid YAML"),
        ("list.yaml", "- a\n- b\n", "expected a mapping"),
        ("field.yaml", "name: web\nimagee: nginx\n", "imagee"),
        ("type.yaml", "name: web\nreplicas: many\n", "replicas"),
    ],
)
def test_a_bad_file_is_a_usage_error_that_says_what_is_wrong(
    tmp_path: Path, name: str, content: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CommandError) as failed:
        spec.from_file(str(path))
    assert failed.value.code is ExitCode.USAGE
    assert says in failed.value.message
    assert "\n" not in failed.value.message


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as failed:
        spec.from_file(str(tmp_path / "nope.yaml"))
    assert failed.value.code is ExitCode.USAGE


def test_an_update_merges_maps_and_resources_with_the_current_deployment() -> None:
    current = dpb.Deployment(
        name="web",
        image="nginx",
        replicas=2,
        env={"A": "1", "B": "2"},
        resources=dpb.Resources(cpu_cores=1, memory_gb=2),
        constraints=dpb.PlacementConstraints(region="eu", labels={"tier": "web"}),
    )
    new = dpb.Deployment()
    touched = spec.apply_flags(
        new, flags("--env", "B-", "--env", "C=3", "--cpu", "4", "--label", "disk=ssd"), current
    )
    assert touched == {"env", "resources", "constraints"}
    assert dict(new.env) == {"A": "1", "C": "3"}
    assert (new.resources.cpu_cores, new.resources.memory_gb) == (4, 2)
    assert new.constraints.region == "eu"
    assert dict(new.constraints.labels) == {"tier": "web", "disk": "ssd"}
    assert spec.changed_fields(new, current, touched) == ["env", "resources", "constraints"]


def test_the_mask_names_only_the_fields_that_change() -> None:
    current = dpb.Deployment(name="web", image="nginx", replicas=2, command=["a"])
    new = dpb.Deployment(image="nginx", replicas=3, command=["a"])
    assert spec.changed_fields(new, current, {"image", "replicas", "command"}) == ["replicas"]
    assert spec.ignored_fields({"name", "id", "image", "status"}) == ["id", "name", "status"]


@pytest.mark.parametrize("edit", ["novalue", "=x", "-"])
def test_a_bad_map_edit_is_a_usage_error(edit: str) -> None:
    with pytest.raises(CommandError) as failed:
        spec.edit_map({}, [edit], "--env")
    assert failed.value.code is ExitCode.USAGE


def test_durations() -> None:
    assert [duration_s(t) for t in ("90", "90s", "1.5m", "2h", "500ms")] == [
        90,
        90,
        90,
        7200,
        0.5,
    ]
    with pytest.raises(argparse.ArgumentTypeError):
        duration_s("soon")


def test_exit_codes_follow_the_status_codes() -> None:
    assert exit_code_of("NOT_FOUND") is ExitCode.NOT_FOUND
    assert exit_code_of("ABORTED") is ExitCode.CONFLICT
    assert exit_code_of("ALREADY_EXISTS") is ExitCode.CONFLICT
    assert exit_code_of("INVALID_ARGUMENT") is ExitCode.USAGE
    assert exit_code_of("UNAVAILABLE") is ExitCode.UNAVAILABLE
    assert exit_code_of("DEADLINE_EXCEEDED") is ExitCode.UNAVAILABLE
    assert exit_code_of("UNAUTHENTICATED") is ExitCode.DENIED
    assert exit_code_of("PERMISSION_DENIED") is ExitCode.DENIED
    assert exit_code_of("INTERNAL") is ExitCode.ERROR


def test_an_error_is_one_line_with_its_status_reason_fields_and_etag() -> None:
    invalid = InvalidArgumentError(
        "invalid deployment",
        reason="INVALID_FIELD",
        field_violations=[FieldViolation("deployment.replicas", "must be 0-1000")],
    )
    assert describe(invalid) == (
        "INVALID_ARGUMENT (INVALID_FIELD): invalid deployment [deployment.replicas: must be 0-1000]"
    )
    stale = AbortedError(
        "changed since etag 4\n(now 9)", reason="ETAG_MISMATCH", metadata={"current_etag": "9"}
    )
    assert describe(stale) == (
        "ABORTED (ETAG_MISMATCH): changed since etag 4 (now 9) [current etag 9]"
    )
    assert stale.code is grpc.StatusCode.ABORTED


def placed(dep: dpb.Deployment, *states: int) -> dpb.Deployment:
    for index, state in enumerate(states):
        dep.replica_statuses.add(index=index, node_id=f"n{index}", state=state)
    return dep


RUNNING = dpb.REPLICA_STATE_RUNNING


def test_running_means_every_replica_runs_not_only_the_status() -> None:
    # A scale writes the new count before the scheduler recomputes the status.
    scaled = placed(dpb.Deployment(replicas=3, status=dpb.DEPLOYMENT_STATUS_RUNNING), RUNNING)
    assert not wait.runs_every_replica(scaled)
    done = placed(
        dpb.Deployment(replicas=2, status=dpb.DEPLOYMENT_STATUS_RUNNING), RUNNING, RUNNING
    )
    assert wait.runs_every_replica(done)
    assert wait.runs_every_replica(dpb.Deployment(replicas=0, status=dpb.DEPLOYMENT_STATUS_RUNNING))


def test_what_cannot_run() -> None:
    failed = dpb.Deployment(status=dpb.DEPLOYMENT_STATUS_FAILED, status_reason="crashed")
    assert wait.why_it_cannot_run(failed) == "FAILED: crashed"
    unplaced = dpb.Deployment(
        replicas=1, status=dpb.DEPLOYMENT_STATUS_PENDING, status_reason_code="UNSCHEDULABLE"
    )
    unplaced.replica_statuses.add(
        index=0, state=dpb.REPLICA_STATE_PENDING, message="the scheduler's words, any of them"
    )
    assert wait.why_it_cannot_run(unplaced) == (
        "unschedulable: replica 0: the scheduler's words, any of them"
    )
    # The code decides, not the text: the same message without it is no reason to give up.
    unplaced.status_reason_code = ""
    assert wait.why_it_cannot_run(unplaced) is None
    backing_off = dpb.Deployment(replicas=1, status=dpb.DEPLOYMENT_STATUS_PENDING)
    backing_off.replica_statuses.add(
        index=0, state=dpb.REPLICA_STATE_PENDING, message="failed: oops; placing it again in 2s"
    )
    assert wait.why_it_cannot_run(backing_off) is None
