"""AIP-155 request ids: the key, checked, and a fingerprint of the request it came with."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping
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
    document = json.dumps(_canonical(spec), sort_keys=True)
    return RequestKey(request_id, hashlib.sha256(document.encode()).hexdigest())


# Types written as they are, and the field names of each dataclass met (dataclasses.fields()
# builds a tuple of Field objects on every call: most of a registration's ~35 us fingerprint).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _canonical(value: Any) -> Any:
    """`value` as plain JSON data: dataclasses and maps as dicts, enums by value."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Secret):
        return hashlib.sha256(value.reveal().encode()).hexdigest()
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _canonical(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
