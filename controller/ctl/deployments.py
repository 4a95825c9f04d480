"""`automator67 deployments list|get|create|update|scale|delete|watch`.

Writes print `deployment/NAME created` (as kubectl does), or the deployment with `-o json`.
`scale` and `update` send an update mask of the fields that change, with `--etag` when given
(unconditional otherwise, as `kubectl scale` without `--resource-version`: the scheduler moves a
deployment's etag whenever it writes its status)."""

from __future__ import annotations

import argparse

from automator67.client import Client
from automator67.v1 import deployment_pb2 as dpb
from automator67.v1 import deployment_service_pb2 as ds

from controller.ctl import interrupt, resolve, spec
from controller.ctl.failures import usage
from controller.ctl.output import (
    Column,
    Console,
    Format,
    Table,
    WatchPrinter,
    ago,
    render_fields,
    render_table,
    short,
    timestamp,
    to_json,
)
from controller.ctl.wait import Goal, Progress, running, wait_for

SHORT_ID = 8
COLUMNS = [
    Column("NAME"),
    Column("ID"),
    Column("STATUS"),
    Column("READY"),
    Column("IMAGE/COMMAND", shrink=True, min_width=12),
    Column("CREATED"),
    Column("REASON", shrink=True, min_width=10),
]
WIDE = [
    *COLUMNS,
    Column("RESOURCES"),
    Column("STRATEGY"),
    Column("NODES", shrink=True),
    Column("ETAG"),
]


def status_name(status: dpb.DeploymentStatus.ValueType) -> str:
    return short(dpb.DeploymentStatus.Name(status), "DEPLOYMENT_STATUS_")


def ready(dep: dpb.Deployment) -> str:
    """`running/desired`, as kubectl's READY column."""
    return f"{running(dep)}/{dep.replicas}"


def workload(dep: dpb.Deployment) -> str:
    return dep.image or " ".join([*dep.command, *dep.args]) or "-"


def resources(dep: dpb.Deployment) -> str:
    r = dep.resources
    return f"{r.cpu_cores:g}cpu/{r.memory_gb:g}Gi/{r.disk_gb:g}Gi"


def strategy(dep: dpb.Deployment) -> str:
    return short(dpb.PlacementStrategy.Name(dep.strategy), "PLACEMENT_STRATEGY_").replace(
        "UNSPECIFIED", "default"
    )


def _amount(value: dpb.IntOrPercent) -> str:
    return value.percent if value.HasField("percent") else str(value.count)


def update_strategy(dep: dpb.Deployment) -> str:
    """`max surge 25%, max unavailable 25%, min ready 0s, progress deadline 600s` (the
    server fills in the defaults)."""
    s = dep.update_strategy
    return (
        f"max surge {_amount(s.max_surge)}, max unavailable {_amount(s.max_unavailable)}, "
        f"min ready {s.min_ready_seconds}s, progress deadline {s.progress_deadline_seconds}s"
    )


def row(dep: dpb.Deployment, wide: bool, console: Console) -> list[str]:
    cells = [
        dep.name,
        dep.id if wide else dep.id[:SHORT_ID],
        status_name(dep.status),
        ready(dep),
        workload(dep),
        ago(timestamp(dep.create_time), console.clock(), never="-"),
        dep.status_reason or "-",
    ]
    if wide:
        nodes = ",".join(n[:SHORT_ID] for n in dep.node_ids) or "-"
        cells += [resources(dep), strategy(dep), nodes, dep.etag]
    return cells


def detail(dep: dpb.Deployment, wide: bool, console: Console) -> str:
    """One deployment: its spec, status, replicas and latest status changes, as `nomad job
    status NAME` shows a job."""
    now = console.clock()
    c = dep.constraints
    where = [f"provider={c.provider}"] * bool(c.provider) + [f"region={c.region}"] * bool(c.region)
    where += [f"{k}={v}" for k, v in sorted(c.labels.items())]
    pairs = [
        ("Name", dep.name),
        ("ID", dep.id),
        ("Status", status_name(dep.status)),
        ("Reason", dep.status_reason or "-"),
        ("Replicas", f"{ready(dep)} running"),
        ("Image", dep.image or "-"),
        ("Command", " ".join(dep.command) or "-"),
        ("Args", " ".join(dep.args) or "-"),
        ("Env", ", ".join(f"{k}={v}" for k, v in sorted(dep.env.items())) or "-"),
        ("Resources", resources(dep)),
        ("Constraints", ", ".join(where) or "-"),
        ("Strategy", strategy(dep)),
        ("Generation", f"{dep.generation} (observed {dep.observed_generation})"),
        ("Template", f"generation {dep.template_generation}" + " (paused)" * dep.paused),
        (
            "Rollout",
            f"{dep.updated_replicas} updated, {dep.ready_replicas} ready, "
            f"{dep.available_replicas} available",
        ),
        ("Update", update_strategy(dep)),
        ("Created", ago(timestamp(dep.create_time), now, never="-")),
        ("Updated", ago(timestamp(dep.update_time), now, never="-")),
        ("Etag", dep.etag),
    ]
    text = render_fields(pairs)
    if dep.replica_statuses:
        rows = [
            [
                str(r.index),
                (r.node_id if wide else r.node_id[:SHORT_ID]) or "-",
                short(dpb.ReplicaState.Name(r.state), "REPLICA_STATE_")
                + (" (superseded)" if r.superseded else ""),
                short(dpb.ReplicaDesiredState.Name(r.desired_state), "REPLICA_DESIRED_STATE_"),
                str(r.failures),
                r.message or "-",
            ]
            for r in dep.replica_statuses
        ]
        columns = [Column("INDEX"), Column("NODE"), Column("STATE"), Column("DESIRED")]
        columns += [Column("FAILURES"), Column("MESSAGE", shrink=True)]
        text += "\nReplicas\n" + render_table(columns, rows, console.width)
    if dep.history:
        rows = [
            [ago(timestamp(h.time), now, never="-"), status_name(h.status), h.reason or "-"]
            for h in dep.history
        ]
        columns = [Column("WHEN"), Column("STATUS"), Column("REASON", shrink=True)]
        text += "\nHistory\n" + render_table(columns, rows, console.width)
    return text


def _print_result(
    dep: dpb.Deployment, verb: str, args: argparse.Namespace, console: Console
) -> None:
    if Format(args.output) is Format.JSON:
        console.print(to_json(dep))
    else:
        console.print(f"deployment/{dep.name} {verb}")


def _wait(
    client: Client, dep: dpb.Deployment, goal: Goal, args: argparse.Namespace, console: Console
) -> dpb.Deployment | None:
    return wait_for(client, dep, goal, args.timeout, Progress(console.err))


def list_deployments(client: Client, args: argparse.Namespace, console: Console) -> None:
    deployments = list(client.list_deployments(args.filter))
    fmt = Format(args.output)
    if fmt is Format.JSON:
        console.print(to_json(ds.ListDeploymentsResponse(deployments=deployments)))
    elif deployments:
        wide = fmt is Format.WIDE
        rows = [row(d, wide, console) for d in deployments]
        console.print(render_table(WIDE if wide else COLUMNS, rows, console.width))
    else:
        console.note(
            "No deployments." if not args.filter else f"No deployments match {args.filter!r}."
        )


def get_deployment(client: Client, args: argparse.Namespace, console: Console) -> None:
    dep = resolve.deployment(client, args.deployment)
    fmt = Format(args.output)
    if fmt is Format.JSON:
        console.print(to_json(dep))
    else:
        console.print(detail(dep, fmt is Format.WIDE, console))


def create_deployment(client: Client, args: argparse.Namespace, console: Console) -> None:
    if args.filename:
        dep, _ = spec.from_file(args.filename)
    else:
        dep = dpb.Deployment()
    if args.name:
        dep.name = args.name
    spec.apply_flags(dep, args)
    if not dep.name:
        raise usage(
            "name the deployment: automator67 deployments create NAME (or `name` in -f FILE)"
        )
    if not dep.image and not dep.command:
        raise usage("give --image or --command (or `image` / `command` in -f FILE)")
    created = client.create_deployment(dep, request_id=args.request_id)
    if args.wait:
        created = _wait(client, created, Goal.RUNNING, args, console) or created
    _print_result(created, "created", args, console)


def update_deployment(client: Client, args: argparse.Namespace, console: Console) -> None:
    current = resolve.deployment(client, args.deployment)
    new = dpb.Deployment()
    touched: set[str] = set()
    if args.filename:
        new, touched = spec.from_file(args.filename)
        ignored = spec.ignored_fields(touched)
        if ignored:
            console.note(f"ignored (not updatable): {', '.join(ignored)}")
    touched |= spec.apply_flags(new, args, current)
    _update(client, current, new, touched, "updated", args, console)


def scale_deployment(client: Client, args: argparse.Namespace, console: Console) -> None:
    current = resolve.deployment(client, args.deployment)
    new = dpb.Deployment(replicas=args.replicas)
    _update(client, current, new, {"replicas"}, "scaled", args, console)


def _update(
    client: Client,
    current: dpb.Deployment,
    new: dpb.Deployment,
    touched: set[str],
    verb: str,
    args: argparse.Namespace,
    console: Console,
) -> None:
    mask = spec.changed_fields(new, current, touched)
    if not touched & set(spec.UPDATABLE):
        raise usage("nothing to change: give a field to update (see --help)")
    if mask:
        new.id, new.etag = current.id, args.etag
        result = client.update_deployment(new, mask)
    else:  # as `kubectl apply` of what is already there: nothing is written
        result, verb = current, "unchanged"
    if args.wait:
        result = _wait(client, result, Goal.RUNNING, args, console) or result
    _print_result(result, verb, args, console)


def delete_deployments(client: Client, args: argparse.Namespace, console: Console) -> None:
    # Resolve every reference first: a typo in the third one deletes nothing.
    deployments = [resolve.deployment(client, ref) for ref in args.deployments]
    for dep in deployments:
        stopping = client.delete_deployment(dep.id, etag=args.etag)
        verb = "stopping"
        if args.wait:
            _wait(client, stopping, Goal.GONE, args, console)
            verb = "deleted"
        _print_result(stopping, verb, args, console)


def watch_deployments(client: Client, args: argparse.Namespace, console: Console) -> None:
    only = resolve.deployment(client, args.deployment).id if args.deployment else None
    fmt = Format(args.output)
    columns = [Column("EVENT"), *(WIDE if fmt is Format.WIDE else COLUMNS)]
    follow = WatchPrinter(Table(columns, console.width), console)
    with client.watch_deployments() as watch, interrupt.closing(watch):
        for event in watch:
            if only is not None and event.deployment.id and event.deployment.id != only:
                continue
            if fmt is Format.JSON:
                console.print(to_json(event, one_line=True))
                continue
            kind = short(ds.DeploymentEventType.Name(event.type), "DEPLOYMENT_EVENT_TYPE_")
            if event.type in (ds.DEPLOYMENT_EVENT_TYPE_SYNCED, ds.DEPLOYMENT_EVENT_TYPE_RESET):
                follow.marker(kind, event.revision)
            else:
                follow.row([kind, *row(event.deployment, fmt is Format.WIDE, console)])
