"""`automator67 keys init`, run as an operator would (a subprocess), then a controller that starts
on the keys it made: on a shared PostgreSQL store, which generates no keys and cannot start
without them, and with key files named by flags. It never overwrites, and says on stdout, one
line each, what it created and where."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from automator67.aio import AsyncClient

from ..contract import postgres_server
from .auth_helpers import bearer
from .conftest import StartController
from .controller_process import ROOT, ControllerProcess, controller_env
from .seed import seed_node


def automator67(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=ROOT,
        env=controller_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def created_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def postgres_module() -> Iterator[None]:
    yield
    postgres_server.stop()


def test_keys_init_creates_both_keys_once_and_never_overwrites(tmp_path: Path) -> None:
    data = tmp_path / "data"

    first = created_lines(automator67("keys", "init", "--data-dir", str(data)))

    signing, credential = data / "jwt-signing-key.pem", data / "credential-keys.json"
    [key_id] = [k["id"] for k in json.loads(credential.read_text())["keys"]]
    assert first == [
        f"created token signing key {signing} (Ed25519)",
        f"created credential key file {credential} (key {key_id})",
    ]
    for path in (signing, credential):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = signing.read_bytes(), credential.read_bytes()

    again = automator67("keys", "init", "--data-dir", str(data))

    assert created_lines(again) == []
    assert "kept the existing" in again.stderr
    assert (signing.read_bytes(), credential.read_bytes()) == before
    assert sorted(p.name for p in data.iterdir()) == [credential.name, signing.name]


def test_keys_init_creates_only_the_missing_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created_lines(automator67("keys", "init", "--data-dir", str(data)))
    credential = data / "credential-keys.json"
    kept = credential.read_bytes()
    (data / "jwt-signing-key.pem").unlink()

    lines = created_lines(automator67("keys", "init", "--data-dir", str(data)))

    assert lines == [f"created token signing key {data / 'jwt-signing-key.pem'} (Ed25519)"]
    assert credential.read_bytes() == kept


def test_keys_init_refuses_a_broken_key_file_and_touches_it_not(tmp_path: Path) -> None:
    broken = tmp_path / "keys.json"
    broken.write_text("not json")
    broken.chmod(0o600)

    result = automator67(
        "keys", "init", "--data-dir", str(tmp_path / "d"), "--credential-keys-file", str(broken)
    )

    assert result.returncode == 2
    assert "is not a credential key file" in result.stderr
    assert broken.read_text() == "not json"


async def test_a_postgres_controller_starts_on_the_keys_init_made(
    tmp_path: Path, postgres_module: None
) -> None:
    url = postgres_server.database_url()
    data = tmp_path / "data"
    args = ["--store-url", url]

    refused = automator67("serve", "--port", "0", "--data-dir", str(data), *args)
    assert refused.returncode == 2 and "keys init" in refused.stderr  # a shared store makes none

    lines = created_lines(automator67("keys", "init", "--data-dir", str(data)))
    assert len(lines) == 2
    key_id = json.loads((data / "credential-keys.json").read_text())["keys"][0]["id"]
    controller = ControllerProcess(data, extra_args=args).start()
    try:
        made = automator67("token", "create", "--role", "admin", "--data-dir", str(data))
        token = made.stdout.strip()
        async with AsyncClient(controller.address, metadata=bearer(token)) as admin:
            node = (await admin.register_node(seed_node())).node
        assert not [line for line in controller.log_lines if "generated" in line.get("msg", "")]
    finally:
        controller.stop()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT data->'credentials'->>'key_id' FROM nodes WHERE id = %s", (node.id,)
        ).fetchone()
    assert row == (key_id,)  # sealed with the key keys init made


async def test_keys_init_makes_the_files_the_flags_name(
    tmp_path: Path, start_controller: StartController
) -> None:
    secret, credential = tmp_path / "keys" / "hmac-secret", tmp_path / "keys" / "credentials.json"
    flags = ["--jwt-secret-file", str(secret), "--credential-keys-file", str(credential)]

    lines = created_lines(automator67("keys", "init", "--data-dir", str(tmp_path / "d"), *flags))

    assert lines[0] == f"created token signing key {secret} (HMAC secret)"
    assert lines[1].startswith(f"created credential key file {credential} (key k-")
    controller = start_controller(extra_args=flags)  # signs its admin token with the secret
    async with AsyncClient(controller.address, metadata=controller.metadata) as admin:
        assert (await admin.register_node(seed_node())).node.id
    assert not [line for line in controller.log_lines if "generated" in line.get("msg", "")]
