"""Bearer tokens: JWTs issued and verified with PyJWT, the algorithm pinned by the key.

Claims: `iss`, `aud`, `sub` (a person or service; the node id for a node token), `role`, `iat`,
`nbf`, `exp`, `jti`. Every one is required, with its JSON type: strings for `iss`, `aud`, `sub`,
`role` and `jti` (a node token's `sub` a canonical UUID), whole seconds for `iat`, `nbf` and
`exp` (never a string, a fraction or past the year 9999). A claim of another type is refused like
a forged token, so nothing downstream ever sees one.

The verifier accepts exactly one algorithm, the one its key was loaded for, so neither
`alg: none` nor an algorithm switch (an RS256 public key used as an HS256 secret) can pass; the
token's header is never trusted to choose.

PyJWT is imported when the first call needs it, not at start: it loads all of cryptography's X.509
and asymmetric-key modules, tens of ms that the start need not wait for and ~10 MB of RSS that an
idle controller need not hold. The auth interceptor awaits `imported()` before it verifies: the
import runs once, on a thread, while the event loop serves everything else."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.auth.keys import SigningKeys
from controller.auth.principals import Principal, Role

CACHE_SIZE = 4096  # verified tokens remembered
MAX_TOKEN_CHARS = 8192  # far above a real token (~400 characters); bounds the work on junk
REQUIRED_CLAIMS = ("iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti")
TEXT_CLAIMS = ("iss", "aud", "sub", "role", "jti")
TIME_CLAIMS = ("iat", "nbf", "exp")
MAX_CLAIM_CHARS = 256  # a subject is a user name or a node id; a jti a uuid
MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


class InvalidTokenError(Exception):
    """The token cannot be trusted. The message is for the server log (why), never the client."""


@dataclass(frozen=True)
class TokenSettings:
    issuer: str = "automator67"
    audience: str = "automator67"
    leeway_s: float = 10.0  # clock skew tolerated on exp, nbf and iat


class TokenIssuer:
    """Signs tokens with the private key or secret. `now` (Unix seconds) is injectable."""

    def __init__(
        self,
        keys: SigningKeys,
        settings: TokenSettings,
        now: Callable[[], float] = time.time,
        verifier: TokenVerifier | None = None,
    ) -> None:
        if keys.signing_key is None:
            raise ValueError("these keys can only verify tokens: no private key or secret")
        self._keys = keys
        self._signing_key: Any = keys.signing_key
        self._settings = settings
        self._now = now
        # Told of each token issued here: the one it would accept (see TokenVerifier.issued).
        self._verifier = verifier

    def issue(self, role: Role, subject: str, ttl_s: float) -> str:
        """A token for `subject` with `role`, valid from now for `ttl_s` seconds."""
        if not subject:
            raise ValueError("a token needs a subject")
        now = int(self._now())
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": subject,
            "role": role.value,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl_s),
            "jti": uuid.uuid4().hex,
        }
        token = sign(claims, self._signing_key, self._keys.algorithm)
        if self._verifier is not None:
            self._verifier.issued(token, claims, self._keys, self._settings)
        return token


_HEADERS: dict[str, bytes] = {}  # algorithm -> the token's first segment


def sign(claims: dict[str, Any], key: Any, algorithm: str) -> str:
    """The token `jwt.encode(claims, key, algorithm=algorithm)` makes, byte for byte, through
    PyJWT's own algorithm and encoding, without its generic path (copying and checking the
    claims, building and sorting the header anew): 38 instead of 44 us for an Ed25519 token,
    31 of which are the signature. Registration signs one per node."""
    import jwt
    from jwt.utils import base64url_encode

    header = _HEADERS.get(algorithm)
    if header is None:
        fields = {"alg": algorithm, "typ": "JWT"}
        header = base64url_encode(
            json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
        )
        _HEADERS[algorithm] = header
    signer = jwt.get_algorithm_by_name(algorithm)
    payload = base64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = header + b"." + payload
    signature = signer.sign(signing_input, signer.prepare_key(key))
    return (signing_input + b"." + base64url_encode(signature)).decode()


class TokenVerifier:
    """Checks signature, expiry, not-before, issuer and audience, then reads the principal."""

    def __init__(self, keys: SigningKeys, settings: TokenSettings) -> None:
        self._keys = keys
        self._settings = settings
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @property
    def algorithm(self) -> str:
        return self._keys.algorithm

    def issued(
        self, token: str, claims: dict[str, Any], keys: SigningKeys, settings: TokenSettings
    ) -> None:
        """Remembers a token this process just signed from `claims` with these very keys and
        settings, as if it had verified it (its claims are checked as `verify` checks them;
        its signature is ours). A node's agent streams with its token right after
        registering, so a fleet joining at once is not verified token by token (~100-200 us
        each: 6 % of the controller's samples during a 10,000-node join). A token signed with
        other keys or settings, or that `verify` would refuse, is not remembered."""
        if keys is not self._keys or settings != self._settings:
            return
        try:
            _check_claim_types(claims)
        except InvalidTokenError:
            return
        principal = Principal(
            subject=claims["sub"], role=Role(claims["role"]), token_id=claims["jti"]
        )
        self._remember(token, principal, float(claims["exp"]))

    def verify(self, token: str) -> Principal:
        """The principal the token names. Raises InvalidTokenError saying why not.

        A token that verified is remembered until its `exp` (at most CACHE_SIZE of them): an
        agent or operator sends the same token on every call, and a signature check costs
        ~100-200 us. Anything not remembered, or past its `exp`, is verified in full."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, expires = self._verify(token)
        self._remember(token, principal, expires)
        return principal

    def _remember(self, token: str, principal: Principal, expires: float) -> None:
        self._verified[token] = (principal, expires)
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)

    def _verify(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidTokenError("token too long")
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._keys.verifying_key,
                algorithms=[self._keys.algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.PyJWTError as error:
            raise InvalidTokenError(f"{type(error).__name__}: {error}") from None
        _check_claim_types(claims)
        role, subject = Role(claims["role"]), claims["sub"]
        principal = Principal(subject=subject, role=role, token_id=claims["jti"])
        return principal, float(claims["exp"])


def _check_claim_types(claims: dict[str, Any]) -> None:
    """Raises InvalidTokenError unless every claim has its type (PyJWT checked the values of
    `iss`, `aud` and the times, but takes `"exp": "9999999999"` for a number)."""
    for name in TEXT_CLAIMS:
        value = claims[name]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_CHARS:
            raise InvalidTokenError(f"claim {name!r} must be a string of 1-{MAX_CLAIM_CHARS}")
    for name in TIME_CLAIMS:
        value = claims[name]
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)  # 1.8e9 is a whole number of seconds, written as JSON allows
        if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
            raise InvalidTokenError(f"claim {name!r} must be whole seconds since 1970")
    if claims["role"] not in {role.value for role in Role}:
        raise InvalidTokenError("unknown role")
    if claims["role"] == Role.NODE and not _is_uuid(claims["sub"]):
        raise InvalidTokenError("a node token's subject must be a node id")


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def unverified_claims(token: str) -> dict[str, object]:
    """The claims of a token WITHOUT checking anything: for a client deciding what its own token
    lets it do (an agent with a node token skips registration), never for granting access."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


_imported = False  # PyJWT imported by `_import` (in sys.modules is not enough: half-imported)
_importing: Any = None  # the asyncio future of the import running on a thread, once started


def is_imported() -> bool:
    return _imported


async def imported() -> None:
    """Returns once PyJWT is imported. The first caller starts the import on the loop's default
    executor; callers that come meanwhile wait for the same import, and a caller that leaves
    (cancelled) does not stop it."""
    import asyncio  # not at module level: `token create` runs no loop

    global _importing
    loop = asyncio.get_running_loop()
    if _importing is None or _importing.get_loop() is not loop:
        _importing = loop.run_in_executor(None, _import)
    await asyncio.shield(_importing)


def _import() -> None:
    global _imported
    import jwt  # noqa: F401

    _imported = True
