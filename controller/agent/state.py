"""What the agent keeps across restarts: its node's id, in a small JSON file.

    {"version": 1, "node_id": "1b4e28ba-...", "controller": "10.0.0.5:50051", "token": "eyJ..."}

Written atomically and durably (`controller/files.py`), so a crash or power loss leaves either
the old file or the new one, never a torn one; a torn file would make the agent register a
second node. The file is created with mode 0600: it holds the node token RegisterNode returned,
which lets whoever reads it beat for the node."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from controller.files import write_private_file

VERSION = 1


class StateFileError(Exception):
    """The state file exists but cannot be read or understood. The agent stops rather than
    register a duplicate node; the operator fixes or removes the file."""


@dataclass(frozen=True)
class AgentState:
    node_id: str
    controller: str = ""  # where the node was registered; for people reading the file
    token: str = field(default="", repr=False)  # the node token RegisterNode returned, if any


def load_state(path: Path) -> AgentState | None:
    """The saved state, or None if the file does not exist. Raises StateFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StateFileError(f"{path} is not JSON; fix or remove it") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateFileError(f"{path}: expected a version {VERSION} state object")
    node_id = data.get("node_id")
    if not isinstance(node_id, str) or not node_id:
        raise StateFileError(f"{path}: node_id is missing")
    token = data.get("token", "")
    return AgentState(
        node_id, str(data.get("controller", "")), token if isinstance(token, str) else ""
    )


def save_state(path: Path, state: AgentState) -> None:
    """Replaces the file with `state` atomically, with mode 0600. Creates missing folders."""
    document = {"version": VERSION, "node_id": state.node_id, "controller": state.controller}
    if state.token:
        document["token"] = state.token
    write_private_file(path, (json.dumps(document, indent=2) + "\n").encode())
