"""Ctrl-C while a command follows a watch: the watch is closed, as a timeout closes it, and the
command ends with KeyboardInterrupt (exit 130, `run.py`) once its loop is over.

Python's own SIGINT handler raises KeyboardInterrupt at whatever bytecode the main thread runs
next. Inside gRPC's sync stream iterator that can be right after a lock was taken and before the
`with` block that releases it starts (a `Condition.__enter__` that returns into the exception,
bpo-29988); the lock stays held by the main thread, gRPC's channel thread blocks on it when the
next event of the call arrives, and closing the channel then waits for that call forever. So
while a command follows a watch (`closing(watch)`), SIGINT raises nothing: the handler only
records it and writes a byte to a pipe (no lock is taken in the handler, since the main thread
may hold the lock it would need), and a thread of this module's, woken by that byte, calls
`watch.close()` from outside the main thread. The watch's iterator then ends (StopIteration),
and `closing` raises KeyboardInterrupt where the loop ended, outside gRPC. From then on SIGINT
is ignored (SIG_IGN): the command is already ending (closing the channel, exiting), and a
second Ctrl-C must not raise in there either.

A command started with SIGINT ignored (the background job of a non-interactive shell, and the
children of such a process, inherit that across exec) keeps ignoring it, as Python itself does:
Ctrl-C is not meant for it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

_INTERRUPTED = b"!"
_DONE = b"."


class Closable(Protocol):
    def close(self) -> None: ...


@contextlib.contextmanager
def closing(watch: Closable) -> Iterator[None]:
    """Ctrl-C inside the block closes `watch` (so a loop over it ends) and raises
    KeyboardInterrupt at the block's end. Outside the main thread (no signal comes there), or
    with SIGINT ignored, it does nothing."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored or threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    interrupted = False

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if not interrupted:  # later ones: the command is already ending
            interrupted = True
            os.write(write_fd, _INTERRUPTED)

    def close_when_interrupted() -> None:
        try:
            woken_by = os.read(read_fd, 1)
        finally:
            os.close(read_fd)
        if woken_by == _INTERRUPTED:
            watch.close()

    closer = threading.Thread(target=close_when_interrupted, name="ctl-interrupt", daemon=True)
    closer.start()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        if not interrupted:
            raise
        # The stream was cut under the loop by Ctrl-C: report the interruption, not that.
    finally:
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is ending
        else:
            signal.signal(signal.SIGINT, previous)
            os.write(write_fd, _DONE)  # lets the closer thread end
        os.close(write_fd)
    if interrupted:
        raise KeyboardInterrupt
