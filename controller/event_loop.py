"""Which asyncio event loop runs the controller (`automator67 serve`) and the agent: uvloop (libuv)
when it is installed, the standard library's otherwise; `A67_EVENT_LOOP` / `--event-loop`
chooses (`A67_AGENT_EVENT_LOOP` for the agent). grpc.aio runs on either: its I/O is gRPC core's
own poller thread, and the loop runs the handlers and the hand-offs from that thread, which
uvloop does with less Python per turn (docs/benchmarks.md, "uvloop").

    auto     uvloop if installed, else asyncio (the default)
    uvloop   uvloop, or the start fails with one line saying it is not installed
    asyncio  the standard library's loop"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

# asyncio (~20 ms of import) only when a loop runs: the commands' parsers (`automator67 --help`,
# `serve`'s configuration) and `token create` use this module's names alone.
if TYPE_CHECKING:
    import asyncio

R = TypeVar("R")
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(ValueError):
    """The chosen loop cannot be used; the message is one line naming the setting."""


def resolve(choice: str, setting: str = "A67_EVENT_LOOP") -> str:
    """The loop to run for `choice`: "uvloop" or "asyncio". Raises EventLoopError."""
    if choice not in CHOICES:
        raise EventLoopError(f"{setting} must be one of {', '.join(CHOICES)}, not {choice!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise EventLoopError(f"{setting}=uvloop, but uvloop is not installed (pip install uvloop)")
    if choice == "auto":
        return "uvloop" if installed else "asyncio"
    return choice


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    import asyncio

    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, R], loop: str) -> R:
    """`asyncio.run(main)` on `loop` ("uvloop" or "asyncio", from `resolve`)."""
    import asyncio

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
