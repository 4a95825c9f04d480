"""`automator67 stats` and `automator67 status`: the fleet at a glance.

`stats` prints the two stats responses (GetNodeStats, GetDeploymentStats); with `-o json` one
object `{"nodes": ..., "deployments": ...}` whose parts are those responses in proto3 JSON.
`status` is one screen for an operator, as `nomad status` / `nomad server members`: which
replica answered and which leads, nodes and deployments by status, capacity, and what needs
attention (nodes not READY, deployments FAILED or PENDING: a few of each status)."""

from __future__ import annotations

import argparse
import json
from itertools import islice

from automator67.client import Client
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns

from controller.ctl import deployments, nodes
from controller.ctl.output import Column, Console, Format, render_fields, render_table, to_dict

ATTENTION_ROWS = 5  # per status, on the status screen
NODE_TROUBLE = (
    node_pb2.NODE_STATUS_OFFLINE,
    node_pb2.NODE_STATUS_SUSPECT,
    node_pb2.NODE_STATUS_PENDING,
)
NODE_ORDER = ("READY", "SUSPECT", "OFFLINE", "PENDING")
DEPLOYMENT_ORDER = ("RUNNING", "SCHEDULED", "PENDING", "FAILED", "STOPPING", "STOPPED")


def counts(by_status: dict[str, int], prefix: str, order: tuple[str, ...]) -> str:
    """`READY 3, SUSPECT 1` in a fixed order (statuses with no member left out)."""
    short = {k.removeprefix(prefix): v for k, v in by_status.items()}
    known = [f"{s} {short[s]}" for s in order if short.get(s)]
    others = [f"{s} {n}" for s, n in sorted(short.items()) if s not in order and n]
    return ", ".join(known + others) or "none"


def capacity(c: ns.Capacity) -> str:
    return f"{c.cpu_cores:g} cpu, {c.memory_gb:g} GiB memory, {c.disk_gb:g} GiB disk"


def stats(client: Client, args: argparse.Namespace, console: Console) -> None:
    node_stats = client.get_node_stats()
    deployment_stats = client.get_deployment_stats()
    if Format(args.output) is Format.JSON:
        both = {"nodes": to_dict(node_stats), "deployments": to_dict(deployment_stats)}
        console.print(json.dumps(both, indent=2))
        return
    pairs = [
        ("Nodes", str(node_stats.total)),
        ("  by status", counts(dict(node_stats.by_status), "NODE_STATUS_", NODE_ORDER)),
        ("  by provider", _plain(dict(node_stats.by_provider))),
        ("  by region", _plain(dict(node_stats.by_region))),
        ("  capacity", capacity(node_stats.total_capacity)),
        ("  ready capacity", capacity(node_stats.ready_capacity)),
        ("Deployments", str(deployment_stats.total)),
        (
            "  by status",
            counts(dict(deployment_stats.by_status), "DEPLOYMENT_STATUS_", DEPLOYMENT_ORDER),
        ),
        (
            "  replicas",
            f"{deployment_stats.replicas_placed} placed of "
            f"{deployment_stats.replicas_requested} requested",
        ),
    ]
    console.print(render_fields(pairs))


def status(client: Client, args: argparse.Namespace, console: Console) -> None:
    node_stats = client.get_node_stats()
    deployment_stats = client.get_deployment_stats()
    troubled_nodes = [
        n
        for status in NODE_TROUBLE
        for n in islice(client.list_nodes(f"status = {nodes.status_name(status)}"), ATTENTION_ROWS)
    ]
    troubled_deployments = [
        d
        for status in (dpb.DEPLOYMENT_STATUS_FAILED, dpb.DEPLOYMENT_STATUS_PENDING)
        for d in islice(
            client.list_deployments(f"status = {deployments.status_name(status)}"), ATTENTION_ROWS
        )
    ]
    if Format(args.output) is Format.JSON:
        screen = {
            "nodes": to_dict(node_stats),
            "deployments": to_dict(deployment_stats),
            "troubledNodes": to_dict(ns.ListNodesResponse(nodes=troubled_nodes)).get("nodes", []),
            "troubledDeployments": to_dict(
                ds.ListDeploymentsResponse(deployments=troubled_deployments)
            ).get("deployments", []),
        }
        console.print(json.dumps(screen, indent=2))
        return
    replica, leader = node_stats.replica_id or "-", node_stats.leader_id or "none"
    role = "the leader" if replica == leader else f"leader {leader}"
    pairs = [
        ("Controller", f"{client.target} (replica {replica}, {role})"),
        (
            "Nodes",
            f"{node_stats.total}: "
            + counts(dict(node_stats.by_status), "NODE_STATUS_", NODE_ORDER),
        ),
        ("Ready capacity", capacity(node_stats.ready_capacity)),
        (
            "Deployments",
            f"{deployment_stats.total}: "
            + counts(dict(deployment_stats.by_status), "DEPLOYMENT_STATUS_", DEPLOYMENT_ORDER),
        ),
        (
            "Replicas",
            f"{deployment_stats.replicas_placed} placed of "
            f"{deployment_stats.replicas_requested} requested",
        ),
    ]
    if node_stats.self_suspected:
        pairs.append(
            ("Warning", "most nodes look dead to this replica: it suspects itself, not them")
        )
    text = render_fields(pairs)
    if troubled_nodes:
        rows = [nodes.row(n, False, console) for n in troubled_nodes]
        text += "\nNodes not READY\n" + render_table(nodes.COLUMNS, rows, console.width)
    if troubled_deployments:
        rows = [
            [d.name, deployments.status_name(d.status), deployments.ready(d), d.status_reason]
            for d in troubled_deployments
        ]
        columns = [Column("NAME"), Column("STATUS"), Column("READY")]
        columns.append(Column("REASON", shrink=True, min_width=10))
        text += "\nDeployments not running\n" + render_table(columns, rows, console.width)
    if not troubled_nodes and not troubled_deployments:
        text += "\nAll nodes READY; no deployment FAILED or PENDING.\n"
    console.print(text)


def _plain(by: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(by.items()) if v) or "none"
