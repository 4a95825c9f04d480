"""The reference agent and its tokens: an admin token registers and the node token it gets back
is kept and used; a node token streams for its own node and never registers; a refused saved
token falls back to the configured one. Against the fake controller of test_agent_runner."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
from automator67.agent import node_of_token

from controller.agent.runner import Agent
from controller.agent.state import AgentState, load_state, save_state
from controller.auth.keys import signing_keys
from controller.auth.principals import Role
from controller.auth.tokens import TokenIssuer, TokenSettings
from controller.config import Config

from .test_agent_runner import FakeClient, FakeController, make_agent, stops
from .test_agent_session import FakeStream, rpc_error


def token(tmp_path: Path, role: Role, subject: str) -> str:
    keys = signing_keys(Config(data_dir=tmp_path / "keys"), generate=True)
    return TokenIssuer(keys, TokenSettings()).issue(role, subject, 600)


def recording(
    controller: FakeController, agent: list[Agent], used: list[str], target: str
) -> FakeClient:
    """A client factory that notes the token each new connection would carry."""
    used.append(agent[0]._token())
    return controller.client(target)


async def test_an_admin_token_registers_then_the_node_token_is_kept_and_used(
    tmp_path: Path,
) -> None:
    admin = token(tmp_path, Role.ADMIN, "ops")
    controller = FakeController()
    controller.agent_tokens = ["node-token-1"]
    used: list[str] = []
    holder: list[Agent] = []
    agent = make_agent(
        tmp_path,
        controller,
        client=lambda target: recording(controller, holder, used, target),
        token=admin,
    )
    holder.append(agent)
    broken = FakeStream(open_error=rpc_error(grpc.StatusCode.UNAVAILABLE, "restarting"))
    controller.streams += [broken, FakeStream(on_beat=stops(lambda: agent))]

    await agent.run()

    state_file = tmp_path / "agent-state.json"
    assert load_state(state_file) == AgentState("node-1", "controller.test:50051", "node-token-1")
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert used == [admin, "node-token-1"]  # registered with the admin token, then its own
    assert len(controller.registrations) == 1
    assert controller.hellos == [("node-1", "0.1.0"), ("node-1", "0.1.0")]


async def test_a_node_token_streams_for_its_node_and_never_registers(tmp_path: Path) -> None:
    node_token = token(tmp_path, Role.NODE, "node-42")
    controller = FakeController()  # knows no node: a GetNode would fail, a register would show
    agent = make_agent(tmp_path, controller, token=node_token)
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    assert node_of_token(node_token) == "node-42"
    assert controller.registrations == []
    assert controller.hellos == [("node-42", "0.1.0")]
    assert agent._token() == node_token


async def test_a_saved_node_token_skips_the_get_node_it_may_not_call(tmp_path: Path) -> None:
    save_state(tmp_path / "agent-state.json", AgentState("node-7", "c", "saved-node-token"))
    controller = FakeController()  # does not list node-7: only the stream could tell
    agent = make_agent(tmp_path, controller, token=token(tmp_path, Role.ADMIN, "ops"))
    controller.streams.append(FakeStream(on_beat=stops(lambda: agent)))

    await agent.run()

    assert controller.registrations == []
    assert controller.hellos == [("node-7", "0.1.0")]


async def test_a_refused_saved_token_falls_back_to_the_configured_one(tmp_path: Path) -> None:
    admin = token(tmp_path, Role.ADMIN, "ops")
    save_state(tmp_path / "agent-state.json", AgentState("node-7", "c", "stale-node-token"))
    controller = FakeController()
    used: list[str] = []
    holder: list[Agent] = []
    agent = make_agent(
        tmp_path,
        controller,
        client=lambda target: recording(controller, holder, used, target),
        token=admin,
    )
    holder.append(agent)
    refused = FakeStream(open_error=rpc_error(grpc.StatusCode.UNAUTHENTICATED, "bad token"))
    controller.streams += [refused, FakeStream(on_beat=stops(lambda: agent))]

    await agent.run()

    assert used == ["stale-node-token", admin]
    assert controller.hellos == [("node-7", "0.1.0"), ("node-7", "0.1.0")]


def test_only_a_node_token_names_a_node(tmp_path: Path) -> None:
    assert node_of_token(token(tmp_path, Role.ADMIN, "ops")) == ""
    assert node_of_token("junk") == node_of_token("") == ""
