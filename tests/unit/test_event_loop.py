"""Which event loop runs the controller and the agent (controller/event_loop.py): uvloop by
default for `serve` when installed, the standard loop for the agent; a setting chooses, a wrong
or impossible choice is one line naming the setting."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from controller import event_loop
from controller.agent.settings import SettingsError, parse_settings
from controller.config import ConfigError, parse_config

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
AGENT = ["--controller", "127.0.0.1:50051"]


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@needs_uvloop
def test_auto_is_uvloop_when_installed_and_runs_on_it() -> None:
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.run(loop_module(), "uvloop") == "uvloop"
    assert event_loop.run(loop_module(), "asyncio") == "asyncio"


def test_asyncio_is_always_there() -> None:
    assert event_loop.resolve("asyncio") == "asyncio"


def test_a_choice_that_does_not_exist_names_the_setting() -> None:
    with pytest.raises(event_loop.EventLoopError, match="A67_EVENT_LOOP must be one of"):
        event_loop.resolve("trio")


def test_uvloop_asked_for_but_missing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    assert event_loop.resolve("auto") == "asyncio"
    with pytest.raises(event_loop.EventLoopError, match="uvloop is not installed"):
        event_loop.resolve("uvloop")


def test_serve_defaults_to_auto_and_reads_its_flag_and_env_var() -> None:
    assert parse_config([], environ={}).event_loop == "auto"
    assert parse_config([], environ={"A67_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    assert parse_config(["--event-loop", "asyncio"], environ={}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="A67_EVENT_LOOP"):
        parse_config([], environ={"A67_EVENT_LOOP": "epoll"})


@needs_uvloop
def test_the_agent_runs_asyncio_unless_told_and_never_uvloop_with_the_exec_driver() -> None:
    assert parse_settings(AGENT, environ={}).event_loop == "asyncio"
    told = parse_settings(AGENT, environ={"A67_AGENT_EVENT_LOOP": "uvloop"})
    assert told.event_loop == "uvloop"
    with pytest.raises(SettingsError, match="exec driver"):
        parse_settings([*AGENT, "--driver", "exec", "--event-loop", "uvloop"], environ={})
    with pytest.raises(SettingsError, match="A67_AGENT_EVENT_LOOP must be one of"):
        parse_settings([*AGENT, "--event-loop", "gevent"], environ={})
