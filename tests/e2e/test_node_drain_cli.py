"""`automator67 nodes cordon|uncordon|drain` run as the installed console script against a real
controller (and its admin token): each changes the node as UpdateNode does, `nodes list` and
`nodes get` show the cordon and the drain, `drain --wait` follows the drain on WatchNodes until
it completes (a node that runs nothing completes at once), and bad input is a one-line usage
error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from automator67 import Client
from automator67.v1 import node_pb2

from .cli_helpers import assert_one_line_error, run
from .conftest import StartController
from .controller_process import ControllerProcess
from .heartbeat_helpers import STEADY
from .seed import seed_node


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller(extra_args=STEADY.args)


@pytest.fixture
def client(controller: ControllerProcess) -> Iterator[Client]:
    with Client(controller.address, token=controller.admin_token) as client:
        yield client


def test_cordon_drain_and_uncordon_from_the_cli(
    controller: ControllerProcess, client: Client
) -> None:
    node = client.register_node(seed_node()).node
    other = client.register_node(seed_node()).node

    cordoned = run(controller, "nodes", "cordon", node.id[:8], other.id)
    assert cordoned.code == 0, cordoned
    assert cordoned.out.splitlines() == [f"node/{node.id} cordoned", f"node/{other.id} cordoned"]
    assert client.get_node(node.id).unschedulable
    listed = run(controller, "nodes", "list")
    assert "PENDING,cordoned" in listed.out, listed
    shown = run(controller, "nodes", "get", node.id)
    assert "no (cordoned)" in shown.out, shown

    drained = run(
        controller, "nodes", "drain", node.id, "--deadline", "10m", "--wait", "--timeout", "60s"
    )
    assert drained.code == 0, drained
    assert drained.out.splitlines()[-1].startswith(f"node/{node.id} drained: drained: 0 replicas")
    assert client.get_node(node.id).drain.state == node_pb2.DRAIN_STATE_COMPLETE
    shown = run(controller, "nodes", "get", node.id)
    assert "COMPLETE: drained" in shown.out, shown

    as_json = run(controller, "nodes", "uncordon", node.id, "-o", "json")
    assert as_json.code == 0, as_json
    back = json.loads(as_json.out)
    assert back["id"] == node.id and not back.get("unschedulable") and "drain" not in back
    assert not client.get_node(node.id).unschedulable


def test_bad_drain_input_is_a_one_line_usage_error(
    controller: ControllerProcess, client: Client
) -> None:
    node = client.register_node(seed_node()).node

    bad = run(controller, "nodes", "drain", node.id, "--deadline", "soon")
    assert bad.code == 2, bad
    assert "is not a duration" in bad.err
    missing = run(controller, "nodes", "cordon", "zz")
    assert_one_line_error(missing, 3, "no node matches 'zz'")
    assert not client.get_node(node.id).unschedulable
