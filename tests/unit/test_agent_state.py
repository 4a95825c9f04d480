"""The agent's state file: the node id across restarts, written atomically with mode 0600."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from controller.agent.state import AgentState, StateFileError, load_state, save_state


def test_a_missing_file_means_no_saved_node(tmp_path: Path) -> None:
    assert load_state(tmp_path / "agent-state.json") is None


def test_a_saved_node_id_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"

    save_state(path, AgentState("node-1", "10.0.0.5:50051"))

    assert load_state(path) == AgentState("node-1", "10.0.0.5:50051")
    assert json.loads(path.read_text()) == {
        "version": 1,
        "node_id": "node-1",
        "controller": "10.0.0.5:50051",
    }


def test_the_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"

    save_state(path, AgentState("node-1"))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_saving_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"
    save_state(path, AgentState("node-1"))

    save_state(path, AgentState("node-2"))

    assert load_state(path) == AgentState("node-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-state.json"]


def test_missing_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "automator67" / "agent-state.json"

    save_state(path, AgentState("node-1"))

    assert load_state(path) == AgentState("node-1")


def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent-state.json"
    save_state(path, AgentState("node-1"))

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        save_state(path, AgentState("node-2"))

    assert load_state(path) == AgentState("node-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-state.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "is not JSON", id="not JSON"),
        pytest.param('["node-1"]', "version 1 state object", id="not an object"),
        pytest.param('{"version": 9, "node_id": "n"}', "version 1", id="an unknown version"),
        pytest.param('{"version": 1}', "node_id is missing", id="no node id"),
        pytest.param('{"version": 1, "node_id": ""}', "node_id is missing", id="an empty node id"),
    ],
)
def test_an_unreadable_file_stops_the_agent_instead_of_registering_twice(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "agent-state.json"
    path.write_text(text)

    with pytest.raises(StateFileError, match=message):
        load_state(path)
