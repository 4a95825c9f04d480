"""The seam where node credentials are sealed before they reach the store.

A `Sealer` turns the plaintext token into an opaque blob tagged with a key id, and back. The
store calls it and nothing else touches stored credentials, so encryption at rest (AES-GCM with
key rotation) replaces `PlaintextSealer` without any other change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sealed:
    """A sealed secret: which key sealed it and the resulting bytes."""

    key_id: str
    blob: bytes


class Sealer(Protocol):
    def seal(self, plaintext: str) -> Sealed:
        """Seals with the current key."""
        ...

    def unseal(self, sealed: Sealed) -> str:
        """Opens a blob sealed by any key this sealer knows; raises ValueError otherwise."""
        ...


class RotatingSealer(Sealer, Protocol):
    """A sealer with several keys, the newest of which seals (`keys reencrypt` moves every
    credential to it)."""

    @property
    def current_key_id(self) -> str: ...


class PlaintextSealer:
    """Stores the token as is (key id `plain`). Used until encryption at rest is configured."""

    KEY_ID = "plain"

    def seal(self, plaintext: str) -> Sealed:
        return Sealed(self.KEY_ID, plaintext.encode())

    def unseal(self, sealed: Sealed) -> str:
        if sealed.key_id != self.KEY_ID:
            raise ValueError(f"no key {sealed.key_id!r} to unseal a credential")
        return sealed.blob.decode()
