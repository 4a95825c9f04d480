"""Signing keys: generated once in the data dir with mode 0600, loaded from config otherwise, and
every unusable key file stops the start with one line naming its setting."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from controller.auth.keys import DEFAULT_KEY_FILE, ed25519_seed, signing_keys
from controller.config import Config, ConfigError, parse_config


def write_pem(path: Path, key: object) -> str:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def test_the_first_start_generates_an_ed25519_key_readable_only_by_its_owner(
    tmp_path: Path,
) -> None:
    config = Config(data_dir=tmp_path / "data")

    first = signing_keys(config, generate=True)
    again = signing_keys(config, generate=True)

    path = tmp_path / "data" / DEFAULT_KEY_FILE
    assert first.generated and not again.generated
    assert first.source == again.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.algorithm == "EdDSA"
    assert isinstance(first.signing_key, ed25519.Ed25519PrivateKey)
    assert first.verifying_key.public_bytes_raw() == again.verifying_key.public_bytes_raw()


def test_without_generation_a_missing_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="start the controller once"):
        signing_keys(Config(data_dir=tmp_path), generate=False)
    assert not (tmp_path / DEFAULT_KEY_FILE).exists()


def test_a_configured_rsa_key_is_used_and_nothing_is_generated(tmp_path: Path) -> None:
    path = write_pem(tmp_path / "k.pem", rsa.generate_private_key(65537, 2048))
    config = Config(data_dir=tmp_path / "data", jwt_private_key_file=path, jwt_algorithm="PS256")

    keys = signing_keys(config, generate=True)

    assert keys.algorithm == "PS256" and keys.source == path
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("final_newline", [True, False])
def test_an_ed25519_key_read_without_cryptography_is_the_key_cryptography_reads(
    tmp_path: Path, final_newline: bool
) -> None:
    # keys.py reads the one PEM form it writes (PKCS#8, unencrypted) by hand, so that the start
    # does not import cryptography: the key it makes must be the one cryptography would load.
    key = ed25519.Ed25519PrivateKey.generate()
    path = write_pem(tmp_path / "k.pem", key)
    pem = Path(path).read_bytes()
    assert ed25519_seed(pem) == key.private_bytes_raw()
    if not final_newline:
        Path(path).write_bytes(pem.rstrip(b"\n"))

    keys = signing_keys(Config(jwt_private_key_file=path), generate=False)

    assert keys.algorithm == "EdDSA" and keys.source == path and "k.pem" in repr(keys)
    assert isinstance(keys.signing_key, ed25519.Ed25519PrivateKey)
    assert keys.signing_key.private_bytes_raw() == key.private_bytes_raw()
    assert keys.verifying_key.public_bytes_raw() == key.public_key().public_bytes_raw()


def test_a_pem_of_the_same_shape_but_another_key_goes_through_cryptography(
    tmp_path: Path,
) -> None:
    # 48 bytes of DER in the Ed25519 PEM's shape, with another OID: not taken for an Ed25519
    # seed, so cryptography reads it and refuses it, as any file that is not a key.
    pem = write_pem(tmp_path / "k.pem", ed25519.Ed25519PrivateKey.generate())
    lines = Path(pem).read_bytes().split(b"\n")
    der = bytearray(base64.b64decode(lines[1]))
    der[10] ^= 0xFF  # inside the algorithm's OID
    lines[1] = base64.b64encode(bytes(der))
    Path(pem).write_bytes(b"\n".join(lines))
    assert ed25519_seed(Path(pem).read_bytes()) is None

    with pytest.raises(ConfigError, match="A67_JWT_PRIVATE_KEY_FILE"):
        signing_keys(Config(jwt_private_key_file=pem), generate=False)


def rsa_1024(tmp_path: Path) -> dict[str, Any]:
    return {
        "jwt_private_key_file": write_pem(tmp_path / "k.pem", rsa.generate_private_key(65537, 1024))
    }


def ec_key(tmp_path: Path) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {"jwt_private_key_file": write_pem(tmp_path / "k.pem", key)}


def ed_with_rs256(tmp_path: Path) -> dict[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    return {"jwt_private_key_file": write_pem(tmp_path / "k.pem", key), "jwt_algorithm": "RS256"}


def not_pem(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "k.pem").write_text("hello")
    return {"jwt_private_key_file": str(tmp_path / "k.pem")}


def missing(tmp_path: Path) -> dict[str, Any]:
    return {"jwt_private_key_file": str(tmp_path / "nope.pem")}


def short_secret(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "s").write_bytes(b"short")
    return {"jwt_secret_file": str(tmp_path / "s")}


def pem_as_secret(tmp_path: Path) -> dict[str, Any]:
    write_pem(tmp_path / "s", ed25519.Ed25519PrivateKey.generate())
    return {"jwt_secret_file": str(tmp_path / "s")}


def private_key_as_public(tmp_path: Path) -> dict[str, Any]:
    return {
        "jwt_public_key_file": write_pem(tmp_path / "k.pem", ed25519.Ed25519PrivateKey.generate())
    }


def alg_none(tmp_path: Path) -> dict[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    return {"jwt_private_key_file": write_pem(tmp_path / "k.pem", key), "jwt_algorithm": "none"}


BAD_KEYS = {
    "the algorithm none": (alg_none, "A67_JWT_ALGORITHM"),
    "an RSA key under 2048 bits": (rsa_1024, "A67_JWT_PRIVATE_KEY_FILE"),
    "an EC key": (ec_key, "A67_JWT_PRIVATE_KEY_FILE"),
    "an algorithm of another family": (ed_with_rs256, "A67_JWT_ALGORITHM"),
    "a file that is not PEM": (not_pem, "A67_JWT_PRIVATE_KEY_FILE"),
    "a missing file": (missing, "A67_JWT_PRIVATE_KEY_FILE"),
    "a secret under 32 bytes": (short_secret, "A67_JWT_SECRET_FILE"),
    "a PEM key as the secret": (pem_as_secret, "A67_JWT_SECRET_FILE"),
    "a private key as the public key": (private_key_as_public, "A67_JWT_PUBLIC_KEY_FILE"),
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_an_unusable_key_is_one_line_naming_its_setting(tmp_path: Path, case: str) -> None:
    make, setting = BAD_KEYS[case]
    config = Config(data_dir=tmp_path / "data", **make(tmp_path))

    with pytest.raises(ConfigError) as raised:
        signing_keys(config, generate=True)

    assert setting in str(raised.value) and "\n" not in str(raised.value)


AUTH_SETTINGS = {
    "auth off on loopback": (["--auth", "off"], None),
    "auth off on localhost": (["--auth", "off", "--host", "localhost"], None),
    "auth off on ::1": (["--auth", "off", "--host", "::1"], None),
    "auth off on all addresses": (["--auth", "off", "--host", "0.0.0.0"], "A67_AUTH=off"),
    "auth off on all addresses, explicitly accepted": (
        ["--auth", "off", "--host", "0.0.0.0", "--auth-off-allow-remote", "yes"],
        None,
    ),
    "auth on all addresses": (["--host", "0.0.0.0"], None),
    "an unknown auth mode": (["--auth", "maybe"], "A67_AUTH"),
    "a secret and a key at once": (
        ["--jwt-secret-file", "s", "--jwt-private-key-file", "k"],
        "A67_JWT_SECRET_FILE",
    ),
    "a certificate without its key": (["--tls-cert-file", "c.pem"], "A67_TLS_KEY_FILE"),
    "a client CA without a certificate": (
        ["--tls-client-ca-file", "ca.pem"],
        "A67_TLS_CLIENT_CA_FILE",
    ),
    "no streams per principal": (
        ["--max-streams-per-principal", "0"],
        "A67_MAX_STREAMS_PER_PRINCIPAL",
    ),
    "an empty audience": (["--jwt-audience", ""], None),  # empty means the default
    "a node token ttl of a second": (["--node-token-ttl-s", "1"], "A67_NODE_TOKEN_TTL_S"),
}


@pytest.mark.parametrize("case", list(AUTH_SETTINGS))
def test_security_settings_are_validated_at_start(case: str) -> None:
    argv, named = AUTH_SETTINGS[case]
    if named is None:
        parse_config(argv, {})
        return
    with pytest.raises(ConfigError) as raised:
        parse_config(argv, {})
    assert named in str(raised.value)


def test_auth_is_on_by_default() -> None:
    config = parse_config([], {})
    assert config.auth == "jwt"
    assert (config.jwt_issuer, config.jwt_audience) == ("automator67", "automator67")
