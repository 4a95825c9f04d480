"""What the operator commands print: tables for people, proto3 JSON for programs.

`-o table` (the default) prints columns that fit the terminal: when a row is too wide, the
columns marked `shrink` give up width (widest first) and their cells are cut with "…"; the
others are never cut. Output that is not a terminal is never cut (unless `COLUMNS` is set), so
`| grep` and `| awk` see whole values, as kubectl does. `-o wide` adds columns; `-o json` prints
proto3 JSON (`google.protobuf.json_format`, the same mapping grpcurl and the HTTP gateway use):
one indented object, or one compact object per line for a watch.

Times are shown relative to now, as kubectl's AGE column: `42s ago`, `3m20s ago`, `5h ago`."""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from google.protobuf import json_format

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from google.protobuf.timestamp_pb2 import Timestamp

GAP = "   "  # between columns, as kubectl
ELLIPSIS = "…"
Clock = Callable[[], datetime]


class Format(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"


def utc_now() -> datetime:
    return datetime.now(UTC)


# Relative times


def age(seconds: float) -> str:
    """A duration in at most two units, as kubectl prints ages: 42s, 3m20s, 42m, 3h20m, 30h,
    12d, 2y."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, sec = divmod(s, 60)
    if m < 10:
        return f"{m}m{sec}s" if sec else f"{m}m"
    if m < 60:
        return f"{m}m"
    h, mins = divmod(m, 60)
    if h < 10:
        return f"{h}h{mins}m" if mins else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d" if d < 365 else f"{d // 365}y"


def ago(then: datetime | None, now: datetime, never: str = "never") -> str:
    """`3m ago` (a time a little in the future, from another machine's clock, is `0s ago`)."""
    if then is None:
        return never
    return f"{age((now - then).total_seconds())} ago"


def timestamp(ts: Timestamp) -> datetime | None:
    """A protobuf Timestamp as an aware datetime; None when unset (zero)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def short(enum_name: str, prefix: str) -> str:
    """NODE_STATUS_READY -> READY."""
    return enum_name.removeprefix(prefix) if enum_name.startswith(prefix) else enum_name


# Tables


@dataclass(frozen=True)
class Column:
    title: str
    shrink: bool = False  # may be cut to fit the terminal
    min_width: int = 8


def table_width(stream: IO[str]) -> int | None:
    """How wide a table may be on `stream`: `COLUMNS` if set, else the terminal's width, else
    unlimited (None) when the stream is not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return shutil.get_terminal_size().columns
    return None


def fit(widths: list[int], columns: Sequence[Column], limit: int | None) -> list[int]:
    """Column widths whose row fits in `limit`: shrinkable columns give up width, the widest
    first, down to their minimum (never below their title). May still exceed `limit` when
    the fixed columns alone do."""
    fitted = list(widths)
    if limit is None:
        return fitted
    floors = [
        max(c.min_width, len(c.title)) if c.shrink else w
        for c, w in zip(columns, widths, strict=True)
    ]
    excess = sum(fitted) + len(GAP) * (len(fitted) - 1) - limit
    while excess > 0:
        candidates = [i for i, w in enumerate(fitted) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: fitted[i])
        others = [fitted[i] for i in candidates if i != widest]
        # Down to the next widest (or the floor), in one step, at most by the excess.
        target = max(floors[widest], max(others, default=0), fitted[widest] - excess)
        if target >= fitted[widest]:
            target = fitted[widest] - 1
        excess -= fitted[widest] - target
        fitted[widest] = target
    return fitted


def cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)].rstrip() + ELLIPSIS if width > 0 else ""


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], limit: int | None = None
) -> str:
    """The table as text (a header line, then one line per row, each ending in a newline)."""
    return Table(columns, limit).render(rows)


class Table:
    """A table whose column widths are set by the rows it renders first; `line()` then lays
    out later rows (of a watch) in the same columns, so that they stay aligned under the
    header (a longer value pushes the rest of its line right, as kubectl's watch does)."""

    def __init__(self, columns: Sequence[Column], limit: int | None = None) -> None:
        self.columns = list(columns)
        self.limit = limit
        self.widths: list[int] | None = None

    def render(self, rows: Sequence[Sequence[str]]) -> str:
        cells = [[c.title for c in self.columns], *[_clean(r) for r in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        self.widths = fit(widths, self.columns, self.limit)
        return "".join(self._layout(row) for row in cells)

    def line(self, row: Sequence[str]) -> str:
        if self.widths is None:
            return self.render([row]).split("\n", 1)[1]
        return self._layout(_clean(row))

    def header(self) -> str:
        if self.widths is None:
            return self.render([]).rstrip("\n") + "\n"
        return self._layout([c.title for c in self.columns])

    def _layout(self, row: Sequence[str]) -> str:
        assert self.widths is not None
        parts = []
        for value, width, column in zip(row, self.widths, self.columns, strict=True):
            parts.append((cut(value, width) if column.shrink else value).ljust(width))
        return GAP.join(parts).rstrip() + "\n"


class WatchPrinter:
    """Prints a watch as a table: the rows of the opening state together, once SYNCED says it
    is complete (so their columns fit them all), then one line per event in those columns.
    SYNCED and RESET are noted on stderr."""

    def __init__(self, table: Table, console: Console) -> None:
        self.table = table
        self.console = console
        self._opening: list[list[str]] | None = []

    def row(self, cells: list[str]) -> None:
        if self._opening is not None:
            self._opening.append(cells)
        else:
            self.console.print(self.table.line(cells))

    def marker(self, kind: str, revision: int) -> None:
        if self._opening is not None:
            self.console.print(self.table.render(self._opening))
            self._opening = None
        self.console.note(f"-- {kind} at revision {revision} --")


def _clean(row: Sequence[str]) -> list[str]:
    """Cells on one line: runs of whitespace (a newline in a reason) become one space."""
    return [" ".join(str(v).split()) for v in row]


def render_fields(pairs: Sequence[tuple[str, str]]) -> str:
    """`Key:   value` lines, values aligned (a detail view, as `nomad node status ID`)."""
    if not pairs:
        return ""
    width = max(len(k) for k, _ in pairs) + 1
    return "".join(f"{(k + ':').ljust(width)}  {v}\n" for k, v in pairs)


# JSON


def to_json(message: Message, *, one_line: bool = False) -> str:
    """proto3 JSON of `message` (fields in lowerCamelCase, enums by name, unset fields left
    out), indented, or on one line."""
    if one_line:
        return json_format.MessageToJson(message, indent=None)
    return json_format.MessageToJson(message, indent=2)


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


@dataclass
class Console:
    """Where a command prints, and the clock its relative times are measured on."""

    out: IO[str]
    err: IO[str]
    clock: Clock = utc_now

    @property
    def width(self) -> int | None:
        return table_width(self.out)

    def print(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") or not text else text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line for the person on stderr (never mixed into output a program reads)."""
        self.err.write(text + "\n")
        self.err.flush()
