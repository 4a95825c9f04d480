"""A subset of AIP-160 filters: `field = value` terms joined by AND.

Values are bare words or double-quoted strings (with `\\"` and `\\\\` escapes). Each kind declares
its fields; a field may normalize its values (enum names accept the short and the full form).
Errors are INVALID_ARGUMENT on the `filter` field, saying what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from controller.errors import InvalidArgumentError

MAX_FILTER_LENGTH = 2048
_TOKEN = re.compile(r'\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<op>=)|(?P<word>[^\s="]+))')
# A normaliser returns the canonical value, or None if the value is not allowed.
Normalizer = Callable[[str], str | None]


def enum_normalizer(prefix: str, names: list[str]) -> Normalizer:
    """Accepts `READY` or `NODE_STATUS_READY` (any case) for an enum whose values are `names`."""
    allowed = set(names)

    def normalize(value: str) -> str | None:
        upper = value.upper()
        short = upper.removeprefix(prefix)
        return short if short in allowed else None

    return normalize


def parse_filter(text: str, fields: Mapping[str, Normalizer | None]) -> list[tuple[str, str]]:
    """Parses `text` into (field, value) terms. `fields` maps field names to an optional
    normalizer; the name `labels.*` admits any `labels.KEY`."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _error(f"at most {MAX_FILTER_LENGTH} characters")
    tokens = _tokenize(text)
    terms: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        if terms:
            if tokens[i] != ("word", "AND"):
                raise _error(f"expected AND between terms, got {tokens[i][1]!r}")
            i += 1
        if i + 3 > len(tokens) or tokens[i][0] != "word" or tokens[i + 1] != ("op", "="):
            raise _error("expected a term like `field = value`")
        field, (kind, raw) = tokens[i][1], tokens[i + 2]
        if kind == "op":
            raise _error(f"expected a value after `{field} =`")
        value = _unquote(raw) if kind == "quoted" else raw
        terms.append((field, _check(field, value, fields)))
        i += 3
    return terms


def _check(field: str, value: str, fields: Mapping[str, Normalizer | None]) -> str:
    if field.startswith("labels.") and "labels.*" in fields and len(field) > len("labels."):
        return value
    if field not in fields:
        names = ", ".join(sorted(fields))
        raise _error(f"unknown field {field!r}; filterable fields: {names}")
    normalize = fields[field]
    if normalize is None:
        return value
    canonical = normalize(value)
    if canonical is None:
        raise _error(f"{value!r} is not a valid value of {field}")
    return canonical


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while text[pos:].strip():
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            where = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
            raise _error(f"cannot parse the filter at character {where}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


def _error(description: str) -> InvalidArgumentError:
    return InvalidArgumentError.single("filter", description)
