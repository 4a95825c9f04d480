"""A real PostgreSQL server for the test session, started on demand.

`database_url()` starts one server (the first time it is called), in a temporary folder, on a
free port bound to 127.0.0.1 only, and returns the URL of a new, empty database on it
(`CREATE DATABASE t_<uuid>`), so tests are isolated. `stop()` (a session fixture calls it; an
atexit hook too, in case) stops the server with `pg_ctl stop -m fast` and removes its folder.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user (via
`runuser`) in a folder that user owns. Without the binaries (`initdb`, `pg_ctl` on PATH or in
/usr/lib/postgresql/*/bin), or as root without a `postgres` user, the calling test is skipped
with the reason; any other failure to start is an error, not a skip."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"
START_ATTEMPTS = 3
TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl` (PATH first, then the newest Debian install)."""
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(os.path.realpath(initdb)).parent
        if (folder / "pg_ctl").exists():
            return folder
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if find_bindir() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1:`port`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="a67-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = 0
        self._running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.sockets.mkdir()
        if self._as_root:
            os.chown(self.sockets, user.pw_uid, user.pw_gid)

    def _run(self, *args: str) -> None:
        command: Sequence[str] = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()  # another process may take it first: then try another
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
                # Test data need not survive a crash of the machine.
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                    "-o", options, "-w", "-t", str(TIMEOUT_S), "start",
                )  # fmt: skip
            except RuntimeError:
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"PostgreSQL did not start: {self.server_log()}") from None
                continue
            self._running = True
            return

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text()[-4000:]
        return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Creates a new, empty database and returns its URL."""
        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stops the server (fast: disconnects clients) and removes its folder."""
        try:
            if self._running:
                self._running = False
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_lock = threading.Lock()
_server: PostgresServer | None = None


def database_url() -> str:
    """The URL of a new, empty database on the session's server (started on first use).
    Skips the calling test if PostgreSQL cannot run here."""
    global _server
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with _lock:
        if _server is None:
            bindir = find_bindir()
            assert bindir is not None
            server = PostgresServer(bindir)
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            _server = server
        return _server.create_database()


def stop() -> None:
    """Stops the session's server if it was started. A later `database_url()` starts another."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.stop()


atexit.register(stop)
