"""Finding the resource an operator means: a whole id, a unique id prefix (as nomad accepts,
since tables show ids cut to 8 characters), or, for a deployment, its name (as kubectl names
resources).

A whole id (a UUID) is read with one Get. Anything else is looked up with List: a deployment
by `name = "..."` first (an exact name wins over an id that starts with the same characters),
then by id prefix over every page. No match is NOT_FOUND (exit 3); several matches are a usage
error (exit 2) that names them, so the operator can type more characters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from controller.ctl.failures import CommandError, ExitCode, usage

if TYPE_CHECKING:
    from automator67.client import Client
    from automator67.v1 import deployment_pb2, node_pb2

_UUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SHOWN_MATCHES = 5
_T = TypeVar("_T")


def is_full_id(ref: str) -> bool:
    return bool(_UUID.match(ref))


def node(client: Client, ref: str) -> node_pb2.Node:
    """The node `ref` names: its id or a unique prefix of it."""
    ref = _checked(ref, "node")
    if is_full_id(ref):
        return client.get_node(ref.lower())
    return _one("node", ref, [n for n in client.list_nodes() if n.id.startswith(ref.lower())])


def deployment(client: Client, ref: str) -> deployment_pb2.Deployment:
    """The deployment `ref` names: its id, its name, or a unique prefix of its id."""
    ref = _checked(ref, "deployment")
    if is_full_id(ref):
        return client.get_deployment(ref.lower())
    if _NAME.match(ref):
        named = list(client.list_deployments(f'name = "{ref}"'))
        if named:
            return named[0]
    prefix = ref.lower()
    return _one(
        "deployment", ref, [d for d in client.list_deployments() if d.id.startswith(prefix)]
    )


def _checked(ref: str, kind: str) -> str:
    ref = ref.strip()
    if not ref:
        raise usage(f"name the {kind}: its id or the first characters of it")
    return ref


def _one(kind: str, ref: str, matches: Iterable[_T]) -> _T:
    found = list(matches)
    if not found:
        raise CommandError(f"no {kind} matches {ref!r}", ExitCode.NOT_FOUND)
    if len(found) > 1:
        ids = sorted(getattr(m, "id", "") for m in found)
        shown = ", ".join(ids[:SHOWN_MATCHES]) + (", ..." if len(ids) > SHOWN_MATCHES else "")
        raise usage(
            f"{ref!r} matches {len(found)} {kind}s ({shown}); give more characters of the id"
        )
    return found[0]
