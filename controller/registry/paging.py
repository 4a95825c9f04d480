"""AIP-158 pagination: page sizes and opaque page tokens.

A token is the last id of the previous page plus a digest of the filter it was made for, so a
token reused with another filter is refused instead of returning a wrong page."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from controller.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 1024  # issued tokens are about 100 characters
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def page_size(requested: int) -> int:
    """0 means the default; values above the maximum are lowered to it; negatives are invalid."""
    if requested < 0:
        raise InvalidArgumentError.single("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_id: str, filter_text: str) -> str:
    payload = json.dumps({"after": last_id, "filter": _digest(filter_text)}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, filter_text: str) -> str:
    """The id to continue after ("" for no token). Raises InvalidArgumentError on a bad token."""
    if not token:
        return ""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgumentError.single("page_token", "not a token this server issued")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, digest = payload["after"], payload["filter"]
        if not isinstance(after, str) or not isinstance(digest, str):
            raise ValueError
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidArgumentError.single("page_token", "not a token this server issued") from exc
    if digest != _digest(filter_text):
        raise InvalidArgumentError.single("page_token", "was issued for a different filter")
    return after


def _digest(filter_text: str) -> str:
    return hashlib.sha256(filter_text.encode()).hexdigest()[:16]
