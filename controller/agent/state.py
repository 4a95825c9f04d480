"""What the agent keeps across restarts: its node's id, in a small JSON file.

    {"version": 1, "node_id": "1b4e28ba-...", "controller": "10.0.0.5:50051", "token": "eyJ..."}

Written atomically (a temporary file in the same folder, fsync, `os.replace`, fsync of the
folder), so a crash or power loss leaves either the old file or the new one, never a torn one;
a torn file would make the agent register a second node. The file is created with mode 0600:
it holds the node token RegisterNode returned, which lets whoever reads it beat for the node."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    document = {"version": VERSION, "node_id": state.node_id, "controller": state.controller}
    if state.token:
        document["token"] = state.token
    text = json.dumps(document, indent=2)
    # mkstemp creates the file with mode 0600, so the id is never readable by others, not even
    # between the write and the rename.
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
