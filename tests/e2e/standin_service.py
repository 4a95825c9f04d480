"""A stand-in service for rolling-update tests, run by the exec driver (no imports beyond the
standard library).

    serve   listens on a free loopback port and writes it to $PORT_DIR/$A67_PLACEMENT_ID; answers
            every connection with "$VERSION\\n". With BROKEN=1 it runs but never listens (a
            broken version). SIGTERM removes the port file first, then exits 0.
    check   the health check: connects to the port in this placement's file and expects an
            answer; exit 1 with the reason otherwise."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path


def port_file() -> Path:
    return Path(os.environ["PORT_DIR"]) / os.environ["A67_PLACEMENT_ID"]


def serve() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if os.environ.get("BROKEN") == "1":
        stop.wait()
        return
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    path = port_file()
    (path.parent / f".{path.name}").write_text(str(server.getsockname()[1]))
    (path.parent / f".{path.name}").rename(path)  # whole or absent, never half-written
    answer = f"{os.environ.get('VERSION', '')}\n".encode()
    try:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(answer)
    finally:
        path.unlink(missing_ok=True)
        server.close()


def check() -> None:
    try:
        port = int(port_file().read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            if not conn.recv(64):
                sys.exit("no answer")
    except (OSError, ValueError) as error:
        sys.exit(f"not serving: {error}")


if __name__ == "__main__":
    {"serve": serve, "check": check}[sys.argv[1]]()
