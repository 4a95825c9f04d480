"""AIP-158 paging: page sizes, and page tokens that round-trip and refuse misuse."""

from __future__ import annotations

import base64
import json

import pytest

from controller.errors import InvalidArgumentError
from controller.registry.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
    page_size,
)

PAGE_SIZES: dict[str, tuple[int, int]] = {
    "zero means the default": (0, DEFAULT_PAGE_SIZE),
    "one is one": (1, 1),
    "a size under the maximum is kept": (123, 123),
    "the maximum is kept": (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
    "one over the maximum is lowered to it": (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
    "a huge size is lowered to the maximum": (2**31 - 1, MAX_PAGE_SIZE),
}


@pytest.mark.parametrize(("requested", "expected"), PAGE_SIZES.values(), ids=list(PAGE_SIZES))
def test_page_size(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_a_negative_page_size_is_an_invalid_argument_on_page_size(requested: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        page_size(requested)
    [violation] = caught.value.violations
    assert violation.field == "page_size"


ROUND_TRIPS: dict[str, tuple[str, str]] = {
    "an id and no filter": ("123e4567-e89b-12d3-a456-426614174000", ""),
    "an id and a filter": ("123e4567-e89b-12d3-a456-426614174000", "status = READY"),
    "a filter with quotes and unicode": ("b", 'labels.zone = "héllo \\"w\\""'),
    "an empty id": ("", "provider = aws"),
}


@pytest.mark.parametrize(("last_id", "filter_text"), ROUND_TRIPS.values(), ids=list(ROUND_TRIPS))
def test_a_token_round_trips_with_the_filter_it_was_made_for(
    last_id: str, filter_text: str
) -> None:
    token = encode_token(last_id, filter_text)
    assert decode_token(token, filter_text) == last_id


def test_a_token_is_url_safe_and_unpadded() -> None:
    for n in range(40):
        token = encode_token("x" * n, "f")
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_no_token_means_start_from_the_beginning() -> None:
    assert decode_token("", "status = READY") == ""


OTHER_FILTERS: dict[str, tuple[str, str]] = {
    "a different value": ("status = READY", "status = PENDING"),
    "a filter added": ("", "status = READY"),
    "a filter removed": ("status = READY", ""),
    "the same terms spelled differently": ("status = READY", "status=READY"),
}


@pytest.mark.parametrize(
    ("issued_for", "used_with"), OTHER_FILTERS.values(), ids=list(OTHER_FILTERS)
)
def test_a_token_used_with_another_filter_is_refused(issued_for: str, used_with: str) -> None:
    token = encode_token("some-id", issued_for)
    with pytest.raises(InvalidArgumentError) as caught:
        decode_token(token, used_with)
    [violation] = caught.value.violations
    assert violation.field == "page_token"
    assert "different filter" in violation.description


def _b64(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


GARBAGE_TOKENS: dict[str, str] = {
    "not base64": "!!!!",
    "a single character": "a",
    "base64 of text that is not JSON": _b64(b"hello"),
    "base64 of bytes that are not UTF-8": _b64(b"\xff\xfe\x00\x80"),
    "a JSON list": _b64(b"[1, 2]"),
    "a JSON string": _b64(b'"after"'),
    "a JSON number": _b64(b"7"),
    "JSON null": _b64(b"null"),
    "an object without after": _b64(json.dumps({"filter": "x"}).encode()),
    "an object without filter": _b64(json.dumps({"after": "x"}).encode()),
    "a number for after": _b64(json.dumps({"after": 1, "filter": "x"}).encode()),
    "null for filter": _b64(json.dumps({"after": "a", "filter": None}).encode()),
    "non-ASCII characters": "ééé",
    "a token with padding characters in the middle": "ab==cd",
}


@pytest.mark.parametrize("token", GARBAGE_TOKENS.values(), ids=list(GARBAGE_TOKENS))
def test_a_garbage_token_is_an_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        decode_token(token, "")
    [violation] = caught.value.violations
    assert violation.field == "page_token"


def test_a_token_of_deeply_nested_json_is_an_invalid_argument_on_page_token() -> None:
    token = _b64(b"[" * 100_000)
    with pytest.raises(InvalidArgumentError) as caught:
        decode_token(token, "")
    [violation] = caught.value.violations
    assert violation.field == "page_token"
