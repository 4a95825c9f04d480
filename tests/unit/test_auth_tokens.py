"""Tokens: issued and verified with every supported key kind; every way a token can be wrong is
refused, and a refusal never depends on what the token's header asks for."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from controller.auth import tokens
from controller.auth.keys import SigningKeys, signing_keys
from controller.auth.principals import Principal, Role
from controller.auth.tokens import (
    InvalidTokenError,
    TokenIssuer,
    TokenSettings,
    TokenVerifier,
    unverified_claims,
)
from controller.config import Config

SETTINGS = TokenSettings(issuer="automator67", audience="automator67", leeway_s=0)
NOW = 1_800_000_000.0
NODE_ID = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"


def pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def keys_of(tmp_path: Path, kind: str) -> SigningKeys:
    """Keys loaded the way the controller loads them."""
    if kind == "ed25519":
        return signing_keys(Config(data_dir=tmp_path), generate=True)
    if kind == "rsa":
        tmp_path.mkdir(parents=True, exist_ok=True)
        path = tmp_path / "rsa.pem"
        path.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        return signing_keys(Config(jwt_private_key_file=str(path)), generate=False)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "secret"
    path.write_bytes(b"s" * 48)
    return signing_keys(Config(jwt_secret_file=str(path)), generate=False)


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("ed25519", "EdDSA"), ("rsa", "RS256"), ("hmac", "HS256")]
)
def test_a_token_round_trips_with_each_key_kind(tmp_path: Path, kind: str, algorithm: str) -> None:
    keys = keys_of(tmp_path, kind)
    token = TokenIssuer(keys, SETTINGS).issue(Role.OPERATOR, "alice", 60)

    principal = TokenVerifier(keys, SETTINGS).verify(token)

    assert keys.algorithm == algorithm
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert (principal.subject, principal.role) == ("alice", Role.OPERATOR)
    assert principal.token_id and principal.node_id is None


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "hmac"])
def test_a_token_is_the_one_pyjwt_encode_makes_byte_for_byte(tmp_path: Path, kind: str) -> None:
    keys = keys_of(tmp_path, kind)
    issued = TokenIssuer(keys, SETTINGS, now=lambda: NOW).issue(Role.NODE, NODE_ID, 60)
    made = claims(sub=NODE_ID, role="node", iat=int(NOW), nbf=int(NOW), exp=int(NOW) + 60)
    made["jti"] = unverified_claims(issued)["jti"]

    # Ed25519 and RSA PKCS#1 v1.5 signatures, like HMACs, are deterministic.
    assert keys.signing_key is not None
    assert issued == jwt.encode(made, keys.signing_key, algorithm=keys.algorithm)


def test_a_node_token_names_its_node(tmp_path: Path) -> None:
    keys = keys_of(tmp_path, "ed25519")
    token = TokenIssuer(keys, SETTINGS).issue(Role.NODE, NODE_ID, 60)

    principal = TokenVerifier(keys, SETTINGS).verify(token)

    assert principal == Principal(NODE_ID, Role.NODE, principal.token_id)
    assert principal.node_id == NODE_ID
    assert unverified_claims(token)["sub"] == NODE_ID


def test_whole_seconds_written_as_floats_are_accepted(tmp_path: Path) -> None:
    keys = keys_of(tmp_path, "ed25519")
    now = float(int(time.time()))
    token = signed(keys, iat=now, nbf=now, exp=now + 600)

    assert TokenVerifier(keys, SETTINGS).verify(token).subject == "mallory"


def _segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "automator67",
        "aud": "automator67",
        "sub": "mallory",
        "role": "admin",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "x",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(keys: SigningKeys, **changes: object) -> str:
    """Signs the claims as given: PyJWT's own encoder would refuse some of the wrong types."""
    key: Any = keys.signing_key
    payload = json.dumps(claims(**changes)).encode()
    return jwt.PyJWS().encode(payload, key, algorithm=keys.algorithm, headers={"typ": "JWT"})


def alg_switched(keys: SigningKeys) -> str:
    """The classic confusion attack: HS256 with the (public) verification key as the secret."""
    public_pem = keys.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def tampered(keys: SigningKeys) -> str:
    """A viewer token whose payload was swapped for an admin's, signature kept."""
    header, _, signature = signed(keys, role="viewer").split(".")
    return f"{header}.{_segment(claims(role='admin', sub='root'))}.{signature}"


# Each forges or spoils a token in one way; all must be refused.
BAD: dict[str, Callable[[SigningKeys], str]] = {
    "expired": lambda k: signed(k, exp=1_000, iat=900, nbf=900),
    "not yet valid": lambda k: signed(k, nbf=4_000_000_000),
    "wrong issuer": lambda k: signed(k, iss="someone-else"),
    "wrong audience": lambda k: signed(k, aud="another-service"),
    "audience as a list": lambda k: signed(k, aud=["automator67", "x"]),
    "no expiry": lambda k: signed(k, exp=None),
    "no subject": lambda k: signed(k, sub=None),
    "empty subject": lambda k: signed(k, sub=""),
    "no role": lambda k: signed(k, role=None),
    "unknown role": lambda k: signed(k, role="root"),
    "signed by another key": lambda k: jwt.encode(
        claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA"
    ),
    "alg none": lambda k: f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims())}.",
    "alg switched to HS256 keyed with the public key": lambda k: alg_switched(k),
    "tampered payload": lambda k: tampered(k),
    "garbage": lambda k: "not-a-jwt",
    "empty": lambda k: "",
    "too long": lambda k: signed(k, pad="x" * 10_000),
    # A claim of the wrong JSON type, correctly signed:
    "role as a list": lambda k: signed(k, role=["admin"]),
    "role as an object": lambda k: signed(k, role={"admin": True}),
    "role as a number": lambda k: signed(k, role=1),
    "subject as a list": lambda k: signed(k, sub=["mallory"]),
    "subject as a number": lambda k: signed(k, sub=7),
    "subject of 10,000 characters": lambda k: signed(k, sub="m" * 10_000),
    "jti as an object": lambda k: signed(k, jti={"a": 1}),
    "jti as a number": lambda k: signed(k, jti=5),
    "empty jti": lambda k: signed(k, jti=""),
    "issuer as a list": lambda k: signed(k, iss=["automator67"]),
    "audience as an object": lambda k: signed(k, aud={"automator67": 1}),
    "exp as a string": lambda k: signed(k, exp="9999999999"),
    "exp as a boolean": lambda k: signed(k, exp=True),
    "exp past the year 9999": lambda k: signed(k, exp=10**20),
    "exp of 400 digits": lambda k: signed(k, exp=10**400),
    "exp with a fraction": lambda k: signed(k, exp=int(time.time()) + 600.5),
    "exp as a list": lambda k: signed(k, exp=[9999999999]),
    "nbf as a string": lambda k: signed(k, nbf="0"),
    "iat as a string": lambda k: signed(k, iat="0"),
    "iat as an object": lambda k: signed(k, iat={}),
    "negative iat": lambda k: signed(k, iat=-5),
    "node token for a subject that is no node id": lambda k: signed(k, role="node", sub="n-1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_token_is_refused(tmp_path: Path, case: str) -> None:
    keys = keys_of(tmp_path, "ed25519")
    token = BAD[case](keys)

    with pytest.raises(InvalidTokenError):
        TokenVerifier(keys, SETTINGS).verify(token)


def test_leeway_tolerates_a_little_clock_skew(tmp_path: Path) -> None:
    keys = keys_of(tmp_path, "ed25519")
    now = time.time()
    token = TokenIssuer(keys, SETTINGS, now=lambda: now - 65).issue(Role.VIEWER, "v", 60)

    with pytest.raises(InvalidTokenError):
        TokenVerifier(keys, SETTINGS).verify(token)
    lenient = TokenSettings(SETTINGS.issuer, SETTINGS.audience, leeway_s=30)
    assert TokenVerifier(keys, lenient).verify(token).subject == "v"


def test_an_hmac_verifier_refuses_an_asymmetric_token_and_the_reverse(tmp_path: Path) -> None:
    ed = keys_of(tmp_path / "a", "ed25519")
    hs = keys_of(tmp_path / "b", "hmac")
    with pytest.raises(InvalidTokenError):
        TokenVerifier(hs, SETTINGS).verify(TokenIssuer(ed, SETTINGS).issue(Role.ADMIN, "a", 60))
    with pytest.raises(InvalidTokenError):
        TokenVerifier(ed, SETTINGS).verify(TokenIssuer(hs, SETTINGS).issue(Role.ADMIN, "a", 60))


def test_verify_only_keys_cannot_issue(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    keys = signing_keys(Config(jwt_public_key_file=str(path)), generate=False)
    token = jwt.encode(claims(role="viewer"), private, algorithm="EdDSA")

    assert TokenVerifier(keys, SETTINGS).verify(token).role is Role.VIEWER
    with pytest.raises(ValueError):
        TokenIssuer(keys, SETTINGS)


def test_unverified_claims_of_junk_are_empty() -> None:
    assert unverified_claims("junk") == {}


def test_a_verified_token_is_remembered_until_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = keys_of(tmp_path, "ed25519")
    verifier = TokenVerifier(keys, SETTINGS)
    token = signed(keys, exp=int(time.time()) + 60)
    calls: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls.append("decode")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first, second = verifier.verify(token), verifier.verify(token)
    assert first == second and calls == ["decode"]  # the second call was remembered

    later = time.time() + 120  # past its exp by the cache's clock: verified in full again
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.verify(token)  # (PyJWT keeps its own clock, for which it is still valid)
    assert calls == ["decode", "decode"]


def test_a_refused_token_is_never_remembered(tmp_path: Path) -> None:
    keys = keys_of(tmp_path, "ed25519")
    verifier = TokenVerifier(keys, SETTINGS)
    token = tampered(keys)
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            verifier.verify(token)


def test_a_token_issued_with_the_verifier_is_remembered_as_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = keys_of(tmp_path, "ed25519")
    verifier = TokenVerifier(keys, SETTINGS)
    token = TokenIssuer(keys, SETTINGS, verifier=verifier).issue(Role.NODE, NODE_ID, 60)
    expected = TokenVerifier(keys, SETTINGS).verify(token)  # in full

    def no_check(token: str) -> Any:
        raise AssertionError("verified again")

    monkeypatch.setattr(verifier, "_verify", no_check)
    assert verifier.verify(token) == expected


def test_a_token_the_verifier_would_not_accept_is_not_remembered(tmp_path: Path) -> None:
    keys, other = keys_of(tmp_path / "a", "ed25519"), keys_of(tmp_path / "b", "ed25519")
    verifier = TokenVerifier(keys, SETTINGS)
    tokens = [
        TokenIssuer(keys, SETTINGS, verifier=verifier).issue(Role.NODE, "not-a-node-id", 60),
        TokenIssuer(other, SETTINGS, verifier=verifier).issue(Role.NODE, NODE_ID, 60),
        TokenIssuer(keys, TokenSettings(issuer="else"), verifier=verifier).issue(
            Role.NODE, NODE_ID, 60
        ),
    ]

    for token in tokens:
        with pytest.raises(InvalidTokenError):
            verifier.verify(token)


async def test_calls_before_pyjwt_is_imported_share_one_import_on_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The auth interceptor awaits `tokens.imported()` on a start's first calls: the import
    runs once, off the event loop, and a caller that leaves does not cancel it."""
    threads: list[str] = []

    def fake_import() -> None:
        threads.append(threading.current_thread().name)
        monkeypatch.setattr(tokens, "_imported", True)

    monkeypatch.setattr(tokens, "_import", fake_import)
    monkeypatch.setattr(tokens, "_imported", False)
    monkeypatch.setattr(tokens, "_importing", None)

    leaving = asyncio.ensure_future(tokens.imported())
    waiting = [asyncio.ensure_future(tokens.imported()) for _ in range(5)]
    leaving.cancel()
    await asyncio.wait_for(asyncio.gather(*waiting), 10)

    assert len(threads) == 1 and threads[0] != threading.current_thread().name
    assert tokens.is_imported()
    await tokens.imported()  # once imported: at once, no second import
    assert len(threads) == 1
