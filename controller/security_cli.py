"""`automator67 token create` and `automator67 keys init | rotate | reencrypt`.

    automator67 token create --role admin                  # prints a token for 24 h
    automator67 token create --role node --node NODE_ID --ttl 30d
    automator67 token create --role agent-bootstrap --subject agents --ttl 30d
    automator67 keys init        # creates the signing key and credential key file if missing
    automator67 keys rotate      # a new credential key seals from the next start on
    automator67 keys reencrypt   # reseals every stored credential with the newest key

They read the same settings as `serve` (flags or env vars: the data dir, key files, issuer,
audience, store URL), so a token made here is one the controller accepts. Only the token goes
to stdout (for `$(...)`), and from `keys init` one line per file it created; everything else
goes to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.auth.principals import Role
from controller.config import Config, ConfigError
from controller.errors import InvalidArgumentError

_TOKEN_SETTINGS = (
    "data_dir",
    "jwt_private_key_file",
    "jwt_secret_file",
    "jwt_algorithm",
    "jwt_issuer",
    "jwt_audience",
)
_KEY_SETTINGS = ("data_dir", "store_url", "credential_keys_file")
_INIT_SETTINGS = (
    "data_dir",
    "jwt_private_key_file",
    "jwt_public_key_file",
    "jwt_secret_file",
    "jwt_algorithm",
    "credential_keys_file",
)
_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_TTL = "24h"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="issue bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_commands.add_parser(
        "create",
        help="print a new token",
        description="Print a new bearer token signed with the controller's key. Roles: admin "
        "(everything), operator (deployments, read nodes), viewer (read only), node (only the "
        "heartbeat stream of --node), agent-bootstrap (only RegisterNode: for agents joining the "
        "fleet, which then stream with the node token it returns).",
    )
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--subject", help="who the token is for (audit log); default: your user")
    create.add_argument("--node", help="the node id (required for --role node)")
    create.add_argument(
        "--ttl", default=None, help=f"lifetime: 90s, 30m, 12h, 30d [default {DEFAULT_TTL}]"
    )
    _add_settings(create, _TOKEN_SETTINGS)
    keys = commands.add_parser("keys", help="create and rotate the signing and credential keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    init = key_commands.add_parser(
        "init",
        help="create the token signing key and the credential key file, where missing",
        description="Create whichever of the token signing key and the credential key file "
        "is missing (never overwriting one), where `serve` with the same settings looks for "
        "them, and print one line per file created. With the embedded store the first start "
        "does this; replicas sharing a store (PostgreSQL) must share keys made once, here.",
    )
    _add_settings(init, _INIT_SETTINGS)
    rotate = key_commands.add_parser(
        "rotate",
        help="add a new credential key",
        description="Append a new AES-256-GCM key to the credential key file. Restart the "
        "controller to seal with it, then run `keys reencrypt`. Old keys still decrypt.",
    )
    _add_settings(rotate, _KEY_SETTINGS)
    reencrypt = key_commands.add_parser(
        "reencrypt",
        help="reseal every stored credential with the newest key",
        description="Rewrite every stored node credential sealed with an older key (or none) "
        "with the newest key. Safe while the controller runs.",
    )
    _add_settings(reencrypt, _KEY_SETTINGS)


def run(args: argparse.Namespace) -> int:
    """Runs `token ...` or `keys ...`; returns the exit code."""
    try:
        config = Config.load(args)
        if args.command == "token":
            print(create_token(config, args.role, args.subject, args.node, args.ttl))
        elif args.keys_command == "init":
            _init(config)
        elif args.keys_command == "rotate":
            _rotate(config)
        else:
            import asyncio  # only here: the other commands run no loop

            return asyncio.run(_reencrypt(config))
    except (ConfigError, ValueError) as error:
        print(f"automator67 {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def create_token(
    config: Config, role: str, subject: str | None, node: str | None, ttl: str | None
) -> str:
    """A token signed with `config`'s key. Raises ConfigError or ValueError."""
    from controller.registry.collection import check_id
    from controller.security import issue_token

    if (role == "node") != bool(node):
        raise ValueError("--node is required with --role node, and only with it")
    if node:
        try:
            check_id(node, "--node")
        except InvalidArgumentError as error:
            raise ValueError(str(error)) from None
    ttl_s = parse_ttl(ttl) if ttl else config.node_token_ttl_s if node else parse_ttl(DEFAULT_TTL)
    subject = node or subject or _user()
    token = issue_token(config, role, subject, ttl_s)
    expires = (datetime.now(UTC) + timedelta(seconds=ttl_s)).isoformat(timespec="seconds")
    print(f"{role} token for {subject!r}, expires {expires}", file=sys.stderr)
    return token


def parse_ttl(text: str) -> float:
    match = _TTL.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--ttl must look like 90s, 30m, 12h or 30d, not {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > 10 * 365 * 86400:
        raise ValueError("--ttl must be at most 10 years")
    return seconds


def _init(config: Config) -> None:
    """Creates the missing key files, then loads both, so that a broken existing one is reported
    now rather than by the first replica."""
    from controller.auth.keys import signing_keys
    from controller.crypto import create_key_file, keys_file, load_sealer

    signing = _create_signing_key(config)
    if signing is not None:
        print(f"created token signing key {signing}")
    path = keys_file(config).absolute()
    try:
        key = create_key_file(path)
        print(f"created credential key file {path} (key {key.id})")
    except FileExistsError:
        print(f"kept the existing credential key file {path}", file=sys.stderr)
    keys = signing_keys(config, generate=False)
    load_sealer(config, generate=False)
    if signing is None:
        print(f"kept the existing token signing key {keys.source}", file=sys.stderr)


def _create_signing_key(config: Config) -> str | None:
    """Creates the signing key (or HMAC secret) `config` names, or the data dir's default one;
    None if it exists. A public key cannot be made: it must come from its private key."""
    import secrets

    from controller.auth.keys import FAMILIES, default_key_file, generate_ed25519_pem
    from controller.files import write_private_file

    if config.jwt_secret_file:
        path, data = Path(config.jwt_secret_file), secrets.token_urlsafe(48).encode() + b"\n"
        what = "HMAC secret"
    elif config.jwt_private_key_file or not config.jwt_public_key_file:
        path = default_key_file(config)
        if config.jwt_private_key_file:
            path = Path(config.jwt_private_key_file)
        if config.jwt_algorithm in FAMILIES["rsa"]:
            data, what = _rsa_pem(), "RSA 3072"
        else:
            data, what = generate_ed25519_pem(), "Ed25519"
    elif Path(config.jwt_public_key_file).exists():
        return None
    else:
        raise ConfigError(
            f"A67_JWT_PUBLIC_KEY_FILE: no public key at {config.jwt_public_key_file}; "
            "copy it from the replica whose private key signs"
        )
    path = path.absolute()
    try:
        write_private_file(path, data, overwrite=False)
    except FileExistsError:
        return None
    return f"{path} ({what})"


def _rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=3072).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _rotate(config: Config) -> None:
    from controller.crypto import keys_file, rotate

    key = rotate(keys_file(config))
    print(
        f"added credential key {key.id} to {keys_file(config)}; restart the controller to seal "
        "with it, then run `automator67 keys reencrypt`",
        file=sys.stderr,
    )


async def _reencrypt(config: Config) -> int:
    from controller.crypto import load_sealer
    from controller.store import open_store, reencrypt_credentials

    sealer, _ = load_sealer(config, generate=False)
    store = open_store(config.store_url, sealer)
    await store.open()
    try:
        report = await reencrypt_credentials(store, sealer)
    finally:
        await store.close()
    print(
        f"resealed {report.resealed} credentials with key {report.key_id} "
        f"({report.current} already used it)",
        file=sys.stderr,
    )
    return 0


def _add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """The `serve` flags named, documented as `serve` documents them."""
    for f in dataclasses.fields(Config):
        if f.name in names:
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                metavar=f.metadata["env"],
                help=f"{f.metadata['help']} [env {f.metadata['env']}]".replace("%", "%%"),
            )


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
