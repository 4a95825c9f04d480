"""Credentials at rest: AES-256-GCM sealing, the key file, rotation, and re-encryption of a real
store (the plaintext never reaches its files)."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.config import Config, ConfigError
from controller.crypto import AesGcmSealer, load_keys, load_sealer, new_key, rotate
from controller.models import Capabilities, Credentials, Node, NodeStatus, Secret
from controller.store import reencrypt_credentials
from controller.store.sealing import Sealed
from controller.store.sqlite import SQLiteStore

TOKEN = "gho_very-secret-oauth-token-1234567890"


def test_a_sealed_token_opens_and_shows_nothing_of_itself() -> None:
    sealer = AesGcmSealer([new_key()])

    sealed = sealer.seal(TOKEN)

    assert sealed.key_id == sealer.current_key_id
    assert TOKEN.encode() not in sealed.blob
    assert sealer.seal(TOKEN).blob != sealed.blob  # a fresh nonce every time
    assert sealer.unseal(sealed) == TOKEN


def test_after_rotation_the_newest_key_seals_and_every_key_opens() -> None:
    old, new = new_key(), new_key()
    before = AesGcmSealer([old]).seal(TOKEN)

    rotated = AesGcmSealer([old, new])
    after = rotated.seal(TOKEN)

    assert (before.key_id, after.key_id) == (old.id, new.id)
    assert rotated.unseal(before) == rotated.unseal(after) == TOKEN
    with pytest.raises(ValueError, match="no credential key"):
        AesGcmSealer([new]).unseal(before)


def test_a_tampered_or_relabelled_blob_does_not_open() -> None:
    a, b = new_key(), new_key()
    sealer = AesGcmSealer([a, b])
    sealed = sealer.seal(TOKEN)
    flipped = bytearray(sealed.blob)
    flipped[-1] ^= 1

    with pytest.raises(ValueError):
        sealer.unseal(Sealed(sealed.key_id, bytes(flipped)))
    with pytest.raises(ValueError):  # the key id is authenticated data
        sealer.unseal(Sealed(a.id, AesGcmSealer([b.__class__(a.id, b.key)]).seal(TOKEN).blob))
    with pytest.raises(ValueError):
        sealer.unseal(Sealed(sealed.key_id, b"\x01short"))


def test_credentials_stored_before_encryption_still_open() -> None:
    assert AesGcmSealer([new_key()]).unseal(Sealed("plain", TOKEN.encode())) == TOKEN


def test_the_key_file_is_generated_once_with_mode_0600_and_rotates(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")

    sealer, generated = load_sealer(config, generate=True)
    again, generated_again = load_sealer(config, generate=True)
    path = tmp_path / "data" / "credential-keys.json"
    added = rotate(path)
    rotated, _ = load_sealer(config, generate=False)

    assert generated and not generated_again
    assert again.current_key_id == sealer.current_key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rotated.key_ids == (sealer.current_key_id, added.id)
    assert rotated.current_key_id == added.id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    ["not json", "{}", '{"version": 1, "keys": []}', '{"version": 1, "keys": [{"id": "k"}]}'],
)
def test_a_broken_key_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="A67_CREDENTIAL_KEYS_FILE"):
        load_keys(path)


def test_without_generation_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_sealer(Config(data_dir=tmp_path), generate=False)


def node(node_id: str, token: str | None) -> Node:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Node(
        id=node_id,
        provider="render",
        endpoint="https://api.render.com",
        region="eu",
        capabilities=Capabilities(1, 1, 0, ""),
        labels={},
        credentials=Credentials(Secret(token), "github", 0) if token else None,
        status=NodeStatus.PENDING,
        create_time=now,
        update_time=now,
    )


def stored_key_ids(path: Path) -> dict[str, str | None]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, revision, data FROM nodes").fetchall()
    return {i: (json.loads(d)["credentials"] or {}).get("key_id") for i, _, d in rows}


async def test_reencrypt_reseals_every_credential_with_the_newest_key(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    old, new = new_key(), new_key()
    store = SQLiteStore(path, AesGcmSealer([old]))
    await store.open()
    await store.nodes.create(node("a", TOKEN + "-a"))
    await store.nodes.create(node("b", None))
    await store.close()
    store = SQLiteStore(path, AesGcmSealer([old, new]))
    await store.open()
    await store.nodes.create(node("c", TOKEN + "-c"))
    revisions = {n.id: n.revision for n in await store.nodes.list_all()}
    assert stored_key_ids(path) == {"a": old.id, "b": None, "c": new.id}

    report = await reencrypt_credentials(store, AesGcmSealer([old, new]))
    await store.close()

    assert (report.resealed, report.current, report.key_id) == (1, 1, new.id)
    assert stored_key_ids(path) == {"a": new.id, "b": None, "c": new.id}
    only_new = SQLiteStore(path, AesGcmSealer([new]))  # the old key is no longer needed
    await only_new.open()
    nodes = {n.id: n for n in await only_new.nodes.list_all()}
    await only_new.close()
    assert {i: n.revision for i, n in nodes.items()} == revisions  # no new revision, no event
    assert nodes["a"].credentials is not None
    assert nodes["a"].credentials.oauth_token.reveal() == TOKEN + "-a"
    for file in sorted(tmp_path.iterdir()):  # noqa: ASYNC240  # a few small files
        assert TOKEN.encode() not in file.read_bytes(), file


async def test_reencrypt_changes_nothing_if_a_credential_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    lost, kept = new_key(), new_key()
    store = SQLiteStore(path, AesGcmSealer([lost]))
    await store.open()
    await store.nodes.create(node("a", TOKEN))
    await store.close()
    store = SQLiteStore(path, AesGcmSealer([kept]))
    await store.open()
    try:
        with pytest.raises(ValueError, match="no credential key"):
            await reencrypt_credentials(store, AesGcmSealer([kept]))
    finally:
        await store.close()
    assert stored_key_ids(path) == {"a": lost.id}
