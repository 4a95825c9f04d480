"""`automator67 deployments ...` as the installed console script against a real controller:
create from a YAML file and from flags, get and list as tables and as proto3 JSON that parses
back, update by field mask (merging env), a stale --etag refused with exit 4 and one line, a
name taken, invalid input with its field, unknown names, and delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from automator67 import Client
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds
from google.protobuf import json_format

from .cli_helpers import Follow, assert_one_line_error, run
from .conftest import StartController
from .controller_process import ControllerProcess

WEB_YAML = """\
name: web
image: nginx:1.27
replicas: 2
env:
  MODE: production
resources:
  cpuCores: 0.5
  memoryGb: 0.25
constraints:
  region: eu-west-1
  labels: {tier: web}
strategy: PLACEMENT_STRATEGY_SPREAD
"""


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller()


@pytest.fixture
def client(controller: ControllerProcess) -> Iterator[Client]:
    with Client(controller.address, token=controller.admin_token) as client:
        yield client


def by_name(client: Client, name: str) -> dpb.Deployment:
    (found,) = client.list_deployments(f'name = "{name}"')
    return found


def test_create_from_a_yaml_file_with_flags_over_it(
    controller: ControllerProcess, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB_YAML)

    created = run(
        controller, "deployments", "create", "-f", str(path), "--replicas", "3", "--env", "B=2"
    )
    assert (created.code, created.out) == (0, "deployment/web created\n"), created

    web = by_name(client, "web")
    assert (web.image, web.replicas, dict(web.env)) == (
        "nginx:1.27",
        3,
        {"MODE": "production", "B": "2"},
    )
    assert (web.resources.cpu_cores, web.resources.memory_gb) == (0.5, 0.25)
    assert web.constraints.region == "eu-west-1" and dict(web.constraints.labels) == {"tier": "web"}
    assert web.strategy == dpb.PLACEMENT_STRATEGY_SPREAD

    from_stdin = run(controller, "deployments", "create", "api", "-f", "-", stdin=WEB_YAML)
    assert from_stdin.code == 0, from_stdin
    assert by_name(client, "api").image == "nginx:1.27"  # the name argument wins over the file's


def test_create_from_flags_and_read_it_back_as_json(
    controller: ControllerProcess, client: Client
) -> None:
    created = run(
        controller,
        *("deployments", "create", "sleeper", "--command", "sleep 3600", "--arg=-v"),
        *("--cpu", "0.25", "--label", "disk=ssd", "--strategy", "binpack", "-o", "json"),
    )
    assert created.code == 0, created
    returned = json_format.Parse(created.out, dpb.Deployment())
    assert list(returned.command) == ["sleep", "3600"] and list(returned.args) == ["-v"]
    assert returned.strategy == dpb.PLACEMENT_STRATEGY_BINPACK

    got = run(controller, "deployments", "get", "sleeper", "-o", "json")
    assert got.code == 0, got
    read = json_format.Parse(got.out, dpb.Deployment())
    assert read.id == returned.id and read.constraints.labels["disk"] == "ssd"

    listed = run(controller, "deployments", "list", "-o", "json")
    assert listed.code == 0, listed
    assert [
        d.name for d in json_format.Parse(listed.out, ds.ListDeploymentsResponse()).deployments
    ] == ["sleeper"]

    table = run(controller, "deployments", "list")
    assert table.code == 0, table
    header, row = table.out.splitlines()
    assert header.split()[:4] == ["NAME", "ID", "STATUS", "READY"]
    assert row.split()[:2] == ["sleeper", returned.id[:8]] and "sleep 3600 -v" in row

    detail = run(controller, "deployments", "get", returned.id[:6])  # an id prefix
    assert detail.code == 0, detail
    assert f"ID:           {returned.id}" in detail.out and "Replicas\n" in detail.out


def test_create_refuses_a_taken_name_and_invalid_input_in_one_line(
    controller: ControllerProcess,
) -> None:
    assert run(controller, "deployments", "create", "web", "--image", "nginx").code == 0

    taken = run(controller, "deployments", "create", "web", "--image", "nginx")
    assert_one_line_error(taken, 4, "ALREADY_EXISTS", "DEPLOYMENT_NAME_TAKEN")

    too_many = run(controller, "deployments", "create", "big", "--image", "x", "--replicas", "5000")
    assert_one_line_error(too_many, 2, "INVALID_ARGUMENT", "deployment.replicas")

    nothing = run(controller, "deployments", "create", "empty")
    assert_one_line_error(nothing, 2, "give --image or --command")


def test_update_sends_only_what_changes_and_a_stale_etag_is_refused(
    controller: ControllerProcess, client: Client
) -> None:
    web = client.create_deployment(dpb.Deployment(name="web", image="nginx:1.26", env={"A": "1"}))

    updated = run(
        controller, "deployments", "update", "web", "--image", "nginx:1.27", "--env", "B=2"
    )
    assert (updated.code, updated.out) == (0, "deployment/web updated\n"), updated
    now = client.get_deployment(web.id)
    assert now.image == "nginx:1.27" and dict(now.env) == {"A": "1", "B": "2"}

    same = run(controller, "deployments", "update", "web", "--image", "nginx:1.27")
    assert (same.code, same.out) == (0, "deployment/web unchanged\n"), same

    # The etag the create returned is stale since the update (and the scheduler's writes).
    stale = run(
        controller, "deployments", "update", "web", "--image", "nginx:1.28", "--etag", web.etag
    )
    assert_one_line_error(stale, 4, "ABORTED (ETAG_MISMATCH)", "current etag")
    assert client.get_deployment(web.id).image == "nginx:1.27"  # nothing written

    scaled = run(controller, "deployments", "scale", "web", "--replicas", "0")
    assert (scaled.code, scaled.out) == (0, "deployment/web scaled\n"), scaled
    assert client.get_deployment(web.id).replicas == 0

    nothing = run(controller, "deployments", "update", "web")
    assert_one_line_error(nothing, 2, "nothing to change")


def test_unknown_deployments_are_not_found_and_delete_stops_them(
    controller: ControllerProcess, client: Client
) -> None:
    assert_one_line_error(
        run(controller, "deployments", "get", "nope"), 3, "no deployment matches 'nope'"
    )
    assert_one_line_error(
        run(
            controller,
            "deployments",
            "scale",
            "00000000-0000-4000-8000-000000000000",
            "--replicas",
            "2",
        ),
        3,
        "NOT_FOUND (DEPLOYMENT_NOT_FOUND)",
    )
    web = client.create_deployment(dpb.Deployment(name="web", image="nginx"))
    deleted = run(controller, "deployments", "delete", "web")
    assert (deleted.code, deleted.out) == (0, "deployment/web stopping\n"), deleted
    # No agent runs it: with no replica to stop it is removed at once, or it is STOPPING.
    remaining = [d for d in client.list_deployments() if d.id == web.id]
    assert all(d.status == dpb.DEPLOYMENT_STATUS_STOPPING for d in remaining), remaining


def test_get_json_can_be_edited_and_sent_back_with_update(
    controller: ControllerProcess, client: Client, tmp_path: Path
) -> None:
    web = client.create_deployment(dpb.Deployment(name="web", image="nginx:1.26", replicas=1))
    got = run(controller, "deployments", "get", "web", "-o", "json")
    assert got.code == 0, got
    edited = json.loads(got.out)
    edited["image"], edited["replicas"] = "nginx:1.27", 2
    path = tmp_path / "web.json"
    path.write_text(json.dumps(edited))

    updated = run(controller, "deployments", "update", "web", "-f", str(path))
    assert (updated.code, updated.out) == (0, "deployment/web updated\n"), updated
    assert updated.err.startswith("ignored (not updatable): "), updated  # id, name, status...
    now = client.get_deployment(web.id)
    assert (now.image, now.replicas) == ("nginx:1.27", 2)


def test_watch_one_deployment_as_a_table_until_interrupted(
    controller: ControllerProcess, client: Client
) -> None:
    client.create_deployment(dpb.Deployment(name="web", image="nginx"))
    watch = Follow(controller, "deployments", "watch", "web")
    try:
        header, opening = watch.line(), watch.line()
        assert header.split()[:5] == ["EVENT", "NAME", "ID", "STATUS", "READY"], header
        assert opening.split()[:2] == ["ADDED", "web"], opening

        client.create_deployment(dpb.Deployment(name="other", image="nginx"))  # not shown
        scaled = run(controller, "deployments", "scale", "web", "--replicas", "2")
        assert scaled.code == 0, scaled
        # The scheduler writes web too (its status); every line is web's, in the header's
        # columns (READY starts where its title does), until one shows the new count.
        ready_at = header.index("READY")
        for _ in range(20):
            changed = watch.line()
            assert changed.split()[:2] == ["CHANGED", "web"], changed
            if changed[ready_at:].split()[0].endswith("/2"):
                break
        else:
            raise AssertionError("no line of web with 2 replicas")

        ended = watch.interrupt()
        assert ended.code == 130, ended
        assert "other" not in ended.out and "Traceback" not in ended.err, ended
        assert "-- SYNCED at revision" in ended.err, ended
    finally:
        watch.stop()
