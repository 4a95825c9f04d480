"""Start-up cost (issue 12): a serving controller imports only what its settings use. Each case
starts a real controller (Controller.start, as `automator67 serve` runs it) in a fresh
interpreter, checks that it answers SERVING, then lists which of the heavy optional modules it
loaded: the HTTP gateway's aiohttp only with --http-port, prometheus_client only with
--metrics-port, psycopg only for a postgresql:// store, OpenTelemetry only when traces are on,
never the SDK's clients, the agent or the operator commands (nor their parsers); PyJWT only once
a call brings a token; cryptography only to generate keys on the first start. Each other command
imports what it needs: `token create` no gRPC, `nodes list` no server, store or keys."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .controller_process import ROOT, controller_env

# The other commands' parsers: controller/cli.py builds only the parser of the command it runs.
PARSERS = ("controller.agent.settings", "controller.ctl.commands", "controller.security_cli")
HEAVY = (
    "aiohttp",
    "prometheus_client",
    "psycopg",
    "opentelemetry",
    "jwt",
    "psutil",
    "yaml",
    "automator67.aio",
    "automator67.client",
    "controller.gateway.server",
    "controller.prometheus",
    "controller.agent.runner",
    "controller.ctl.run",
    *PARSERS,
    # Reflection reads its descriptor set with pkgutil, on the first reflection call.
    "importlib.resources",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loaded_by_serving(data_dir: Path, *flags: str, modules: tuple[str, ...] = HEAVY) -> set[str]:
    """Which of `modules` a controller started with `flags` has imported once SERVING."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from controller.cli import main  # what `automator67 serve` imports first
        from controller.config import parse_config
        from controller.server import Controller
        from grpc import aio
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async def run():
            argv = ["--port", "0", "--host", "127.0.0.1", "--data-dir", {str(data_dir)!r}]
            config = parse_config(argv + {list(flags)!r}, environ={{}})
            controller = Controller(config)
            await controller.start()
            try:
                async with aio.insecure_channel(f"127.0.0.1:{{controller.port}}") as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
                heavy = {list(modules)!r}
                loaded = [m for m in heavy if m in sys.modules]
            finally:
                await controller.stop()
            print(json.dumps(loaded))

        asyncio.run(run())
        """
    )
    env = controller_env()
    for name in [k for k in env if k.startswith("OTEL_")]:
        del env[name]
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_default_controller_loads_none_of_the_optional_modules(tmp_path: Path) -> None:
    assert loaded_by_serving(tmp_path / "data") == set()


def test_a_restart_reads_its_keys_without_cryptography(tmp_path: Path) -> None:
    """The first start generates the keys (cryptography makes them); a restart reads them by
    hand (auth/keys.py, crypto.py) and loads neither cryptography nor PyJWT until a call with a
    token comes (~10 MB of RSS an idle controller need not hold)."""
    first = loaded_by_serving(tmp_path / "data", modules=("cryptography", "jwt"))
    assert first == {"cryptography"}
    assert loaded_by_serving(tmp_path / "data", modules=("cryptography", "jwt")) == set()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--metrics-port", {"prometheus_client", "controller.prometheus"}),
        ("--http-port", {"aiohttp", "controller.gateway.server"}),
    ],
)
def test_a_setting_loads_what_it_needs_and_nothing_else(
    tmp_path: Path, flag: str, expected: set[str]
) -> None:
    # Without this, a module that is never loaded at all would pass the test above.
    assert loaded_by_serving(tmp_path / "data", flag, str(free_port())) == expected


CLI_HEAVY = (
    "grpc",
    "google.protobuf",
    "controller.server",
    "controller.api",
    "controller.registry",
    "controller.store",
    "cryptography",
    *(m for m in HEAVY if m not in PARSERS),
)


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["serve", "--help"], ["agent", "--help"], ["nodes", "list", "--help"]],
    ids=lambda argv: " ".join(argv) or "import",
)
def test_the_commands_parser_loads_nothing_of_the_server(argv: list[str]) -> None:
    """`automator67 ... --help` (and importing the console script) parses arguments only."""
    probe = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from controller.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main({argv!r}) if {argv!r} else None
            except SystemExit as exit:
                assert exit.code == 0, exit.code
        print(json.dumps([m for m in {list(CLI_HEAVY)!r} if m in sys.modules]))
        """
    )
    assert probed(probe) == []


def test_serve_builds_its_own_parser_alone() -> None:
    assert loaded_by_command(["serve", "--help"], PARSERS) == []


def loaded_by_command(argv: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` the `automator67` command `argv` has imported once it returns (its
    exit status is not checked: a command that fails to connect has imported what it runs)."""
    probe = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from controller.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                main({argv!r})
            except SystemExit:
                pass
        print(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))
        """
    )
    return probed(probe)


def probed(probe: str) -> list[str]:
    """The JSON list `probe` (Python code run in a fresh interpreter, as a command starts)
    prints on its last line."""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=controller_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    printed: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return printed


SERVER_SIDE = (
    "controller.server",
    "controller.api",
    "controller.registry.nodes",
    "controller.store.sqlite",
    "controller.scheduler",
    "controller.agent.settings",
    "controller.agent.runner",
    "controller.gateway.server",
    "aiohttp",
    "psycopg",
    "opentelemetry",
)


def test_token_create_loads_no_grpc(tmp_path: Path) -> None:
    from controller.auth.keys import DEFAULT_KEY_FILE, generate_ed25519_pem

    data = tmp_path / "data"
    data.mkdir()
    (data / DEFAULT_KEY_FILE).write_bytes(generate_ed25519_pem())
    (data / DEFAULT_KEY_FILE).chmod(0o600)
    argv = ["token", "create", "--role", "admin", "--data-dir", str(data)]
    unwanted = ("grpc", "grpc_health", "controller.ctl", *SERVER_SIDE)
    assert loaded_by_command(argv, (*unwanted, "jwt")) == ["jwt"]  # it signs: jwt is needed


def test_nodes_list_loads_no_server_store_or_keys() -> None:
    argv = ["nodes", "list", "--addr", f"127.0.0.1:{free_port()}"]  # nothing listens there
    unwanted = (
        "cryptography",
        "jwt",
        "controller.registry",
        "controller.store",
        "controller.security_cli",
        *SERVER_SIDE,
    )
    assert loaded_by_command(argv, (*unwanted, "grpc")) == ["grpc"]  # it calls: grpc is needed


def test_the_agent_loads_no_server_store_or_keys() -> None:
    """`automator67 agent` runs controller.agent.runner (it runs until stopped, so the probe
    imports what it runs instead of running it)."""
    unwanted = (
        "cryptography",
        "jwt",
        "controller.registry",
        "controller.store",
        "controller.security_cli",
        "controller.ctl.commands",
        *(m for m in SERVER_SIDE if not m.startswith("controller.agent.")),
    )
    probe = textwrap.dedent(
        f"""
        import json, sys
        from controller.cli import main
        import controller.agent.runner
        print(json.dumps([m for m in {list(unwanted)!r} if m in sys.modules]))
        """
    )
    assert probed(probe) == []
