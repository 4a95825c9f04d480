"""A deployment from the command line: a JSON or YAML file (`-f FILE`, `-` for stdin) with any
field of `automator67.v1.Deployment` in proto3 JSON (camelCase or snake_case names, enums by
name), overridden by the flags of the common fields.

On update (as `kubectl set env` and `kubectl label`), `--env KEY=VALUE` and `--label
KEY=VALUE` add to the deployment's map and `KEY-` removes a key; `--cpu`, `--memory-gb`,
`--disk-gb` change one resource and `--provider`, `--region` one constraint, keeping the rest.
Every other field given replaces the current value. The update mask names the top-level fields
whose value differs from the deployment read just before (none: nothing is written). A file's
`etag` is ignored (the scheduler moves a deployment's etag as it works; `--etag` makes an update
conditional), and so are its output-only fields, so `get -o json` output can be edited and
sent back."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from automator67.v1 import deployment_pb2
from google.protobuf import json_format

from controller.ctl.failures import usage

UPDATABLE = ("replicas", "image", "command", "args", "env", "resources", "constraints", "strategy")
STRATEGIES = {
    "default": deployment_pb2.PLACEMENT_STRATEGY_UNSPECIFIED,
    "spread": deployment_pb2.PLACEMENT_STRATEGY_SPREAD,
    "binpack": deployment_pb2.PLACEMENT_STRATEGY_BINPACK,
}
_FIELDS = deployment_pb2.Deployment.DESCRIPTOR.fields_by_name
_BY_JSON_NAME = {f.json_name: f.name for f in _FIELDS.values()} | {n: n for n in _FIELDS}


def read_file(path: str) -> dict[str, Any]:
    """The mapping in a JSON or YAML file (YAML is read with `safe_load`; JSON is YAML too, but
    a `.json` file is read as JSON for its clearer errors). `{"deployment": {...}}`, the
    request body of CreateDeployment, is unwrapped."""
    import yaml  # only when a file is read: `deployments list` need not load it

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise usage(f"cannot read {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise usage(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
            + " ".join(str(error).split())
        ) from None
    if (
        isinstance(data, dict)
        and set(data) == {"deployment"}
        and isinstance(data["deployment"], dict)
    ):
        data = data["deployment"]
    if not isinstance(data, dict):
        raise usage(f"{path}: expected a mapping of deployment fields, got {type(data).__name__}")
    return data


def from_file(path: str) -> tuple[deployment_pb2.Deployment, set[str]]:
    """The deployment in the file, and the top-level fields it sets."""
    data = read_file(path)
    deployment = deployment_pb2.Deployment()
    try:
        json_format.ParseDict(data, deployment)
    except json_format.ParseError as error:
        raise usage(f"{path}: {' '.join(str(error).split())}") from None
    return deployment, {_BY_JSON_NAME.get(key, key) for key in data}


def apply_flags(
    deployment: deployment_pb2.Deployment,
    args: argparse.Namespace,
    current: deployment_pb2.Deployment | None = None,
) -> set[str]:
    """Sets the fields given by flags on `deployment` (merged with `current`'s maps, resources
    and constraints when updating); returns the top-level fields touched."""
    touched: set[str] = set()
    base = current or deployment
    if getattr(args, "image", None) is not None:
        deployment.image = args.image
        touched.add("image")
    if getattr(args, "command", None) is not None:
        try:
            command = shlex.split(args.command)
        except ValueError as error:
            raise usage(f"--command {args.command!r}: {error}") from None
        deployment.ClearField("command")
        deployment.command.extend(command)
        touched.add("command")
    if getattr(args, "args", None) is not None:
        deployment.ClearField("args")
        deployment.args.extend(args.args)
        touched.add("args")
    if getattr(args, "replicas", None) is not None:
        deployment.replicas = args.replicas
        touched.add("replicas")
    if getattr(args, "strategy", None) is not None:
        deployment.strategy = STRATEGIES[args.strategy]
        touched.add("strategy")
    if getattr(args, "env", None):
        merged = edit_map(dict(base.env), args.env, "--env")
        deployment.ClearField("env")
        deployment.env.update(merged)
        touched.add("env")
    resources = {"cpu_cores": "cpu", "memory_gb": "memory_gb", "disk_gb": "disk_gb"}
    given = {
        f: getattr(args, a) for f, a in resources.items() if getattr(args, a, None) is not None
    }
    if given:
        deployment.resources.CopyFrom(base.resources)
        for name, value in given.items():
            setattr(deployment.resources, name, value)
        touched.add("resources")
    constraints = {
        k: getattr(args, k) for k in ("provider", "region") if getattr(args, k, None) is not None
    }
    if constraints or getattr(args, "labels", None):
        deployment.constraints.CopyFrom(base.constraints)
        for name, value in constraints.items():
            setattr(deployment.constraints, name, value)
        if getattr(args, "labels", None):
            merged = edit_map(dict(base.constraints.labels), args.labels, "--label")
            deployment.constraints.ClearField("labels")
            deployment.constraints.labels.update(merged)
        touched.add("constraints")
    return touched


def edit_map(current: dict[str, str], edits: list[str], flag: str) -> dict[str, str]:
    """`KEY=VALUE` sets a key, `KEY-` removes one (as kubectl's `set env` and `label`)."""
    result = dict(current)
    for edit in edits:
        if "=" in edit:
            key, value = edit.split("=", 1)
            if not key:
                raise usage(f"{flag} {edit!r}: the key is empty")
            result[key] = value
        elif edit.endswith("-") and len(edit) > 1:
            result.pop(edit[:-1], None)
        else:
            raise usage(f"{flag} {edit!r}: give KEY=VALUE, or KEY- to remove KEY")
    return result


def changed_fields(
    new: deployment_pb2.Deployment, current: deployment_pb2.Deployment, touched: set[str]
) -> list[str]:
    """The update mask: the touched updatable fields whose value differs from `current`'s."""
    mask = []
    for name in UPDATABLE:
        if name not in touched:
            continue
        if name == "replicas":
            differs = new.replicas != current.replicas or not current.HasField("replicas")
        else:
            differs = getattr(new, name) != getattr(current, name)
        if differs:
            mask.append(name)
    return mask


def ignored_fields(touched: set[str]) -> list[str]:
    """Fields a file sets that an update cannot change (id, name, output-only ones)."""
    return sorted(touched - set(UPDATABLE))
