"""What the agent keeps across restarts: its node's id, and the processes its exec driver
started (so that a restarted agent adopts them instead of starting copies:
agent/drivers/adoption.py), in a small JSON file.

    {"version": 1, "node_id": "1b4e28ba-...", "controller": "10.0.0.5:50051", "token": "eyJ...",
     "workloads": [{"deployment_id": "...", "replica_index": 0, "placement_id": "9f0c...",
                    "etag": "3", "pid": 4242, "create_time": 1764675000.12}]}

The node fields and the workloads are written separately (`save_state`, `save_workloads`), each
keeping what the file holds of the other.

Written atomically and durably (`controller/files.py`), so a crash or power loss leaves either
the old file or the new one, never a torn one; a torn file would make the agent register a
second node. The file is created with mode 0600: it holds the node token RegisterNode returned,
which lets whoever reads it beat for the node."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from controller.files import write_private_file

VERSION = 1


class StateFileError(Exception):
    """The state file exists but cannot be read or understood. The agent stops rather than
    register a duplicate node; the operator fixes or removes the file."""


@dataclass(frozen=True)
class WorkloadRecord:
    """A process the exec driver started: which placement it serves, at which spec version
    (`etag`), and its pid with its start time (a pid alone may have been recycled)."""

    deployment_id: str
    replica_index: int
    placement_id: str
    etag: str
    pid: int
    create_time: float


@dataclass(frozen=True)
class AgentState:
    node_id: str
    controller: str = ""  # where the node was registered; for people reading the file
    token: str = field(default="", repr=False)  # the node token RegisterNode returned, if any
    # what the exec driver runs (agent/drivers/adoption.py)
    workloads: tuple[WorkloadRecord, ...] = ()


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
        node_id,
        str(data.get("controller", "")),
        token if isinstance(token, str) else "",
        _records(data.get("workloads")),
    )


def _records(items: object) -> tuple[WorkloadRecord, ...]:
    """The workload records that are whole; others are dropped (their processes are not
    adopted, which is the agent's behaviour without records)."""
    if not isinstance(items, list):
        return ()
    records = []
    for item in items:
        try:
            records.append(
                WorkloadRecord(
                    str(item["deployment_id"]),
                    int(item["replica_index"]),
                    str(item["placement_id"]),
                    str(item["etag"]),
                    int(item["pid"]),
                    float(item["create_time"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(records)


def save_state(path: Path, state: AgentState) -> None:
    """Replaces the file's node fields with `state`'s atomically, with mode 0600, keeping the
    workloads it records. Creates missing folders."""
    _write(path, state.node_id, state.controller, state.token, _saved_workloads(path))


def save_workloads(path: Path, records: Iterable[WorkloadRecord]) -> None:
    """Replaces the file's workloads with `records` atomically, keeping its node fields. Does
    nothing without a state file (no node, so no workload either)."""
    saved = _saved_state(path)
    if saved is not None:
        _write(path, saved.node_id, saved.controller, saved.token, tuple(records))


def _saved_state(path: Path) -> AgentState | None:
    try:
        return load_state(path)
    except StateFileError:
        return None


def _saved_workloads(path: Path) -> tuple[WorkloadRecord, ...]:
    saved = _saved_state(path)
    return saved.workloads if saved is not None else ()


def _write(
    path: Path,
    node_id: str,
    controller: str,
    token: str,
    workloads: tuple[WorkloadRecord, ...],
) -> None:
    document: dict[str, object] = {"version": VERSION, "node_id": node_id, "controller": controller}
    if token:
        document["token"] = token
    if workloads:
        document["workloads"] = [asdict(record) for record in workloads]
    write_private_file(path, (json.dumps(document, indent=2) + "\n").encode())
