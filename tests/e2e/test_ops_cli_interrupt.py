"""Ctrl-C ends a watch of the operator CLI at once, with exit 130 and no traceback, wherever the
signal finds it: waiting to resume after the controller went away, or in a burst of events
(`controller/ctl/interrupt.py`); and it reaches the CLI even when the test runner itself ignores
SIGINT (`cli_helpers.FOREGROUND`). The quiet case is in test_ops_cli.py and
test_ops_cli_deployments.py."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator

import pytest
from automator67 import Client

from .cli_helpers import Follow
from .conftest import StartController
from .controller_process import ControllerProcess
from .seed import seed_node

JOIN_S = 60.0


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller()


@pytest.fixture
def client(controller: ControllerProcess) -> Iterator[Client]:
    with Client(controller.address, token=controller.admin_token) as client:
        yield client


def test_ctrl_c_while_the_watch_waits_to_resume(controller: ControllerProcess) -> None:
    watch = Follow(controller, "nodes", "watch", "-o", "json")
    try:
        assert json.loads(watch.line())["type"] == "NODE_EVENT_TYPE_SYNCED"  # empty store
        controller.kill()
        watch.err_line("watch broken; resuming")

        ended = watch.interrupt()
        assert ended.code == 130, ended
        assert "Traceback" not in ended.err, ended
    finally:
        watch.stop()


def test_ctrl_c_in_a_burst_of_events(controller: ControllerProcess, client: Client) -> None:
    done = threading.Event()

    def churn() -> None:  # a node registered and deleted, again and again
        while not done.is_set():
            node = client.register_node(seed_node()).node
            client.delete_node(node.id)

    watch = Follow(controller, "nodes", "watch")
    churner = threading.Thread(target=churn, daemon=True)
    try:
        assert watch.line().split()[0] == "EVENT"  # the header: the state was sent
        churner.start()
        for _ in range(6):  # the burst is being printed
            assert watch.line().split()[0] in {"ADDED", "DELETED", "STATUS_CHANGED", "CHANGED"}

        ended = watch.interrupt()
        assert ended.code == 130, ended
        assert "Traceback" not in ended.err, ended
    finally:
        done.set()
        churner.join(JOIN_S)
        watch.stop()


def test_ctrl_c_reaches_the_watch_when_the_test_runner_ignores_sigint(
    controller: ControllerProcess,
) -> None:
    # As in CI when the runner is the background job of a script: SIGINT ignored in this
    # process when it starts the command (a child inherits that).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watch = Follow(controller, "nodes", "watch", "-o", "json")
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert json.loads(watch.line())["type"] == "NODE_EVENT_TYPE_SYNCED"
        ended = watch.interrupt()
        assert ended.code == 130, ended
    finally:
        watch.stop()
