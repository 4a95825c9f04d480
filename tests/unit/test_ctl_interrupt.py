"""Ctrl-C while a CLI command follows a watch (`controller/ctl/interrupt.py`): the SIGINT
handler raises nothing; the watch is closed from another thread, the loop over it ends, and
KeyboardInterrupt comes where the block ends; later SIGINTs are ignored. Without Ctrl-C the
block leaves the handler as it found it. Real signals to this process, no sleeps."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.ctl.interrupt import closing

WAIT_S = 30.0  # a loaded 2-core machine; a healthy run takes milliseconds


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal() -> Iterator[None]:
    """SIGINT as Python sets it up in a command started from a terminal (the test runner may
    ignore it: a background job of CI's script); the runner's own handler is put back after."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, handler)


class QuietWatch:
    """Iterates nothing until closed, as a watch on a quiet stream; notes where the close
    came from."""

    def __init__(self) -> None:
        self.iterating = threading.Event()
        self.closed = threading.Event()
        self.closed_from: threading.Thread | None = None

    def __iter__(self) -> Iterator[int]:
        self.iterating.set()
        # In slices of 0.1 s, as gRPC's sync iterator waits (grpc._common.wait): os.kill may
        # hand SIGINT to another thread, and then only the main thread's next bytecode runs
        # the handler; one 30 s wait on a lock would not wake for it (1 run in ~5 failed so).
        for _ in range(int(WAIT_S / 0.1)):
            if self.closed.wait(0.1):
                return iter(())
        raise AssertionError("never closed")

    def close(self) -> None:
        self.closed_from = threading.current_thread()
        self.closed.set()


def interrupt_once_iterating(watch: QuietWatch) -> threading.Thread:
    def send() -> None:
        assert watch.iterating.wait(WAIT_S)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_ctrl_c_closes_the_watch_from_another_thread_then_interrupts() -> None:
    watch = QuietWatch()
    sender = interrupt_once_iterating(watch)
    ended_loop = False
    with pytest.raises(KeyboardInterrupt), closing(watch):
        for _ in watch:
            pass
        ended_loop = True  # the loop ended as at the end of the stream
    sender.join(WAIT_S)
    assert ended_loop
    assert watch.closed_from is not None
    assert watch.closed_from is not threading.main_thread()
    # The command is ending: a second Ctrl-C must not raise in the channel's close.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_an_error_of_the_stream_cut_by_ctrl_c_is_reported_as_the_interrupt() -> None:
    watch = QuietWatch()
    sender = interrupt_once_iterating(watch)
    with pytest.raises(KeyboardInterrupt), closing(watch):
        for _ in watch:
            pass
        raise ConnectionError("cancelled")
    sender.join(WAIT_S)


def test_without_ctrl_c_the_handler_is_restored_and_errors_pass() -> None:
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("not called")

    signal.signal(signal.SIGINT, mine)
    watch = QuietWatch()
    watch.close()
    with closing(watch):
        assert signal.getsignal(signal.SIGINT) is not mine
        assert list(watch) == []
    assert signal.getsignal(signal.SIGINT) is mine
    with pytest.raises(ConnectionError), closing(watch):
        raise ConnectionError("broken")
    assert signal.getsignal(signal.SIGINT) is mine
    closers = [t for t in threading.enumerate() if t.name == "ctl-interrupt"]
    for closer in closers:
        closer.join(WAIT_S)
        assert not closer.is_alive()


def test_outside_the_main_thread_it_does_nothing() -> None:
    handler = signal.getsignal(signal.SIGINT)
    seen: list[Any] = []

    def in_thread() -> None:
        with closing(QuietWatch()):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(WAIT_S)
    assert seen == [handler]


def test_a_command_started_with_sigint_ignored_keeps_ignoring_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = QuietWatch()
    watch.close()
    with closing(watch):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert list(watch) == []
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
