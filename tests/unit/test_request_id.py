"""Every RPC gets a request id: the caller's `x-request-id` if it is sane, else a new one."""

from __future__ import annotations

import re

import pytest

from controller.api.interceptors import REQUEST_ID_KEY, request_id_of

Metadata = tuple[tuple[str, str | bytes], ...] | None

KEPT: dict[str, tuple[Metadata, str]] = {
    "a simple id": (((REQUEST_ID_KEY, "req-1"),), "req-1"),
    "an id of 128 characters": (((REQUEST_ID_KEY, "a" * 128),), "a" * 128),
    "every allowed punctuation mark": (((REQUEST_ID_KEY, "A.b_c:d-9"),), "A.b_c:d-9"),
    "among other metadata": (
        (("user-agent", "grpc-python"), (REQUEST_ID_KEY, "req-2"), ("x-other", "y")),
        "req-2",
    ),
    "the first sane one of two": (
        ((REQUEST_ID_KEY, "first"), (REQUEST_ID_KEY, "second")),
        "first",
    ),
    "a sane one after an insane one": (
        ((REQUEST_ID_KEY, "bad id"), (REQUEST_ID_KEY, "good")),
        "good",
    ),
}


@pytest.mark.parametrize(("metadata", "expected"), KEPT.values(), ids=list(KEPT))
def test_a_sane_caller_request_id_is_kept(metadata: Metadata, expected: str) -> None:
    assert request_id_of(metadata) == expected


NEW_ID = re.compile(r"[0-9a-f]{32}")

REPLACED: dict[str, Metadata] = {
    "no metadata": None,
    "empty metadata": (),
    "other keys only": (("user-agent", "grpc-python"),),
    "an empty id": ((REQUEST_ID_KEY, ""),),
    "an id of 129 characters": ((REQUEST_ID_KEY, "a" * 129),),
    "an id with a space": ((REQUEST_ID_KEY, "a b"),),
    "an id with a newline (log injection)": ((REQUEST_ID_KEY, "a\nfake log line"),),
    "an id with a trailing newline": ((REQUEST_ID_KEY, "abc\n"),),
    "an id with non-ASCII letters": ((REQUEST_ID_KEY, "réq"),),
    "a binary value": ((REQUEST_ID_KEY, b"req-1"),),
    "the key in another case": (("X-Request-Id", "req-1"),),
}


@pytest.mark.parametrize("metadata", REPLACED.values(), ids=list(REPLACED))
def test_a_missing_or_insane_request_id_is_replaced_by_a_new_one(metadata: Metadata) -> None:
    assert NEW_ID.fullmatch(request_id_of(metadata))


def test_new_request_ids_differ() -> None:
    assert len({request_id_of(None) for _ in range(100)}) == 100
