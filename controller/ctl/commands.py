"""The grammar of the operator commands: `automator67 nodes|deployments|stats|status ...`.

Only argparse and light modules are imported here: `automator67 --help` never loads grpc. Each
command names its handler as "module:function" (`handler` default), imported by `run.py` when
the command runs."""

from __future__ import annotations

import argparse
import functools
import re
from typing import Any

from controller.ctl.connection import ConnectionSettings

EXIT_CODES = """exit codes: 0 ok, 1 error, 2 usage or invalid argument, 3 not found, 4 conflict
(stale --etag, name taken, failed precondition), 5 unavailable or timed out, 6 unauthenticated
or permission denied, 7 --wait: the deployment cannot run (rollout status: its rollout was rolled
back or failed), 130 interrupted"""
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration_s(text: str) -> float:
    """`90`, `90s`, `1.5m`, `2h`, `500ms` -> seconds (argparse type)."""
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 5m or 1h")
    return float(match.group(1)) * UNITS_S[match.group(2)]


def replica_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("replicas cannot be negative")
    return value


@functools.cache
def _parents() -> list[argparse.ArgumentParser]:
    """Flags every operator command takes: the connection, and the output format (built once;
    argparse copies a parent's flags into each command)."""
    connection = argparse.ArgumentParser(add_help=False)
    ConnectionSettings.add_arguments(connection)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json"),
        default="table",
        help="table (default; fits the terminal), wide (more columns), or json (proto3 JSON: "
        "one object, or one per line for watch)",
    )
    return [output, connection]


def _command(
    group: Any, name: str, handler: str, help: str, description: str = ""
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        parents=_parents(),
        epilog=EXIT_CODES,
    )
    parser.set_defaults(handler=handler)
    return parser


def _wait_flags(parser: argparse.ArgumentParser, goal: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"wait until the deployment is {goal}, following it on WatchDeployments; fail "
        "with the reason if it cannot get there",
    )
    parser.add_argument(
        "--timeout",
        type=duration_s,
        default=300.0,
        metavar="DURATION",
        help="how long --wait waits: 30s, 5m, 1h (default 5m)",
    )


def _etag_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--etag",
        default="",
        help=f"{what} only if the resource is still at this etag (else exit 4, with the "
        "current etag)",
    )


def add_commands(commands: Any) -> None:
    """Adds `nodes`, `deployments`, `stats` and `status` to the `automator67` subcommands."""
    _add_nodes(commands)
    _add_deployments(commands)
    _command(
        commands,
        "stats",
        "controller.ctl.fleet:stats",
        "node and deployment counts (GetNodeStats, GetDeploymentStats)",
    )
    _command(
        commands,
        "status",
        "controller.ctl.fleet:status",
        "one screen of the fleet: nodes and deployments by status, which replica answered "
        "and which leads, and what needs attention",
    )


def _add_nodes(commands: Any) -> None:
    nodes = commands.add_parser(
        "nodes",
        help="list, show, watch and remove nodes",
        description="Nodes: ids may be shortened to any unique prefix.",
    )
    verbs = nodes.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = _command(verbs, "list", "controller.ctl.nodes:list_nodes", "list nodes")
    listing.add_argument(
        "--filter",
        default="",
        help="AIP-160 filter, e.g. 'status = READY AND region = \"eu-west-1\"' (fields: status, "
        "provider, region, labels.KEY)",
    )
    get = _command(verbs, "get", "controller.ctl.nodes:get_node", "show one node")
    get.add_argument("node", metavar="ID", help="the node's id, or a unique prefix of it")
    delete = _command(verbs, "delete", "controller.ctl.nodes:delete_nodes", "remove nodes")
    delete.add_argument("nodes", metavar="ID", nargs="+", help="ids or unique prefixes")
    _etag_flag(delete, "delete")
    watch = _command(
        verbs,
        "watch",
        "controller.ctl.nodes:watch_nodes",
        "print nodes, then every change as it happens (Ctrl-C ends)",
        "Print every node, then each change as it happens, one line (or one JSON object) per "
        "event; the EVENT column (or `type`) says what happened. Resumes after a broken stream. "
        "Ctrl-C ends it.",
    )
    watch.add_argument("node", metavar="ID", nargs="?", help="only this node (id or prefix)")
    _add_node_drains(verbs)


def _add_node_drains(verbs: Any) -> None:
    """`nodes cordon|uncordon|drain` (controller/ctl/node_drain.py)."""
    for verb, what in (
        ("cordon", "mark nodes unschedulable: nothing new goes there, what runs stays"),
        ("uncordon", "make nodes schedulable again (cancels a drain that still runs)"),
    ):
        command = _command(verbs, verb, f"controller.ctl.node_drain:{verb}_nodes", what)
        command.add_argument("nodes", metavar="ID", nargs="+", help="ids or unique prefixes")
    drain = _command(
        verbs,
        "drain",
        "controller.ctl.node_drain:drain_node",
        "cordon a node and move its replicas elsewhere",
        "Cordon a node and move its replicas elsewhere, each replacement running before the "
        "replica it replaces stops (the deployment's max_surge at a time); at the deadline the "
        "replicas still there are stopped. The node stays cordoned: `nodes uncordon` ends that.",
    )
    drain.add_argument("node", metavar="ID", help="the node's id, or a unique prefix of it")
    drain.add_argument(
        "--deadline",
        type=duration_s,
        default=None,
        metavar="DURATION",
        help="stop what is still on the node after this long: 30s, 10m, 1h (default: the "
        "controller's, 1h; 0 stops everything now); again while it drains: a new deadline",
    )
    drain.add_argument(
        "--cancel", action="store_true", help="stop draining (the node stays cordoned)"
    )
    drain.add_argument(
        "--wait",
        action="store_true",
        help="wait until the drain completes, following the node on WatchNodes",
    )
    drain.add_argument(
        "--timeout",
        type=duration_s,
        default=300.0,
        metavar="DURATION",
        help="how long --wait waits: 30s, 5m, 1h (default 5m)",
    )


def _add_deployments(commands: Any) -> None:
    deployments = commands.add_parser(
        "deployments",
        help="list, create, update, scale, watch, delete and roll out deployments",
        description="Deployments: name one by its name, its id, or a unique prefix of its id.",
    )
    verbs = deployments.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = _command(
        verbs, "list", "controller.ctl.deployments:list_deployments", "list deployments"
    )
    listing.add_argument(
        "--filter",
        default="",
        help="AIP-160 filter, e.g. 'status = FAILED' (fields: status, name, provider, region)",
    )
    get = _command(verbs, "get", "controller.ctl.deployments:get_deployment", "show a deployment")
    get.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")

    create = _command(
        verbs,
        "create",
        "controller.ctl.deployments:create_deployment",
        "create a deployment",
        "Create a deployment from flags, a JSON or YAML file of Deployment fields (-f), or both "
        "(flags win). Example: automator67 deployments create web --image nginx:1.27 "
        "--replicas 3 --cpu 0.5 --wait",
    )
    create.add_argument("name", metavar="NAME", nargs="?", help="its name (or `name` in -f FILE)")
    _spec_flags(create)
    create.add_argument(
        "--request-id",
        default=None,
        help="idempotency key: a retry with the same key creates nothing (default: a new UUID)",
    )
    _wait_flags(create, "RUNNING")

    update = _command(
        verbs,
        "update",
        "controller.ctl.deployments:update_deployment",
        "change a deployment's spec",
        "Change the fields given by flags or -f FILE; only fields whose value differs are sent "
        "(the update mask). --env and --label add to the current maps (KEY- removes a key). "
        "Unconditional unless --etag is given.",
    )
    update.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")
    _spec_flags(update)
    _etag_flag(update, "update")
    _wait_flags(update, "RUNNING")

    scale = _command(
        verbs, "scale", "controller.ctl.deployments:scale_deployment", "change the replica count"
    )
    scale.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")
    scale.add_argument("--replicas", type=replica_count, required=True, help="the new count")
    _etag_flag(scale, "scale")
    _wait_flags(scale, "RUNNING")

    delete = _command(
        verbs,
        "delete",
        "controller.ctl.deployments:delete_deployments",
        "delete deployments (they turn STOPPING, then are gone once their replicas stopped)",
    )
    delete.add_argument("deployments", metavar="NAME", nargs="+", help="names, ids or prefixes")
    _etag_flag(delete, "delete")
    _wait_flags(delete, "gone")

    watch = _command(
        verbs,
        "watch",
        "controller.ctl.deployments:watch_deployments",
        "print deployments, then every change as it happens (Ctrl-C ends)",
        "Print every deployment, then each change as it happens, one line (or one JSON object) "
        "per event. Resumes after a broken stream. Ctrl-C ends it.",
    )
    watch.add_argument(
        "deployment", metavar="NAME", nargs="?", help="only this deployment (name, id or prefix)"
    )
    _add_rollout(verbs)


def _add_rollout(verbs: Any) -> None:
    rollout = verbs.add_parser(
        "rollout",
        help="follow, list, undo, pause and resume a deployment's rollouts",
        description="Rolling updates of a deployment, as `kubectl rollout`: a change of its "
        "template (image, command, args, env, resources, health check) is rolled out a few "
        "replicas at a time.",
    )
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = _command(
        actions,
        "status",
        "controller.ctl.rollout:status",
        "say where the latest rollout stands",
        "Say where the deployment's latest rollout stands; with --watch, follow it until it "
        "ends. Exit 0 once it completed (or is paused), 7 with the reason if it was rolled "
        "back or failed (also when the latest rollout is the automatic rollback of a failed "
        "one), 5 at --timeout.",
    )
    status.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")
    status.add_argument(
        "-w", "--watch", action="store_true", help="follow the rollout until it ends"
    )
    status.add_argument(
        "--timeout",
        type=duration_s,
        default=600.0,
        metavar="DURATION",
        help="how long --watch waits: 30s, 5m, 1h (default 10m)",
    )
    history = _command(
        actions,
        "history",
        "controller.ctl.rollout:history",
        "list the deployment's rollouts, oldest first",
    )
    history.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")
    undo = _command(
        actions,
        "undo",
        "controller.ctl.rollout:undo",
        "roll back to the previous template, or to --to-generation",
        "Roll the template back to the last one that completed before the current one, or to "
        "the template of --to-generation (a TEMPLATE of `rollout history`): a new generation, "
        "rolled out like any change. Refused while paused (exit 4).",
    )
    undo.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")
    undo.add_argument(
        "--to-generation",
        type=int,
        default=0,
        metavar="N",
        help="the template generation to go back to (default: the previous one)",
    )
    _etag_flag(undo, "roll back")
    for action, does in (
        ("pause", "stop the rollout where it is (moving replicas finish, no others start)"),
        ("resume", "resume a paused rollout"),
    ):
        paused = _command(actions, action, f"controller.ctl.rollout:{action}", does)
        paused.add_argument("deployment", metavar="NAME", help="name, id, or unique id prefix")


def _spec_flags(parser: argparse.ArgumentParser) -> None:
    spec = parser.add_argument_group("deployment fields")
    spec.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        help="JSON or YAML file of Deployment fields in proto3 JSON (`-` reads stdin)",
    )
    spec.add_argument("--image", help="container image")
    spec.add_argument(
        "--command", metavar="COMMAND", help="command and fixed arguments, e.g. 'sleep 3600'"
    )
    spec.add_argument(
        "--arg",
        dest="args",
        action="append",
        metavar="ARG",
        help="an argument (repeatable; --arg=-v for one that starts with -)",
    )
    spec.add_argument(
        "--env", action="append", metavar="KEY=VALUE", help="an environment variable (repeatable)"
    )
    spec.add_argument("--replicas", type=replica_count, help="number of replicas (default 1)")
    spec.add_argument("--cpu", type=float, metavar="CORES", help="CPU cores per replica")
    spec.add_argument("--memory-gb", type=float, metavar="GIB", help="memory per replica, GiB")
    spec.add_argument("--disk-gb", type=float, metavar="GIB", help="disk per replica, GiB")
    spec.add_argument("--provider", help="place only on nodes of this provider")
    spec.add_argument("--region", help="place only on nodes in this region")
    spec.add_argument(
        "--label",
        dest="labels",
        action="append",
        metavar="KEY=VALUE",
        help="place only on nodes with this label (repeatable)",
    )
    spec.add_argument(
        "--strategy",
        choices=("spread", "binpack", "default"),
        help="how nodes are chosen (default: the controller's)",
    )
