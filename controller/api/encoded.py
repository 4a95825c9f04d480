"""Responses answered already serialized: a behavior marked `answers_encoded` returns the bytes
of its response message, and the method's response serializer passes them through
(`generic_only.py` drops the serializer of such a method).

Why: a node's message is encoded once per change of the node (`NodeRegistry.derived`). Parsing
those bytes back into a response message and serializing the whole response again, on every
read, was most of a ListNodes' own work (50 nodes: a parse and a serialize of each). Serialized
protobuf messages concatenate: a message field is its tag, the length of its payload as a
varint, then the payload, and fields may follow in any order (the wire format's rules; a
parser reads them the same as the canonical order). So a response is framed from the cached
bytes without a message object."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "answers_encoded"
_LENGTH_DELIMITED = 2  # the wire type of strings, bytes and messages


def answers_encoded(behavior: F) -> F:
    """Marks a servicer method that returns its response serialized (bytes), not a message."""
    setattr(behavior, _MARK, True)
    return behavior


def is_encoded(behavior: object) -> bool:
    """Whether `behavior` (a servicer's bound method, say) was marked by `answers_encoded`."""
    return getattr(behavior, _MARK, False) is True


def varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (a message, a string's UTF-8 or bytes) numbered `number`."""
    return _tag(number) + _length(len(payload)) + payload


def repeated(number: int, payloads: Iterable[bytes]) -> bytes:
    """A repeated message field: each payload framed as one element, in order."""
    tag = _tag(number)
    parts: list[bytes] = []
    append = parts.append
    for payload in payloads:
        append(tag)
        append(_length(len(payload)))
        append(payload)
    return b"".join(parts)


def _tag(number: int) -> bytes:
    return varint(number << 3 | _LENGTH_DELIMITED)


def _length(size: int) -> bytes:
    """`varint(size)`, without a loop for the sizes of most messages (< 16 KiB)."""
    if size < 0x80:
        return _ONE_BYTE[size]
    if size < 0x4000:
        return bytes(((size & 0x7F) | 0x80, size >> 7))
    return varint(size)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]
