"""Settings dataclasses from flags and environment variables: one `--flag` and one env var per
field (the flag wins over the variable, the variable over the default). Used by the controller's
`Config` and the agent's `AgentSettings`.

A field declares its variable and help with `setting(...)`; its type names the parser."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Type name -> (parser, noun for error messages).
SCALARS: dict[str, tuple[Callable[[str], Any], str]] = {
    "int": (int, "an integer"),
    "float": (float, "a number"),
    "Path": (Path, "a path"),
    "str": (str, "a string"),
}
Parse = Callable[[str, str, str], Any]  # (type name, raw value, where it came from) -> value


def setting(default: Any, env: str, help: str, shown: str | None = None) -> Any:
    """A field settable by `--field-name` and `env`; `shown` replaces the default in --help."""
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "shown": shown})


def add_arguments(cls: type, parser: argparse.ArgumentParser) -> None:
    """One `--flag` per field of `cls`, documented with its env var and default."""
    for f in dataclasses.fields(cls):
        shown = f.metadata.get("shown") or f.default
        if shown == "":
            shown = "none"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.metadata["env"],
            # argparse %-formats help texts: a literal % ("+-10% jitter") must be doubled.
            help=f"{f.metadata['help']} [env {f.metadata['env']}, default {shown}]".replace(
                "%", "%%"
            ),
        )


def values(
    cls: type, args: argparse.Namespace | None, environ: Mapping[str, str] | None, parse: Parse
) -> dict[str, Any]:
    """The fields set by flags or env vars, parsed; unset ones are left to their defaults."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name, None) if args is not None else None
        source = "--" + f.name.replace("_", "-")
        if raw is None:
            raw, source = environ.get(f.metadata["env"]), f.metadata["env"]
        if raw is None or raw == "":
            continue
        found[f.name] = parse(str(f.type), str(raw), source)
    return found


def parse_scalar(kind: str, raw: str, source: str, error: type[Exception]) -> Any:
    """Parses `raw` as the type named `kind`; raises `error` with one line naming `source`."""
    parse, noun = SCALARS[kind]
    try:
        return parse(raw)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise error(f"{source} must be {noun}, not {shown!r}") from None
