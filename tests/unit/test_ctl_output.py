"""The operator CLI's output (controller/ctl/output.py): relative ages on a fixed clock, tables
that fit a width, watch lines that stay under their header, proto3 JSON."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta

import pytest
from automator67.v1 import node_pb2
from google.protobuf import json_format

from controller.ctl import nodes
from controller.ctl.output import (
    Column,
    Console,
    Table,
    WatchPrinter,
    age,
    ago,
    fit,
    render_table,
    timestamp,
    to_json,
)
from controller.ctl.run import log_sdk_warnings

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (60, "1m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (3599, "59m"),
        (3600, "1h"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (10 * 3600 + 59 * 60, "10h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (364 * 86400, "364d"),
        (800 * 86400, "2y"),
        (-5, "0s"),  # another machine's clock a little ahead
    ],
)
def test_ages_are_shown_in_at_most_two_units(seconds: float, shown: str) -> None:
    assert age(seconds) == shown


def test_a_time_is_shown_relative_to_the_clock_and_an_unset_one_as_never() -> None:
    assert ago(NOW - timedelta(minutes=3), NOW) == "3m ago"
    assert ago(None, NOW) == "never"
    assert ago(None, NOW, never="-") == "-"


def test_an_unset_protobuf_timestamp_is_none() -> None:
    node = node_pb2.Node()
    assert timestamp(node.last_heartbeat_time) is None
    node.create_time.FromDatetime(NOW)
    assert timestamp(node.create_time) == NOW


COLUMNS = [Column("ID"), Column("STATUS"), Column("REASON", shrink=True, min_width=6)]
ROWS = [["a1", "PENDING", "no READY node with 4 cpu free: 3 lack cpu"], ["b2", "RUNNING", "ok"]]


def test_a_table_without_a_limit_keeps_every_value_whole() -> None:
    text = render_table(COLUMNS, ROWS)
    assert text.splitlines() == [
        "ID   STATUS    REASON",
        "a1   PENDING   no READY node with 4 cpu free: 3 lack cpu",
        "b2   RUNNING   ok",
    ]


def test_a_table_fits_its_width_by_cutting_only_the_shrinkable_columns() -> None:
    text = render_table(COLUMNS, ROWS, limit=30)
    lines = text.splitlines()
    assert all(len(line) <= 30 for line in lines), lines
    assert lines[1] == "a1   PENDING   no READY node…"
    assert lines[2] == "b2   RUNNING   ok"


def test_fitting_stops_at_the_minimum_width_of_each_column() -> None:
    # Even 10 columns wide, the fixed columns stay whole and REASON keeps its 6 characters.
    lines = render_table(COLUMNS, ROWS, limit=10).splitlines()
    assert lines[1] == "a1   PENDING   no RE…"


def test_the_widest_shrinkable_column_gives_up_width_first() -> None:
    columns = [Column("A", shrink=True, min_width=1), Column("B", shrink=True, min_width=1)]
    # 20 + 3 + 10 = 33 wide; 25 allowed: A goes down to 12, B keeps 10.
    assert fit([20, 10], columns, 25) == [12, 10]
    # 18 allowed: both shrink, the widest first, then in turn (the first one on a tie).
    assert fit([20, 10], columns, 18) == [7, 8]


def test_newlines_in_a_cell_do_not_break_the_table() -> None:
    text = render_table([Column("MESSAGE")], [["line one\nline two"]])
    assert text.splitlines() == ["MESSAGE", "line one line two"]


def test_watch_lines_keep_the_columns_of_the_opening_state() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = WatchPrinter(Table(COLUMNS), Console(out, err, clock=lambda: NOW))
    printer.row(["a1", "PENDING", "waiting"])
    assert out.getvalue() == ""  # the opening state is printed once complete
    printer.marker("SYNCED", 7)
    printer.row(["b2", "READY", "x"])
    assert out.getvalue().splitlines() == [
        "ID   STATUS    REASON",
        "a1   PENDING   waiting",
        "b2   READY     x",
    ]
    assert err.getvalue() == "-- SYNCED at revision 7 --\n"


def test_node_rows_show_short_ids_and_relative_times() -> None:
    node = node_pb2.Node(
        id="5bc2eb74-6217-47e9-8f11-f1c5b5b80489",
        provider="render",
        region="eu-west-1",
        status=node_pb2.NODE_STATUS_READY,
        capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8.5),
    )
    node.create_time.FromDatetime(NOW - timedelta(hours=3, minutes=20))
    node.last_heartbeat_time.FromDatetime(NOW - timedelta(seconds=2))
    console = Console(io.StringIO(), io.StringIO(), clock=lambda: NOW)
    row = nodes.row(node, False, console)
    assert row == ["5bc2eb74", "READY", "render", "eu-west-1", "4", "8.5Gi", "2s ago", "3h20m ago"]
    assert nodes.row(node, True, console)[0] == node.id


def test_json_is_proto3_json_that_parses_back() -> None:
    node = node_pb2.Node(id="n1", provider="render", labels={"tier": "gpu"})
    text = to_json(node)
    assert '"provider": "render"' in text
    assert json_format.Parse(text, node_pb2.Node()) == node
    one_line = to_json(node, one_line=True)
    assert "\n" not in one_line
    assert json_format.Parse(one_line, node_pb2.Node()) == node


def test_a_resuming_watch_is_reported_on_one_line() -> None:
    logger = logging.getLogger("automator67")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    try:
        log_sdk_warnings(stream)
        fields = {"revision": 12, "delay_s": 0.4, "why": "UNAVAILABLE: the watch\nstream ended"}
        logger.warning("watch broken; resuming", extra={"fields": fields})
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert stream.getvalue() == (
        "automator67: watch broken; resuming (revision=12, delay_s=0.4, "
        "why=UNAVAILABLE: the watch stream ended)\n"
    )
