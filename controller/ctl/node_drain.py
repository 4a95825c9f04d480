"""`automator67 nodes cordon|uncordon|drain`, like `kubectl cordon/uncordon/drain` and
`nomad node drain -enable|-disable -deadline`.

    nodes cordon ID...      nothing new is placed there; what runs stays
    nodes uncordon ID...    schedulable again (cancels a drain that still runs)
    nodes drain ID [--deadline 1h] [--wait [--timeout 5m]]
                            cordons it and moves its replicas elsewhere, each replacement
                            running before the replica it replaces stops; at the deadline the
                            rest are stopped. --wait follows the node's drain on WatchNodes.
    nodes drain ID --cancel stops moving; the node stays cordoned"""

from __future__ import annotations

import argparse
import time

from automator67.client import Client
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns

from controller.ctl import resolve
from controller.ctl.failures import CommandError, ExitCode
from controller.ctl.output import Console, Format, age, to_json
from controller.ctl.wait import Progress, closed_after


def cordon_nodes(client: Client, args: argparse.Namespace, console: Console) -> None:
    _each(client, args, console, cordon=True)


def uncordon_nodes(client: Client, args: argparse.Namespace, console: Console) -> None:
    _each(client, args, console, cordon=False)


def _each(client: Client, args: argparse.Namespace, console: Console, cordon: bool) -> None:
    nodes = [resolve.node(client, ref) for ref in args.nodes]  # a typo changes nothing
    for node in nodes:
        changed = client.cordon_node(node.id) if cordon else client.uncordon_node(node.id)
        if Format(args.output) is Format.JSON:
            console.print(to_json(changed))
        else:
            console.print(f"node/{node.id} {'cordoned' if cordon else 'uncordoned'}")


def drain_node(client: Client, args: argparse.Namespace, console: Console) -> None:
    node = resolve.node(client, args.node)
    if args.cancel:
        changed = client.cancel_node_drain(node.id)
        _show(changed, args, console, f"node/{node.id} drain cancelled (still cordoned)")
        return
    changed = client.drain_node(node.id, deadline_s=args.deadline)
    _show(changed, args, console, f"node/{node.id} draining: {changed.drain.message}")
    if args.wait:
        done = wait_drained(client, node.id, int(changed.etag or 0), args.timeout)
        _show(done, args, console, f"node/{node.id} drained: {done.drain.message}")


def _show(node: node_pb2.Node, args: argparse.Namespace, console: Console, line: str) -> None:
    console.print(to_json(node) if Format(args.output) is Format.JSON else line)


def wait_drained(client: Client, node_id: str, since: int, timeout_s: float) -> node_pb2.Node:
    """Follows the node on WatchNodes (from its version `since`, the drain's write: a replica
    that has not caught up yet shows an older one) until its drain is COMPLETE; raises
    CommandError if the drain is cancelled, the node removed, or on the timeout."""
    progress = Progress()
    started = time.monotonic()
    watch = client.watch_nodes()

    with closed_after(watch, timeout_s, progress) as timed_out:
        for event in watch:
            if event.node.id != node_id:
                continue
            if event.type == ns.NODE_EVENT_TYPE_DELETED:
                raise CommandError(f"node {node_id} was removed while draining", ExitCode.ERROR)
            node = event.node
            if int(node.etag or 0) < since:
                continue
            if not node.HasField("drain"):
                raise CommandError(f"the drain of node {node_id} was cancelled", ExitCode.CONFLICT)
            progress.show(
                f"node/{node_id[:8]}: {node.drain.message}", age(time.monotonic() - started)
            )
            if node.drain.state == node_pb2.DRAIN_STATE_COMPLETE:
                return node
        if timed_out.is_set():
            raise CommandError(
                f"timed out after {age(timeout_s)} waiting for node {node_id} to drain",
                ExitCode.UNAVAILABLE,
            )
        raise CommandError("the watch ended", ExitCode.UNAVAILABLE)
