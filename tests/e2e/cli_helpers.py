"""The operator CLI as users run it: the installed `automator67` console script as a child
process, pointed at a test controller through `A67_ADDR` and `A67_TOKEN`.

`run()` waits for a command to end; `Follow` starts a long-running one (a watch) and hands out
its stdout lines as they arrive, waiting with a timeout, never sleeping."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .controller_process import ROOT, ControllerProcess, controller_env

SCRIPT = Path(sys.executable).with_name("automator67")  # the venv's console script
# A shell starts a command in the foreground with SIGINT at its default, whatever it ignores
# itself. A test runner started in the background of a non-interactive shell (as CI may do)
# ignores SIGINT, and an ignored signal is inherited across fork and exec: the CLI would ignore
# a test's Ctrl-C too. So `Follow` starts it through this: SIGINT to its default, then exec.
FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
RUN_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine; a healthy command takes < 1 s
LINE_WAIT_S = 20.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def cli_env(
    controller: ControllerProcess, token: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a CLI run against `controller`, as its admin (or with `token`)."""
    env = controller_env(A67_ADDR=controller.address, COLUMNS="250", **extra)
    env["A67_TOKEN"] = controller.admin_token if token is None else token
    return env


def run(
    controller: ControllerProcess,
    *args: str,
    token: str | None = None,
    stdin: str | None = None,
    timeout: float = RUN_TIMEOUT_S,
    **env: str,
) -> Result:
    done = subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        env=cli_env(controller, token, **env),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, code: int, *says: str) -> str:
    """The run failed with exit `code` and one line on stderr (no traceback) saying `says`."""
    assert result.code == code, result
    assert len(result.err_lines) == 1, result
    line = result.err_lines[0]
    assert line.startswith("automator67: "), result
    for text in says:
        assert text in line, result
    assert "Traceback" not in result.err
    return line


class Follow:
    """A command that keeps running (a watch), started as a shell starts one in the foreground
    (`FOREGROUND`): its stdout lines, and its stderr, read by threads (so that neither pipe
    fills up while the test looks elsewhere)."""

    def __init__(self, controller: ControllerProcess, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-c", FOREGROUND, str(SCRIPT), *args],
            cwd=ROOT,
            env=cli_env(controller),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._err_changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._err_changed:
                self._err.append(line)
                self._err_changed.notify_all()

    @property
    def err(self) -> str:
        """The stderr read so far."""
        with self._err_changed:
            return "".join(self._err)

    def line(self, wait_s: float = LINE_WAIT_S) -> str:
        """The next stdout line; fails if none comes within `wait_s` or the output ends."""
        try:
            line = self._lines.get(timeout=wait_s)
        except queue.Empty:
            raise AssertionError(f"no output line within {wait_s}s") from None
        if line is None:
            self.process.wait(RUN_TIMEOUT_S)
            self._err_reader.join(RUN_TIMEOUT_S)
            raise AssertionError(f"the command ended ({self.process.returncode}): {self.err}")
        return line

    def err_line(self, says: str, wait_s: float = LINE_WAIT_S) -> str:
        """The first stderr line saying `says`, waiting up to `wait_s` for it."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self._err if says in line][:1]
            return bool(found)

        with self._err_changed:
            if not self._err_changed.wait_for(seen, wait_s):
                raise AssertionError(f"no stderr line saying {says!r}: {''.join(self._err)}")
        return found[0].rstrip("\n")

    def interrupt(self) -> Result:
        """Ctrl-C: SIGINT; then the exit code, the stdout lines not read yet, and stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(RUN_TIMEOUT_S)
        self._reader.join(RUN_TIMEOUT_S)
        self._err_reader.join(RUN_TIMEOUT_S)
        rest: list[str] = []
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                rest.append(line)
        return Result(code, "\n".join(rest), self.err)

    def stop(self) -> None:
        """Teardown: kills the command if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(RUN_TIMEOUT_S)
