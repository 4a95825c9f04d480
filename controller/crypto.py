"""Encryption of node credentials at rest: AES-256-GCM with named keys and rotation.

The key file (JSON, mode 0600) holds every key ever made, oldest first; the last one seals:

    {"version": 1, "keys": [{"id": "k-3f9a1c2e", "created": "2026-...", "key": "<base64>"}]}

A sealed blob is `0x01 | nonce (12 bytes) | ciphertext and tag`, stored beside the id of the key
that sealed it; the key id is also the additional authenticated data, so a blob moved under
another key id does not open.

`automator67 keys init` creates the file: a shared store needs it made once, before the first
replica starts (with the embedded store, the first start makes it). Rotation:
`automator67 keys rotate` appends a key (new seals use it, old blobs still open with theirs);
`automator67 keys reencrypt` reseals every stored credential with the newest key
(`controller/store/reseal.py`).

Blobs under the key id `plain` (written before encryption was on) are still read, so an old
data dir keeps working; `keys reencrypt` encrypts them."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from controller.auth.keys import read_secret_file
from controller.config import Config, ConfigError
from controller.files import write_private_file
from controller.store.sealing import PlaintextSealer, Sealed

DEFAULT_KEYS_FILE = "credential-keys.json"
_FORMAT = 1
_NONCE_BYTES = 12
_VERSION = 1
_SETTING = "A67_CREDENTIAL_KEYS_FILE"
_KEY_BYTES = 32  # AES-256

# cryptography (~10 ms of import and ~8 MB of its library's pages) is imported on the first
# seal or unseal, not at start: `load_keys` checks everything AESGCM would (32 bytes of key),
# so a start with an unusable key file still fails.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class CredentialKey:
    id: str
    key: bytes  # 32 bytes
    created: str = ""


def new_key() -> CredentialKey:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    # What AESGCM.generate_key(bit_length=256) returns: 32 bytes of os.urandom.
    return CredentialKey(f"k-{secrets.token_hex(4)}", secrets.token_bytes(_KEY_BYTES), created)


class AesGcmSealer:
    """A `Sealer` over a key ring: seals with the newest key, opens with any. Each key's AESGCM
    is made on its first use."""

    def __init__(self, keys: list[CredentialKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        if any(len(k.key) not in (16, 24, 32) for k in keys):  # as AESGCM(key) checks
            raise ValueError("AESGCM key must be 128, 192, or 256 bits.")
        self._secrets = {k.id: k.key for k in keys}
        self._keys: dict[str, AESGCM] = {}
        self.current_key_id = keys[-1].id
        self.key_ids = tuple(k.id for k in keys)

    def _aead(self, key_id: str) -> AESGCM | None:
        aead = self._keys.get(key_id)
        if aead is None and key_id in self._secrets:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            aead = self._keys[key_id] = AESGCM(self._secrets[key_id])
        return aead

    def seal(self, plaintext: str) -> Sealed:
        nonce = os.urandom(_NONCE_BYTES)
        aead = self._aead(self.current_key_id)
        assert aead is not None  # the newest key is in the ring
        ciphertext = aead.encrypt(nonce, plaintext.encode(), self.current_key_id.encode())
        return Sealed(self.current_key_id, bytes([_VERSION]) + nonce + ciphertext)

    def unseal(self, sealed: Sealed) -> str:
        if sealed.key_id == PlaintextSealer.KEY_ID:
            return sealed.blob.decode()
        aead = self._aead(sealed.key_id)
        if aead is None:
            raise ValueError(f"no credential key {sealed.key_id!r} in the key file")
        blob = sealed.blob
        if len(blob) < 1 + _NONCE_BYTES or blob[0] != _VERSION:
            raise ValueError("a sealed credential is malformed")
        nonce, ciphertext = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        from cryptography.exceptions import InvalidTag

        try:
            return aead.decrypt(nonce, ciphertext, sealed.key_id.encode()).decode()
        except InvalidTag:
            raise ValueError(f"a credential sealed with {sealed.key_id!r} fails to open") from None


def keys_file(config: Config) -> Path:
    if config.credential_keys_file:
        return Path(config.credential_keys_file)
    return config.data_dir / DEFAULT_KEYS_FILE


def load_keys(path: Path) -> list[CredentialKey]:
    """The keys of `path`, oldest first. Raises ConfigError naming what is wrong."""
    try:
        data = json.loads(read_secret_file(path, _SETTING))
        if data.get("version") != _FORMAT:
            raise ValueError
        keys = [
            CredentialKey(str(k["id"]), base64.b64decode(k["key"], validate=True), k["created"])
            for k in data["keys"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise ConfigError(f"{_SETTING}: {path} is not a credential key file") from None
    if not keys or any(len(k.key) != _KEY_BYTES or not k.id for k in keys):
        raise ConfigError(f"{_SETTING}: {path} needs keys of {_KEY_BYTES} bytes with ids")
    if len({k.id for k in keys}) != len(keys):
        raise ConfigError(f"{_SETTING}: {path} repeats a key id")
    return keys


def save_keys(path: Path, keys: list[CredentialKey]) -> None:
    """Replaces `path` atomically and durably; the new file has mode 0600 from its first byte."""
    write_private_file(path, _document(keys).encode())


def create_key_file(path: Path) -> CredentialKey:
    """Creates the key file at `path` with one new key and returns it. Never overwrites: raises
    FileExistsError if the file exists."""
    key = new_key()
    write_private_file(path, _document([key]).encode(), overwrite=False)
    return key


def load_sealer(config: Config, *, generate: bool) -> tuple[AesGcmSealer, bool]:
    """The sealer of the configured key file, and whether the file was created now (only when
    `generate` and it is missing)."""
    path = keys_file(config)
    if not path.exists():
        if not generate:
            raise ConfigError(
                f"{_SETTING}: no key file at {path}; `automator67 keys init` creates one"
            )
        return AesGcmSealer([create_key_file(path)]), True
    return AesGcmSealer(load_keys(path)), False


def rotate(path: Path) -> CredentialKey:
    """Appends a new key to the file at `path` (which must exist) and returns it."""
    keys = load_keys(path)
    key = new_key()
    save_keys(path, [*keys, key])
    return key


def _document(keys: list[CredentialKey]) -> str:
    entries = [
        {"id": k.id, "created": k.created, "key": base64.b64encode(k.key).decode()} for k in keys
    ]
    return json.dumps({"version": _FORMAT, "keys": entries}, indent=2) + "\n"
