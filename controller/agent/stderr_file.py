"""An exec workload's stderr as a file beside the agent's state file, instead of a pipe to the
agent: a process whose agent was SIGKILLed would get SIGPIPE (or EPIPE) at its next write to a
pipe nobody reads, so it could not live on to be adopted (agent/drivers/adoption.py).

The file is opened O_APPEND, so the process always writes at its end; the agent keeps it small
by emptying it whenever it passed `MAX_BYTES` (checked at every status read, a beat at most
apart; the process's next write then lands at the new end), reads its last line when the process
ends (for the failure message), and removes it. An adopted process's file is opened again by
its path, so it stays bounded too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MAX_BYTES = 1 << 20
TAIL_BYTES = 4096
MAX_LINE = 200


class StderrFile:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def create(cls, path: Path) -> StderrFile:
        """A new, empty file (an old one of the same name is emptied)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        return cls(path, os.open(path, flags, 0o600))

    @classmethod
    def reopen(cls, path: Path) -> StderrFile | None:
        """The file of a process started before the agent restarted, if it is there."""
        try:
            return cls(path, os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC))
        except OSError:
            return None

    def trim(self) -> None:
        """Empties the file once it has grown past MAX_BYTES."""
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_size > MAX_BYTES:
                os.ftruncate(self.fd, 0)

    def last_line(self) -> str:
        """The last non-empty line written, at most MAX_LINE characters."""
        try:
            size = os.fstat(self.fd).st_size
            kept = os.pread(self.fd, TAIL_BYTES, max(0, size - TAIL_BYTES))
        except OSError:
            return ""
        lines = [line.strip() for line in kept.decode(errors="replace").splitlines()]
        return next((line for line in reversed(lines) if line), "")[:MAX_LINE]

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self.path.unlink()


def file_name(deployment_id: str, replica_index: int, placement_id: str) -> str:
    return f"{deployment_id}.{replica_index}.{placement_id or 'x'}.stderr"
