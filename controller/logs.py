"""Structured logging: JSON lines when stderr is not a terminal, readable text when it is.

Every line carries the id of the request being served (a context variable set by the request
interceptor), so one request can be followed through every layer; with tracing on, JSON lines
also carry the id of their trace. Pass fields with
`log.info("msg", extra={"fields": {...}})`.

A line costs what it must and no more (an audit line per mutating call, a line per status
change: thousands a second when a fleet joins): the formats print neither the caller's file and
line nor the thread or process, so `setup_logging` tells `logging` not to look them up (the
switches its documentation gives for that); a JSON line is encoded with orjson when every value
is one orjson writes as json would (else with json, as before); the time's text is made once a
second."""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The id of the trace the line belongs to (32 hex digits), set only while tracing a sampled
# call or pass (controller/tracing): it finds the line's trace in the tracing backend.
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


# Values orjson writes as json.dumps does (up to spaces): anything else (a subclass,
# an enum, a dataclass, a datetime, a set) goes through json.dumps(default=str), as it always did.
_PLAIN = frozenset({str, int, float, bool, type(None)})


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the second `_second_text` spells (UTC, to the second)
        self._second_text = ""

    def _time(self, record: logging.LogRecord) -> str:
        """`created` in ISO 8601 to the millisecond, UTC: `2026-01-02T03:04:05.678+00:00`."""
        second = int(record.created)
        micros = round((record.created - second) * 1e6)  # rounded as datetime rounds it
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:  # formats run one at a time (the handler's lock)
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second, self._second_text = second, text
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record),
            "level": _LEVELS.get(record.levelno) or record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        trace_id = trace_id_var.get()
        if trace_id:
            line["trace_id"] = trace_id
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        types = set(map(type, line.values()))
        if types <= _PLAIN and (float not in types or _finite(line.values())):
            try:
                text = orjson.dumps(line).decode()
            except orjson.JSONEncodeError:  # an integer past 64 bits: json writes it
                pass
            else:
                if text.isascii():  # else json's escapes: ASCII whatever stderr's encoding
                    return text
        return json.dumps(line, default=str)


def _finite(values: Iterable[object]) -> bool:
    """No float value is NaN or infinite (orjson writes those as null, json as NaN)."""
    return all(math.isfinite(v) for v in values if type(v) is float)


_LEVELS = {level: logging.getLevelName(level).lower() for level in (10, 20, 30, 40, 50)}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        request_id = request_id_var.get()
        parts = [time, f"{record.levelname:<7}", record.name]
        if request_id:
            parts.append(f"[{request_id}]")
        parts.append(record.getMessage())
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str, json_lines: bool | None = None) -> None:
    """Configures the root logger once: `level` by name, JSON unless stderr is a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    # No format prints the caller's file and line, thread or process: skip looking them up
    # (findCaller walks the stack for every line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
