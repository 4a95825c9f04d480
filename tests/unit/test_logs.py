"""Structured logs: one JSON object per line, with the request id of the request being served and
the fields passed with the message; secrets print masked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.logs import JsonFormatter, TextFormatter, request_id_var
from controller.models import Capabilities, Credentials, Node, NodeStatus, Secret

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def record(
    msg: str,
    *args: object,
    level: int = logging.INFO,
    fields: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    made = logging.LogRecord("controller.test", level, __file__, 1, msg, args, exc_info)
    made.created = CREATED.timestamp()
    if fields is not None:
        made.fields = fields
    return made


def as_json(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


@pytest.fixture
def request_id() -> Iterator[str]:
    token = request_id_var.set("req-7")
    yield "req-7"
    request_id_var.reset(token)


def test_a_json_line_has_time_level_logger_and_message() -> None:
    assert as_json(record("node %s registered", "n1", level=logging.WARNING)) == {
        "time": "2026-01-02T03:04:05.678+00:00",
        "level": "warning",
        "logger": "controller.test",
        "msg": "node n1 registered",
    }


def test_a_json_line_carries_the_request_id_being_served(request_id: str) -> None:
    assert as_json(record("hello"))["request_id"] == request_id


def test_a_json_line_outside_a_request_has_no_request_id() -> None:
    assert "request_id" not in as_json(record("hello"))


def test_a_json_line_carries_the_extra_fields() -> None:
    line = as_json(record("rpc done", fields={"method": "/a/B", "ms": 1.5, "code": "OK"}))
    assert (line["method"], line["ms"], line["code"]) == ("/a/B", 1.5, "OK")


def test_fields_that_json_cannot_encode_are_written_as_text() -> None:
    line = as_json(record("x", fields={"when": CREATED, "ids": {"a"}}))
    assert line["when"] == str(CREATED)
    assert line["ids"] == "{'a'}"


def test_fields_given_through_a_real_logger_reach_the_line(
    request_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="controller.test"):
        logging.getLogger("controller.test").info("done", extra={"fields": {"n": 3}})
    [made] = caplog.records
    line = as_json(made)
    assert (line["msg"], line["n"], line["request_id"]) == ("done", 3, request_id)


def test_an_exception_is_written_into_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = record("crashed", exc_info=sys.exc_info())
    line = as_json(made)
    assert "RuntimeError: boom" in line["exception"]


def test_a_message_with_quotes_and_newlines_stays_one_json_line() -> None:
    assert as_json(record('say "hi"\nand\tbye'))["msg"] == 'say "hi"\nand\tbye'


SECRET = Secret("hunter2-token")
NODE = Node(
    id="n1",
    provider="aws",
    endpoint="e",
    region="",
    capabilities=Capabilities(1.0, 1.0),
    create_time=CREATED,
    update_time=CREATED,
    credentials=Credentials(SECRET, "github"),
)

MASKED: dict[str, logging.LogRecord] = {
    "a secret as a %s argument": record("token is %s", SECRET),
    "a secret as a %r argument": record("token is %r", SECRET),
    "a secret in an f-string": record(f"token is {SECRET}"),
    "a secret as a field": record("x", fields={"token": SECRET}),
    "a node with credentials as an argument": record("registered %s", NODE),
    "a node with credentials as a field": record("x", fields={"node": NODE}),
}


@pytest.mark.parametrize("made", MASKED.values(), ids=list(MASKED))
def test_a_secret_prints_masked_in_json(made: logging.LogRecord) -> None:
    line = JsonFormatter().format(made)
    assert "hunter2" not in line
    assert "***" in line


@pytest.mark.parametrize("made", MASKED.values(), ids=list(MASKED))
def test_a_secret_prints_masked_in_text(made: logging.LogRecord) -> None:
    line = TextFormatter().format(made)
    assert "hunter2" not in line
    assert "***" in line


def test_a_text_line_shows_level_logger_request_id_message_and_fields(request_id: str) -> None:
    line = TextFormatter().format(record("rpc %s", "done", fields={"code": "OK", "ms": 2}))
    assert line.endswith(f"INFO    controller.test [{request_id}] rpc done code=OK ms=2")


def test_a_text_line_outside_a_request_has_no_brackets() -> None:
    line = TextFormatter().format(record("hello"))
    assert "[" not in line
    assert line.endswith("INFO    controller.test hello")


def written_by_json(made: logging.LogRecord) -> str:
    """The line as json.dumps(default=str) writes it (what every line was before orjson)."""
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(made.created, UTC).isoformat(timespec="milliseconds"),
        "level": made.levelname.lower(),
        "logger": made.name,
        "msg": made.getMessage(),
        **getattr(made, "fields", {}),
    }
    return json.dumps(line, default=str)


SAME_AS_JSON: dict[str, logging.LogRecord] = {
    "plain fields": record("x", fields={"s": "a", "i": 3, "f": 0.1, "b": True, "n": None}),
    "a tiny and a huge float": record("x", fields={"tiny": 1e-07, "huge": 1e300}),
    "an integer past 64 bits": record("x", fields={"big": 2**70}),
    "text past ASCII": record("héllo ✓", fields={"who": "zoë"}),
    "a string enum": record("x", fields={"status": NodeStatus.READY}),
    "a nested mapping": record("x", fields={"labels": {"zone": "a"}}),
}


def test_a_float_that_is_not_a_number_is_written_as_json_writes_it() -> None:
    made = record("x", fields={"ms": float("nan"), "top": float("inf")})
    assert JsonFormatter().format(made) == written_by_json(made)


@pytest.mark.parametrize("made", SAME_AS_JSON.values(), ids=list(SAME_AS_JSON))
def test_a_json_line_says_what_json_dumps_says(made: logging.LogRecord) -> None:
    line = JsonFormatter().format(made)
    assert line.isascii()
    assert json.loads(line) == json.loads(written_by_json(made))


@pytest.mark.parametrize(
    "created",
    [0.0, 1767323045.678, 1767323045.9994999, 1767323045.9995, 1767323045.9999996, 1e9 + 0.5],
)
def test_the_time_of_a_json_line_is_the_iso_time_to_the_millisecond(created: float) -> None:
    made = record("x")
    made.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert as_json(made)["time"] == expected
