"""The HTTP gateway in the controller's life: it serves TLS and mTLS as the gRPC port does
(checked with the real curl), a watch open at SIGTERM ends with the shutdown's error line and the
process exits cleanly, and a port that cannot be bound stops the start with one line."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .controller_process import ROOT, ControllerProcess, controller_env
from .test_tls import Pki, tls_args

WAIT_S = 20.0
SERVE = [sys.executable, "-m", "controller", "serve", "--port", "0"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("curl")
    if binary is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    return subprocess.run(
        [binary, "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_the_http_port_speaks_the_grpc_ports_tls(
    tmp_path: Path, mutual: bool, request: pytest.FixtureRequest
) -> None:
    pki = Pki.make()
    http_port = free_port()
    args = [*tls_args(pki, tmp_path / "pki", mutual=mutual), "--http-port", str(http_port)]
    process = ControllerProcess(tmp_path / "data", extra_args=args)
    request.addfinalizer(process.stop)
    process.start()
    ca = pki.ca.write(tmp_path / "client", "ca")[0]
    client_cert, client_key = pki.client.write(tmp_path / "client", "client")
    url = f"https://localhost:{http_port}/api/v1/nodes/stats"
    token = f"Authorization: Bearer {process.admin_token}"
    with_cert = ["--cert", client_cert, "--key", client_key] if mutual else []

    done = curl("--cacert", ca, *with_cert, "-H", token, url)
    body, _, status = done.stdout.rpartition("\n")
    assert (done.returncode, status) == (0, "200"), done.stderr
    assert json.loads(body)["total"] == 0
    # Plaintext HTTP to the TLS port, and a client that does not trust the server, get nothing.
    plain = curl("-H", token, url.replace("https://", "http://"))
    assert plain.stdout.rpartition("\n")[2] != "200"
    untrusted = curl("-H", token, url)
    assert untrusted.returncode != 0
    if mutual:  # no client certificate: the handshake fails before any HTTP
        anonymous = curl("--cacert", ca, "-H", token, url)
        assert anonymous.returncode != 0
        assert anonymous.stdout.rpartition("\n")[2] == "000"


async def read_line(stream: aiohttp.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), WAIT_S)
    assert line.endswith(b"\n"), line
    item: dict[str, Any] = json.loads(line)
    return item


async def test_a_watch_open_at_sigterm_ends_with_shutting_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "t"  # the controller's TMPDIR: where its socket folder goes
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    http_port = free_port()
    process = ControllerProcess(tmp_path / "data", extra_args=["--http-port", str(http_port)])
    process.start()
    try:
        (folder,) = private.iterdir()
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "grpc.sock").is_socket()
        headers = {"Authorization": f"Bearer {process.admin_token}"}
        url = f"http://127.0.0.1:{http_port}/api/v1/deployments:watch"
        timeout = aiohttp.ClientTimeout(total=WAIT_S * 2)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers=headers) as watch,
        ):
            assert watch.status == 200
            synced = await read_line(watch.content)
            assert synced["result"]["type"] == "DEPLOYMENT_EVENT_TYPE_SYNCED"
            exit_code = asyncio.ensure_future(asyncio.to_thread(process.terminate))
            last = await read_line(watch.content)
            assert await asyncio.wait_for(watch.content.read(), WAIT_S) == b""  # then the end
        assert await exit_code == 0
        error = last["error"]
        assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
        info = next(d for d in error["details"] if d["@type"].endswith("ErrorInfo"))
        assert info["reason"] == "SHUTTING_DOWN" and "resume_revision" in info["metadata"]
        assert not list(private.iterdir())  # the socket's folder is gone with the process
    finally:
        process.stop()


def test_a_taken_http_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "--data-dir", str(tmp_path / "data"), "--http-port", str(port)],
            cwd=ROOT,
            env=controller_env(LOG_LEVEL="warning"),
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "A67_HTTP_PORT" in last and str(port) in last
