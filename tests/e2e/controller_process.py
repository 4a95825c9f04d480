"""The real controller as a child process: `python -m controller serve` on a free port.

The server logs JSON lines to stderr. A reader thread collects them, so a test can wait for a line
(the `serving` line that carries the port, a request's log line) with a timeout instead of
sleeping. One `ControllerProcess` is one data folder; it can be stopped and started again on it,
which is how restarts are tested.

Authentication is on, as it is by default: once started, `admin_token` holds a token made with
the key the server generated in its data folder, `metadata` carries it, and `open_channel`
(conftest) sends it on every call. `token(role, node=...)` makes others. `auth=False` starts the
server with `--auth off` instead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controller.config import parse_config
from controller.security import issue_token

ROOT = Path(__file__).resolve().parents[2]
# Generous: a loaded 2-core CI machine may take seconds to import grpc and open the store.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

LogLine = dict[str, Any]
Metadata = tuple[tuple[str, str], ...]

# address -> the admin token of the controller serving there, for `open_channel`.
ADMIN_TOKENS: dict[str, str] = {}


def controller_env(**overrides: str) -> dict[str, str]:
    """This process's environment without the controller's own settings, plus `overrides`.

    A developer's exported `PORT` or `A67_*` must not leak into the server under test."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("A67_") and key not in {"PORT", "LOG_LEVEL"}
    }
    env.update(overrides)
    return env


class ServerLog:
    """The stderr lines of one run, parsed as they arrive. Non-JSON lines are kept as
    `{"raw": line}` so a crash's traceback is still visible in a failure message."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: list[LogLine] = []
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="controller-stderr", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            text = raw.rstrip("\n")
            try:
                line = json.loads(text)
            except ValueError:
                line = None
            with self._changed:
                self._lines.append(line if isinstance(line, dict) else {"raw": text})
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[LogLine]:
        """A snapshot of the lines read so far."""
        with self._changed:
            return list(self._lines)

    def wait_for(self, predicate: Callable[[LogLine], bool], timeout: float) -> LogLine:
        """The first line matching `predicate`, waiting up to `timeout` seconds for it.
        Raises AssertionError (with the lines seen) on timeout or if stderr closes first."""
        found: list[LogLine] = []

        def ready() -> bool:
            found[:] = [line for line in self._lines if predicate(line)][:1]
            return bool(found) or self._closed

        with self._changed:
            self._changed.wait_for(ready, timeout)
            if found:
                return found[0]
            why = "stderr closed" if self._closed else f"{timeout}s passed"
            lines = list(self._lines)
        raise AssertionError(f"no matching log line ({why}); stderr was: {lines}")

    def join(self, timeout: float) -> None:
        """Waits until stderr is closed and every line is read."""
        self._thread.join(timeout)


class ControllerProcess:
    """Runs the controller on `data_dir`; `start()` returns once it logs `serving`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        auth: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.log_level = log_level
        self.extra_args = tuple(extra_args) + (() if auth else ("--auth", "off"))
        self.auth = auth
        self.port = 0
        self.admin_token = ""
        self._process: subprocess.Popen[str] | None = None
        self._log: ServerLog | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "controller",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def log(self) -> ServerLog:
        """The log of the current (or last) run."""
        assert self._log is not None, "the controller was never started"
        return self._log

    @property
    def log_lines(self) -> list[LogLine]:
        return self.log.lines

    def start(self) -> ControllerProcess:
        assert self._process is None, "already running"
        process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=controller_env(LOG_LEVEL=self.log_level),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process, self._log = process, ServerLog(process.stderr)
        try:
            serving = self._log.wait_for(lambda line: line.get("msg") == "serving", START_TIMEOUT_S)
        except AssertionError:
            self.kill()
            raise
        # The suite must never expose a server beyond this machine.
        assert serving.get("address") == "127.0.0.1", serving
        self.port = int(serving["port"])
        if self.auth:
            self.admin_token = self.token("admin", subject="e2e-admin")
            ADMIN_TOKENS[self.address] = self.admin_token
        return self

    def token(
        self, role: str, *, node: str | None = None, subject: str = "e2e", ttl_s: float = 3600
    ) -> str:
        """A token signed with this controller's key (its own settings decide which key)."""
        config = parse_config(["--data-dir", str(self.data_dir), *self.extra_args], environ={})
        return issue_token(config, role, node or subject, ttl_s)

    @property
    def metadata(self) -> Metadata:
        """`authorization: Bearer ADMIN_TOKEN`, or nothing when auth is off."""
        return (("authorization", f"Bearer {self.admin_token}"),) if self.admin_token else ()

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Sends SIGTERM and returns the exit code once the process has exited."""
        self._running().send_signal(signal.SIGTERM)
        return self._reap(timeout)

    def send_signal(self, sig: signal.Signals) -> None:
        """Signals the process and returns at once; `wait()` collects the exit code."""
        self._running().send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Waits for the process to exit and returns its exit code."""
        return self._reap(timeout)

    def kill(self) -> int:
        """Sends SIGKILL and returns the exit code (-9)."""
        self._running().kill()
        return self._reap(STOP_TIMEOUT_S)

    def restart(self) -> ControllerProcess:
        """Stops the process (SIGTERM) if it runs, then starts a new one on the same data."""
        if self._process is not None:
            self.terminate()
        return self.start()

    def stop(self) -> None:
        """Teardown: ends the process whatever state it is in. Safe to call twice."""
        if self._process is None:
            return
        try:
            self.terminate()
        except subprocess.TimeoutExpired:
            self.kill()

    def _running(self) -> subprocess.Popen[str]:
        assert self._process is not None, "the controller is not running"
        return self._process

    def _reap(self, timeout: float) -> int:
        process = self._running()
        code = process.wait(timeout)
        self._process = None
        self.log.join(timeout)
        if process.stderr is not None:
            process.stderr.close()
        return code
