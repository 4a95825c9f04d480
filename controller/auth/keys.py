"""The keys that sign and verify tokens, and the algorithm they pin.

From config: an Ed25519 or RSA private key (PEM; signs and verifies), or the public key alone
(verifies only: a replica that never issues tokens), or an HMAC secret file. With none of them
configured, the key is `DATA_DIR/jwt-signing-key.pem`: an Ed25519 key generated on first start
(mode 0600), so that a laptop install is secure without any set-up.

The algorithm follows from the key (EdDSA for Ed25519, RS256 for RSA, HS256 for a secret) unless
A67_JWT_ALGORITHM names another one of the same family; tokens never choose it."""

from __future__ import annotations

import binascii
import logging
import stat
from pathlib import Path
from typing import Any

from controller.config import Config, ConfigError
from controller.files import write_private_file

log = logging.getLogger("controller.auth")

DEFAULT_KEY_FILE = "jwt-signing-key.pem"
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
FAMILIES: dict[str, tuple[str, ...]] = {
    "ed25519": ("EdDSA",),
    "rsa": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "hmac": ("HS256", "HS384", "HS512"),
}
ALGORITHMS = tuple(a for family in FAMILIES.values() for a in family)

# An unencrypted Ed25519 key in PKCS#8 PEM, as `generate_ed25519_pem` and `openssl genpkey
# -algorithm ed25519` write it: one line of base64 for 48 bytes of DER, this prefix (version 0,
# the Ed25519 OID, an octet string in an octet string) and the 32-byte seed. Any 32 bytes are a
# valid Ed25519 private key, so a file of exactly this form is one cryptography loads; it is
# read without cryptography (~10 ms of import and ~8 MB of its library's pages at start), and
# the key objects are made on first use. Any other file goes through cryptography at start.
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_SEED_BYTES = 32


class SigningKeys:
    """The algorithm and the keys that sign and verify with it. `signing_key` is None when only
    verification is possible. Keys read from an Ed25519 seed (`from_ed25519_seed`) become
    cryptography's key objects on first use."""

    __slots__ = ("_seed", "_signing_key", "_verifying_key", "algorithm", "generated", "source")

    def __init__(
        self,
        algorithm: str,
        verifying_key: Any,  # a public key object, or the HMAC secret
        signing_key: Any | None,  # a private key object, or the HMAC secret
        source: str,  # the file the keys came from, for log lines
        generated: bool = False,  # created by this call
    ) -> None:
        self.algorithm = algorithm
        self._verifying_key = verifying_key
        self._signing_key = signing_key
        self.source = source
        self.generated = generated
        self._seed: bytes | None = None

    @classmethod
    def from_ed25519_seed(
        cls, seed: bytes, algorithm: str, source: str, generated: bool = False
    ) -> SigningKeys:
        if len(seed) != _ED25519_SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {_ED25519_SEED_BYTES} bytes")
        keys = cls(algorithm, None, None, source, generated)
        keys._seed = seed
        return keys

    @property
    def signing_key(self) -> Any | None:
        if self._seed is not None:
            self._load_seed()
        return self._signing_key

    @property
    def verifying_key(self) -> Any:
        if self._seed is not None:
            self._load_seed()
        return self._verifying_key

    def _load_seed(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        seed = self._seed
        if seed is not None:  # else another thread just did it
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            self._signing_key, self._verifying_key = key, key.public_key()
            self._seed = None

    def __repr__(self) -> str:  # never the keys
        return f"SigningKeys(algorithm={self.algorithm!r}, source={self.source!r})"


def default_key_file(config: Config) -> Path:
    return config.data_dir / DEFAULT_KEY_FILE


def signing_keys(config: Config, *, generate: bool) -> SigningKeys:
    """The keys `config` names; with none named, the data dir's key, created if `generate` and
    missing. Raises ConfigError (one line naming the setting) for anything unusable."""
    if config.jwt_secret_file:
        return _secret(Path(config.jwt_secret_file), config.jwt_algorithm)
    if config.jwt_private_key_file:
        return _private(
            Path(config.jwt_private_key_file), config.jwt_algorithm, "A67_JWT_PRIVATE_KEY_FILE"
        )
    if config.jwt_public_key_file:
        return _public(Path(config.jwt_public_key_file), config.jwt_algorithm)
    path = default_key_file(config)
    if not path.exists():
        if not generate:
            raise ConfigError(
                f"no signing key at {path}: run `automator67 keys init` or start the controller "
                "once with this data dir (it generates one), or set A67_JWT_PRIVATE_KEY_FILE"
            )
        write_private_file(path, generate_ed25519_pem(), overwrite=False)
        keys = _private(path, config.jwt_algorithm, "A67_DATA_DIR")
        keys.generated = True
        return keys
    return _private(path, config.jwt_algorithm, "A67_DATA_DIR")


def generate_ed25519_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_secret_file(path: Path, setting: str) -> bytes:
    """The file's bytes; warns when others may read it."""
    try:
        data = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise ConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None
    if mode & 0o077:
        fields = {"file": str(path), "mode": oct(mode)}
        log.warning("key file is readable by other users; chmod 600 it", extra={"fields": fields})
    return data


def _pick(family: str, wanted: str, setting: str) -> str:
    allowed = FAMILIES[family]
    if not wanted:
        return allowed[0]
    if wanted not in allowed:
        raise ConfigError(
            f"A67_JWT_ALGORITHM {wanted!r} does not fit the {family} key of {setting}; "
            f"use one of {', '.join(allowed)}"
        )
    return wanted


def _family(key: Any, setting: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{setting}: RSA keys need at least {MIN_RSA_BITS} bits")
        return "rsa"
    raise ConfigError(f"{setting}: only Ed25519 and RSA keys are supported")


def ed25519_seed(pem: bytes) -> bytes | None:
    """The seed of an Ed25519 key in exactly the PEM form of `_ED25519_PKCS8_PREFIX`'s comment
    (a final newline or none), or None for anything else."""
    lines = pem.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if len(lines) != 3 or lines[0] != _PEM_BEGIN or lines[2] != _PEM_END or len(lines[1]) != 64:
        return None
    try:
        der = binascii.a2b_base64(lines[1], strict_mode=True)
    except binascii.Error:
        return None
    prefix = _ED25519_PKCS8_PREFIX
    if len(der) != len(prefix) + _ED25519_SEED_BYTES or not der.startswith(prefix):
        return None
    return der[len(prefix) :]


def _private(path: Path, algorithm: str, setting: str) -> SigningKeys:
    data = read_secret_file(path, setting)
    seed = ed25519_seed(data)
    if seed is not None:
        return SigningKeys.from_ed25519_seed(seed, _pick("ed25519", algorithm, setting), str(path))
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} is not an unencrypted PEM private key") from None
    family = _family(key, setting)
    public = key.public_key()
    return SigningKeys(_pick(family, algorithm, setting), public, key, str(path))


def _public(path: Path, algorithm: str) -> SigningKeys:
    setting = "A67_JWT_PUBLIC_KEY_FILE"
    data = read_secret_file(path, setting)
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} is not a PEM public key") from None
    return SigningKeys(_pick(_family(key, setting), algorithm, setting), key, None, str(path))


def _secret(path: Path, algorithm: str) -> SigningKeys:
    setting = "A67_JWT_SECRET_FILE"
    secret = read_secret_file(path, setting).strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{setting}: the secret must be at least {MIN_SECRET_BYTES} bytes")
    if b"-----BEGIN" in secret:
        raise ConfigError(f"{setting}: holds a PEM key; use A67_JWT_PRIVATE_KEY_FILE for keys")
    return SigningKeys(_pick("hmac", algorithm, setting), secret, secret, str(path))
