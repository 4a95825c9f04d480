"""The agent's life: registration or reuse of the saved node, the reconnect loop and its
backoff, stopping. Against a fake controller; no sockets, no sleeps (the random source makes
every delay microseconds long)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import pytest
from automator67.errors import ApiError
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2, node_service_pb2

from controller.agent.runner import Agent, RegistrationRefused
from controller.agent.settings import AgentSettings
from controller.agent.state import AgentState, load_state, save_state

from .test_agent_session import FakeStream, rpc_error

TINY = 1e-6  # the random draw: every delay is at most 15 microseconds


class FakeController:
    """Nodes by id, and one scripted stream per heartbeat attempt (`streams`, in order)."""

    def __init__(self, streams: Sequence[FakeStream] = ()) -> None:
        self.nodes: dict[str, node_pb2.Node] = {}
        self.registrations: list[tuple[node_pb2.Node, str]] = []
        self.register_errors: list[ApiError] = []
        self.agent_tokens: list[str] = []  # what each registration answers as the agent token
        self.streams = list(streams)
        self.hellos: list[tuple[str, str]] = []
        self.clients = 0
        self.targets: list[str] = []  # the controller address of each new client

    def add_node(self, node_id: str) -> None:
        self.nodes[node_id] = node_pb2.Node(id=node_id)

    def client(self, target: str = "") -> FakeClient:
        self.clients += 1
        self.targets.append(target)
        return FakeClient(self)


class FakeClient:
    def __init__(self, controller: FakeController) -> None:
        self._controller = controller

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def get_node(self, node_id: str) -> node_pb2.Node:
        if node_id not in self._controller.nodes:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"node {node_id!r} not found")
        return self._controller.nodes[node_id]

    async def register_node(
        self, node: node_pb2.Node, *, request_id: str | None = None
    ) -> node_service_pb2.RegisterNodeResponse:
        c = self._controller
        c.registrations.append((node, request_id or ""))
        if c.register_errors:
            raise c.register_errors.pop(0)
        registered = node_pb2.Node(id=f"node-{len(c.registrations)}")
        registered.MergeFrom(node)
        c.nodes[registered.id] = registered
        token = c.agent_tokens.pop(0) if c.agent_tokens else ""
        return node_service_pb2.RegisterNodeResponse(node=registered, agent_token=token)

    def heartbeat(
        self,
        node_id: str,
        agent_version: str = "",
        drivers: Sequence[str] = (),
        *,
        open_timeout_s: float = 10.0,
    ) -> FakeStream:
        self._controller.hellos.append((node_id, agent_version))
        return self._controller.streams.pop(0)


def settings(tmp_path: Path, **changes: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "controller": "controller.test:50051",
        "state_file": tmp_path / "agent-state.json",
        "endpoint": "host-1",
        "region": "eu-west-1",
        "labels": (("tier", "gpu"),),
        "cpu_cores": 2.0,
        "memory_gb": 4.0,
        "disk_gb": 50.0,
    }
    return AgentSettings(**{**values, **changes})


def make_agent(
    tmp_path: Path,
    controller: FakeController,
    client: Callable[[str], FakeClient] | None = None,
    **changes: Any,
) -> Agent:
    return Agent(
        settings(tmp_path, **changes),
        load=lambda: hb.NodeLoad(cpu_percent=1.0),
        rand=lambda: TINY,
        client=client or controller.client,
    )


def stops(agent: Callable[[], Agent]) -> Callable[[FakeStream, int], None]:
    """A stream script: ack the first beat, then stop the agent."""

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        agent().stop()

    return on_beat


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "controller.agent"]


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.fields["reason"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "reconnecting"
    ]


@pytest.fixture(autouse=True)
def _capture_agent_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.agent")


async def test_a_first_run_registers_the_node_and_saves_its_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    agent = make_agent(tmp_path, controller)
    stream = FakeStream(on_beat=stops(lambda: agent))
    controller.streams.append(stream)

    await agent.run()

    [(node, request_id)] = controller.registrations
    assert (node.provider, node.endpoint, node.region) == ("bare-metal", "host-1", "eu-west-1")
    assert dict(node.labels) == {"tier": "gpu"}
    assert (node.capabilities.cpu_cores, node.capabilities.memory_gb) == (2.0, 4.0)
    assert request_id.startswith("agent:")
    assert load_state(tmp_path / "agent-state.json") == AgentState(
        "node-1", "controller.test:50051"
    )
    assert controller.hellos == [("node-1", "0.1.0")]
    assert stream.closed and not stream.cancelled
    assert messages(caplog) == ["registered", "heartbeat stream opened", "stopped"]


async def test_a_restart_reuses_the_saved_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_state(tmp_path / "agent-state.json", AgentState("node-7"))
    controller = FakeController()
    controller.add_node("node-7")
    agent = make_agent(tmp_path, controller)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    assert controller.registrations == []
    assert controller.hellos == [("node-7", "0.1.0")]
    assert messages(caplog) == ["reusing node", "heartbeat stream opened", "stopped"]


async def test_a_saved_node_the_controller_does_not_know_is_registered_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_state(tmp_path / "agent-state.json", AgentState("node-lost"))
    controller = FakeController()
    agent = make_agent(tmp_path, controller)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    assert len(controller.registrations) == 1
    assert load_state(tmp_path / "agent-state.json") == AgentState(
        "node-1", "controller.test:50051"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["saved node not found; registering anew"]


async def test_a_reconnect_request_is_followed_at_once_without_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    agent = make_agent(tmp_path, controller)
    first = FakeStream(on_beat=lambda stream, sequence: stream.reconnect("stream lifetime reached"))
    controller.streams += [first, FakeStream(on_beat=stops(lambda: agent))]

    await agent.run()

    assert reasons(caplog) == ["stream lifetime reached"]
    assert agent.failures == 0
    assert first.closed and not first.cancelled
    assert controller.clients == 2  # a new channel: the next stream may land on another replica


async def test_failures_back_off_and_a_session_with_an_acked_beat_resets_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    failures: list[int] = []  # the agent's failure count as each attempt starts

    def counting_client(target: str) -> FakeClient:
        failures.append(agent.failures)
        return controller.client(target)

    agent = make_agent(tmp_path, controller, counting_client)
    refused = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")

    def acked_then_ended(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        stream.end(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"))

    controller.streams += [
        FakeStream(open_error=refused),
        FakeStream(open_error=refused),
        FakeStream(on_beat=acked_then_ended),
        FakeStream(on_beat=stops(lambda: agent)),
    ]

    await agent.run()

    # The acked session reset the count of 2; its own failure then counted as the first.
    assert failures == [0, 1, 2, 1]
    assert reasons(caplog) == [
        "UNAVAILABLE: connection refused",
        "UNAVAILABLE: connection refused",
        "UNAVAILABLE: connection reset",
    ]


async def test_a_node_deleted_while_the_agent_runs_is_registered_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    agent = make_agent(tmp_path, controller)

    def deleted(stream: FakeStream, sequence: int) -> None:
        del controller.nodes["node-1"]
        stream.end(rpc_error(grpc.StatusCode.NOT_FOUND, "node 'node-1' not found"))

    controller.streams += [FakeStream(on_beat=deleted), FakeStream(on_beat=stops(lambda: agent))]

    await agent.run()

    first, second = (request_id for _, request_id in controller.registrations)
    assert first != second  # a new registration, not a replay of the deleted one
    assert [node_id for node_id, _ in controller.hellos] == ["node-1", "node-2"]
    assert load_state(tmp_path / "agent-state.json") == AgentState(
        "node-2", "controller.test:50051"
    )


async def test_a_registration_retried_after_a_failure_keeps_its_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    controller.register_errors.append(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "slow"))
    agent = make_agent(tmp_path, controller)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    first, second = (request_id for _, request_id in controller.registrations)
    assert first == second
    assert reasons(caplog) == ["registration failed: DEADLINE_EXCEEDED: slow"]


def delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [
        r.fields["delay_s"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "reconnecting"
    ]


@pytest.mark.parametrize("stream_refused", [False, True], ids=["registration", "stream"])
async def test_an_overloaded_controller_is_retried_no_sooner_than_it_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stream_refused: bool
) -> None:
    # What admission answers when its queue is full (controller/api/admission.py); the hint
    # is 4 ms here, so that the test waits little, and the backoff alone would wait ~15 us.
    overloaded = ApiError(
        "retry in 0.0s",
        code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason="OVERLOADED",
        metadata={"retry_after_ms": "4"},
    )
    controller = FakeController()
    agent = make_agent(tmp_path, controller)
    if stream_refused:
        controller.streams.append(FakeStream(open_error=overloaded))
    else:
        controller.register_errors.append(overloaded)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    [delay] = delays(caplog)
    assert 0.004 <= delay <= 0.006  # the hint, spread over half as long again


@pytest.mark.parametrize("hint", ["", "soon", "-5", "nan", "inf"])
async def test_a_refusal_without_a_usable_hint_is_retried_after_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hint: str
) -> None:
    refused = ApiError(
        "busy", code=grpc.StatusCode.RESOURCE_EXHAUSTED, metadata={"retry_after_ms": hint}
    )
    controller = FakeController()
    controller.register_errors.append(refused)
    agent = make_agent(tmp_path, controller)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    [delay] = delays(caplog)
    assert delay < 0.001


async def test_an_invalid_registration_is_refused_without_retrying(tmp_path: Path) -> None:
    controller = FakeController()
    controller.register_errors.append(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad label"))
    agent = make_agent(tmp_path, controller)

    with pytest.raises(RegistrationRefused, match="bad label"):
        await agent.run()

    assert len(controller.registrations) == 1


async def test_a_stop_during_a_long_backoff_ends_the_agent_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    agent = Agent(
        settings(tmp_path, backoff_base_s=600.0, backoff_max_s=600.0),
        load=hb.NodeLoad,
        rand=lambda: 0.99,  # a 594 s delay
        client=controller.client,
    )

    class RefusedThenStopped(FakeStream):
        async def open(self) -> FakeStream:
            asyncio.get_running_loop().call_soon(agent.stop)
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")

    controller.streams.append(RefusedThenStopped())

    await asyncio.wait_for(agent.run(), timeout=10)

    assert messages(caplog)[-2:] == ["reconnecting", "stopped"]


async def test_an_unexpected_error_is_logged_and_retried_instead_of_ending_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    agent = make_agent(tmp_path, controller)

    class Buggy(FakeStream):
        async def open(self) -> FakeStream:
            raise RuntimeError("a bug")

    controller.streams += [Buggy(), FakeStream(on_beat=stops(lambda: agent))]

    await agent.run()

    assert reasons(caplog) == ["unexpected error: RuntimeError('a bug')"]
    assert "unexpected error" in messages(caplog)
    assert messages(caplog)[-1] == "stopped"


async def test_a_list_of_controllers_is_tried_in_turn_from_a_random_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    controller = FakeController()
    controller.add_node("node-1")
    save_state(tmp_path / "agent-state.json", AgentState("node-1"))
    agent = Agent(
        settings(tmp_path, controller="a:1, b:2,c:3"),
        load=hb.NodeLoad,
        rand=lambda: 0.5,  # starts at the middle one; every delay is half its bound
        client=controller.client,
    )
    down = [FakeStream(open_error=rpc_error(grpc.StatusCode.UNAVAILABLE, "refused")) for _ in "xyz"]

    def reconnect(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        stream.send(hb.HeartbeatResponse(reconnect=hb.Reconnect(reason="draining")))

    controller.streams += [
        *down,
        FakeStream(on_beat=reconnect),
        FakeStream(on_beat=stops(lambda: agent)),
    ]

    await asyncio.wait_for(agent.run(), timeout=10)

    # get_node, then one stream per attempt: b, c, a (all down), b (Reconnect), c.
    assert controller.targets == ["b:2", "c:3", "a:1", "b:2", "c:3"]
    opened = [r for r in caplog.records if r.getMessage() == "heartbeat stream opened"]
    assert [r.fields["controller"] for r in opened] == ["b:2", "c:3"]  # type: ignore[attr-defined]
