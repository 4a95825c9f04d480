"""`automator67 nodes list|get|delete|watch` (cordon, uncordon and drain: node_drain.py).

The table shows ids cut to 8 characters, as nomad does (any unique prefix names a node);
`-o wide` shows them whole, with the endpoint, disk, labels and etag."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from automator67.client import Client
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns

from controller.ctl import interrupt, resolve
from controller.ctl.output import (
    Column,
    Console,
    Format,
    Table,
    WatchPrinter,
    age,
    ago,
    render_fields,
    render_table,
    short,
    timestamp,
    to_json,
)

SHORT_ID = 8
COLUMNS = [
    Column("ID"),
    Column("STATUS"),
    Column("PROVIDER", shrink=True),
    Column("REGION", shrink=True),
    Column("CPU"),
    Column("MEMORY"),
    Column("LAST BEAT"),
    Column("CREATED"),
]
WIDE = [
    *COLUMNS,
    Column("ENDPOINT", shrink=True),
    Column("DISK"),
    Column("LABELS", shrink=True),
    Column("ETAG"),
]


def status_name(status: node_pb2.NodeStatus.ValueType) -> str:
    return short(node_pb2.NodeStatus.Name(status), "NODE_STATUS_")


def scheduling(node: node_pb2.Node) -> str:
    """The node's status, with `,cordoned` or `,draining` as kubectl adds SchedulingDisabled."""
    status = status_name(node.status)
    if node.HasField("drain") and node.drain.state == node_pb2.DRAIN_STATE_DRAINING:
        return f"{status},draining"
    return f"{status},cordoned" if node.unschedulable else status


def labels(node: node_pb2.Node) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-"


def row(node: node_pb2.Node, wide: bool, console: Console) -> list[str]:
    now = console.clock()
    caps = node.capabilities
    cells = [
        node.id if wide else node.id[:SHORT_ID],
        scheduling(node),
        node.provider,
        node.region or "-",
        f"{caps.cpu_cores:g}",
        f"{caps.memory_gb:g}Gi",
        ago(timestamp(node.last_heartbeat_time), now),
        ago(timestamp(node.create_time), now, never="-"),
    ]
    if wide:
        cells += [node.endpoint, f"{caps.disk_gb:g}Gi", labels(node), node.etag]
    return cells


def table(nodes: Sequence[node_pb2.Node], fmt: Format, console: Console) -> str:
    wide = fmt is Format.WIDE
    rows = [row(n, wide, console) for n in nodes]
    return render_table(WIDE if wide else COLUMNS, rows, console.width)


def detail(node: node_pb2.Node, console: Console) -> str:
    """Every field of one node, as `nomad node status ID` shows one."""
    now = console.clock()
    caps = node.capabilities
    pairs = [
        ("ID", node.id),
        ("Status", status_name(node.status)),
        ("Provider", node.provider),
        ("Endpoint", node.endpoint),
        ("Region", node.region or "-"),
        (
            "Capabilities",
            f"{caps.cpu_cores:g} cpu, {caps.memory_gb:g} GiB memory, "
            f"{caps.disk_gb:g} GiB disk"
            + (f", {caps.network_bandwidth}" if caps.network_bandwidth else ""),
        ),
        ("Labels", labels(node)),
        ("Schedulable", "no (cordoned)" if node.unschedulable else "yes"),
        *([("Drain", drain_line(node.drain, now))] if node.HasField("drain") else []),
        ("Credentials", "stored" if node.has_credentials else "none"),
        ("Last heartbeat", ago(timestamp(node.last_heartbeat_time), now)),
        ("Created", ago(timestamp(node.create_time), now, never="-")),
        ("Updated", ago(timestamp(node.update_time), now, never="-")),
        ("Etag", node.etag),
    ]
    return render_fields(pairs)


def drain_line(drain: node_pb2.NodeDrain, now: datetime) -> str:
    state = short(node_pb2.DrainState.Name(drain.state), "DRAIN_STATE_")
    deadline = timestamp(drain.deadline)
    left = ""
    if drain.state == node_pb2.DRAIN_STATE_DRAINING and deadline is not None:
        left = f", deadline in {age(max(0.0, (deadline - now).total_seconds()))}"
    return f"{state}: {drain.message}{left}"


def list_nodes(client: Client, args: argparse.Namespace, console: Console) -> None:
    nodes = list(client.list_nodes(args.filter))
    fmt = Format(args.output)
    if fmt is Format.JSON:
        console.print(to_json(ns.ListNodesResponse(nodes=nodes)))
    elif nodes:
        console.print(table(nodes, fmt, console))
    else:
        console.note("No nodes." if not args.filter else f"No nodes match {args.filter!r}.")


def get_node(client: Client, args: argparse.Namespace, console: Console) -> None:
    node = resolve.node(client, args.node)
    if Format(args.output) is Format.JSON:
        console.print(to_json(node))
    else:
        console.print(detail(node, console))


def delete_nodes(client: Client, args: argparse.Namespace, console: Console) -> None:
    # Resolve every reference first: a typo in the third one deletes nothing.
    nodes = [resolve.node(client, ref) for ref in args.nodes]
    for node in nodes:
        client.delete_node(node.id, etag=args.etag)
        if Format(args.output) is Format.JSON:
            console.print(to_json(node))
        else:
            console.print(f"node/{node.id} deleted")


def watch_nodes(client: Client, args: argparse.Namespace, console: Console) -> None:
    only = resolve.node(client, args.node).id if args.node else None
    fmt = Format(args.output)
    columns = [Column("EVENT"), *(WIDE if fmt is Format.WIDE else COLUMNS)]
    follow = WatchPrinter(Table(columns, console.width), console)
    with client.watch_nodes() as watch, interrupt.closing(watch):
        for event in watch:
            if only is not None and event.node.id and event.node.id != only:
                continue
            if fmt is Format.JSON:
                console.print(to_json(event, one_line=True))
                continue
            kind = short(ns.NodeEventType.Name(event.type), "NODE_EVENT_TYPE_")
            if event.type in (ns.NODE_EVENT_TYPE_SYNCED, ns.NODE_EVENT_TYPE_RESET):
                follow.marker(kind, event.revision)
            else:
                follow.row([kind, *row(event.node, fmt is Format.WIDE, console)])
