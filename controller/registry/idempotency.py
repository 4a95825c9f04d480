"""AIP-155 request ids: the key, checked, and a fingerprint of the request it came with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from controller.errors import InvalidArgumentError
from controller.models import Secret
from controller.store.base import RequestKey

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_key(request_id: str, spec: Any) -> RequestKey | None:
    """The key for `request_id` (None if empty) with a digest of the dataclass `spec`.
    Secrets enter the digest hashed, so a retry with another token is a different request."""
    if not request_id:
        return None
    if not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgumentError.single(
            "request_id", "must be 1-128 characters of [A-Za-z0-9._:-]"
        )
    document = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=_plain)
    return RequestKey(request_id, hashlib.sha256(document.encode()).hexdigest())


def _plain(value: object) -> object:
    if isinstance(value, Secret):
        return hashlib.sha256(value.reveal().encode()).hexdigest()
    if hasattr(value, "value"):  # enums
        return value.value
    return dict(value)  # type: ignore[call-overload]
