"""Markdown tables of the scenarios' results. Each cell is `median (min-max)` over the runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common import fmt, markdown_table, med

FLEET_HEADERS = (
    "N",
    "server",
    "streams held",
    "beats/s",
    "ack p50 ms",
    "ack p99 ms",
    "ack p99.9 ms",
    "server CPU %",
    "server CPU us/beat",
    "server RSS MB",
    "RSS/stream KB",
    "client CPU %",
    "errors / reconnects / lost",
)


# A stream scenario's servers (their keys in a result, their names in a table), in table order.
SIDES = (("controller", "controller"), ("bare", "bare grpc.aio"), ("etcd", "etcd"))
RATIOS = (("floor_ratios", "**controller / bare**"), ("ratios", "**controller / etcd**"))


def fleet_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Per N: the controller, the bare grpc.aio floor and etcd (those measured), then the
    controller's ratios to each."""
    rows: list[list[str]] = []
    for result in results:
        n = f"{result['agents']:,}"
        for key, side in SIDES:
            r = result.get(key)
            if not r:
                continue
            problems = (
                f"{fmt(r['errors'], 0)} / {fmt(r['reconnects'], 0)} / {fmt(r['lost_beats'], 0)}"
            )
            rows.append(
                [
                    n,
                    side,
                    fmt(r["streams_open"], 0),
                    fmt(r["beats_per_s"], 0),
                    fmt(r["ack_p50_ms"], 2),
                    fmt(r["ack_p99_ms"], 2),
                    fmt(r["ack_p999_ms"], 2),
                    fmt(r["server_cpu_pct"], 1),
                    fmt(r["server_cpu_us_per_beat"], 0),
                    fmt(r["server_rss_mb"], 0),
                    fmt(r["rss_per_stream_kb"], 1),
                    fmt(r["client_cpu_pct"], 0),
                    problems,
                ]
            )
        for key, label in RATIOS:
            ratios = result.get(key)
            if ratios:
                rows.append(
                    [
                        n,
                        label,
                        "",
                        _x(ratios["beats_per_s"]),
                        "",
                        _x(ratios["ack_p99"]),
                        "",
                        "",
                        _x(ratios["cpu_per_beat"]),
                        "",
                        _x(ratios["rss_per_stream"]),
                        "",
                        "",
                    ]
                )
    return rows


def _x(value: float) -> str:
    return "n/a" if value != value else f"**{value:.2f}x**"


def gc_summary(result: Mapping[str, Any]) -> str:
    """The long collections gcstats.py counted in a result (`common.gc_pauses`' fields)."""
    return (
        f"{fmt(result['gc_pauses_over_100ms'], 0)} pauses over 100 ms, longest"
        f" {fmt(result['gc_pause_max_ms'], 0)} ms, {fmt(result['gc_pause_total_ms'], 0)} ms in all"
    )


def fleet_table(title: str, results: Sequence[Mapping[str, Any]]) -> str:
    text = f"### {title}\n\n" + markdown_table(FLEET_HEADERS, fleet_rows(results)) + "\n"
    gc = [
        f"N={r['agents']:,}: {gc_summary(c)}"
        for r in results
        if "gc_pause_max_ms" in (c := r.get("controller") or {})
    ]
    if gc:
        text += "\nController garbage collections in the window (gcstats.py): " + "; ".join(gc)
        text += ".\n"
    return text


UNARY_HEADERS = (
    "call",
    "load",
    "server",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "server CPU %",
    "server CPU us/call",
    "client CPU %",
    "errors",
)


def _load_label(load: str, result: Mapping[str, Any]) -> str:
    if load == "paced":  # results from before the loads were named by rate
        return f"paced {result['paced_rate']:g}/s"
    return load.replace("paced_", "paced ") + ("/s" if load.startswith("paced_") else "")


def _unary_row(name: str, label: str, side: str, x: Mapping[str, Any]) -> list[str]:
    return [
        name,
        label,
        side,
        fmt(x["requests_per_s"], 0),
        fmt(x["p50_ms"], 2),
        fmt(x["p99_ms"], 2),
        fmt(x["p999_ms"], 2),
        fmt(x["server_cpu_pct"], 1),
        fmt(x["server_cpu_us_per_call"], 0),
        fmt(x["client_cpu_pct"], 0),
        fmt(x["errors"], 0),
    ]


def unary_table(result: Mapping[str, Any]) -> str:
    """Each call at each load: the controller, the bare grpc.aio floor measured right after it
    (when the result has one), and the controller / floor ratios."""
    rows = []
    baseline = result.get("baseline", {})
    ratios = result.get("ratios", {})
    for name, loads in result["calls"].items():
        for load, x in loads.items():
            label = _load_label(load, result)
            rows.append(_unary_row(name, label, "controller", x))
            floor = baseline.get(name, {}).get(load)
            if floor:
                rows.append(_unary_row(name, label, "bare grpc.aio", floor))
            r = ratios.get(name, {}).get(load)
            if r:
                rows.append(
                    [
                        name,
                        label,
                        "**controller / bare**",
                        _x(r["requests_per_s"]),
                        _x(r["p50"]),
                        _x(r["p99"]),
                        "",
                        "",
                        _x(r["cpu_per_call"]),
                        "",
                        "",
                    ]
                )
    title = f"### Unary calls, {result['nodes']:,} nodes registered\n\n"
    notes = ""
    list_vs_get = result.get("list_vs_get")
    if list_vs_get:
        cells = ", ".join(f"{_load_label(load, result)} {_x(v)}" for load, v in list_vs_get.items())
        notes += f"\nListNodes (page of 50) / GetNode, server CPU per call: {cells}.\n"
    if "idle_cpu_pct" in result:
        notes += (
            f"\nIdle (no calls, no streams) with these nodes: {result['idle_cpu_pct']:.1f}% CPU, "
            f"RSS {result['rss_mb']:.0f} MB.\n"
        )
    return title + markdown_table(UNARY_HEADERS, rows) + "\n" + notes


def startup_table(result: Mapping[str, Any]) -> str:
    headers = (
        "server",
        "nodes in store",
        "exec to SERVING ms",
        "CPU to SERVING ms",
        "idle RSS MB",
        "runs",
    )
    nodes = f"{result.get('nodes', 0):,}"
    rows = [
        [
            "controller",
            nodes,
            fmt(result["exec_to_serving_ms"], 0),
            fmt(result.get("cpu_to_serving_ms", float("nan")), 0),
            fmt(result["idle_rss_mb"], 1),
            str(result["runs"]),
        ]
    ]
    if "bare" in result:
        bare = result["bare"]
        rows.append(
            [
                "bare grpc.aio",
                "",
                fmt(bare["exec_to_serving_ms"], 0),
                fmt(bare["cpu_to_serving_ms"], 0),
                fmt(bare["idle_rss_mb"], 1),
                str(result["runs"]),
            ]
        )
        ratios = [f"**{result['ratio_to_bare']:.2f}x**", f"**{result['cpu_ratio_to_bare']:.2f}x**"]
        rows.append(["**controller / bare**", "", *ratios, "", ""])
    title = "### Start-up (empty store)" if not result.get("nodes") else "### Start-up"
    return title + "\n\n" + markdown_table(headers, rows) + "\n"


def placement_table(result: Mapping[str, Any]) -> str:
    headers = ("nodes", "deployments", "replicas each", "placements/s (whole pass)", "runs")
    rows = [
        [
            f"{result['nodes']:,}",
            f"{result['deployments']:,}",
            str(result["replicas_each"]),
            fmt(result["placements_per_s"], 0),
            str(result["runs"]),
        ]
    ]
    return (
        "### Placement (scheduler's pure functions, no I/O)\n\n"
        + markdown_table(headers, rows)
        + "\n"
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def targets_table(rows: Sequence[tuple[str, str, str, bool | None]]) -> str:
    headers = ("target (issue 6)", "goal", "measured (median)", "")
    body = [[name, goal, measured, verdict(ok)] for name, goal, measured, ok in rows]
    return "### Against the issue's targets\n\n" + markdown_table(headers, body) + "\n"


def median_of(value: Any) -> float:
    return med(value)
