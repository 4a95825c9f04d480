"""An agent given several controllers (`--controller a:1,b:2`) streams to one that answers and
moves to another, with jittered backoff, when its controller dies.

Several replicas on one store are not built yet, so the two controllers here have separate data
folders sharing one signing key: a token of one is valid on the other, but a node registered on
one is unknown to the other, so the agent registers again where it lands (its NOT_FOUND path).
What is checked is the agent's side: where it streams, and that it gets there."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from automator67.aio import AsyncClient

from .controller_process import ControllerProcess, LogLine, ServerLog
from .test_agent_cli import CONTROLLER_ARGS, AgentProcess

WAIT_S = 30.0
KEY_FILES = ("jwt-signing-key.pem", "credential-keys.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[ControllerProcess | AgentProcess]]:
    started: list[ControllerProcess | AgentProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def agent(
    targets: str, token: str, state_file: Path, started: list[ControllerProcess | AgentProcess]
) -> AgentProcess:
    process = AgentProcess(targets, state_file)
    process.command += ["--backoff-max-s", "1", "--endpoint", "failover-host"]
    process.env["A67_AGENT_TOKEN"] = token
    started.append(process)
    return process.start()


def log_of(process: AgentProcess) -> ServerLog:
    assert process.log is not None
    return process.log


def opened(process: AgentProcess) -> list[LogLine]:
    return [x for x in log_of(process).lines if x.get("msg") == "heartbeat stream opened"]


def next_stream(process: AgentProcess, count: int) -> str:
    """The controller of the next "heartbeat stream opened" after the first `count`."""
    log_of(process).wait_for(lambda _: len(opened(process)) > count, WAIT_S)
    return str(opened(process)[count].get("controller"))


async def ready_nodes(controller: ControllerProcess) -> list[str]:
    async with AsyncClient(controller.address, token=controller.admin_token) as client:
        return [n.endpoint async for n in client.list_nodes("status = READY")]


async def test_an_agent_skips_a_dead_controller_of_its_list(
    tmp_path: Path, processes: list[ControllerProcess | AgentProcess]
) -> None:
    alive = ControllerProcess(tmp_path / "b", extra_args=CONTROLLER_ARGS)
    processes.append(alive.start())
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there

    process = agent(f"{dead},{alive.address}", alive.admin_token, tmp_path / "s.json", processes)

    assert next_stream(process, 0) == alive.address
    assert await ready_nodes(alive) == ["failover-host"]


async def test_an_agent_moves_to_the_other_controller_when_its_own_stops(
    tmp_path: Path, processes: list[ControllerProcess | AgentProcess]
) -> None:
    ports = {"a": free_port(), "b": free_port()}  # fixed: a restart comes back on its port
    first = ControllerProcess(
        tmp_path / "a", extra_args=[*CONTROLLER_ARGS, "--port", str(ports["a"])]
    )
    processes.append(first.start())
    (tmp_path / "b").mkdir()
    for name in KEY_FILES:  # one signing key: a token of either is valid on both
        shutil.copy2(tmp_path / "a" / name, tmp_path / "b" / name)
    second = ControllerProcess(
        tmp_path / "b", extra_args=[*CONTROLLER_ARGS, "--port", str(ports["b"])]
    )
    processes.append(second.start())
    by_address = {first.address: first, second.address: second}

    process = agent(
        f"{first.address},{second.address}", first.admin_token, tmp_path / "s.json", processes
    )
    here = by_address[next_stream(process, 0)]  # a random one of the two
    there = second if here is first else first
    assert await ready_nodes(here) == ["failover-host"]

    # Its controller stops (SIGTERM): the agent moves to the other one and streams there.
    seen = len(opened(process))
    here.terminate()
    assert next_stream(process, seen) == there.address, process.messages()
    assert await ready_nodes(there) == ["failover-host"]
    assert any(
        line.get("msg") == "reconnecting" and "delay_s" in line for line in log_of(process).lines
    )

    # And back, once the first is up again on its port and the second stops.
    here.start()
    seen = len(opened(process))
    there.terminate()
    assert next_stream(process, seen) == here.address, process.messages()
    assert "failover-host" in await ready_nodes(here)
