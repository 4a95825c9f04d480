"""The AIP-160 subset: `field = value` terms joined by AND, and the errors for everything else."""

from __future__ import annotations

import pytest

from controller.errors import InvalidArgumentError
from controller.registry import deployments, nodes
from controller.registry.filtering import MAX_FILTER_LENGTH, enum_normalizer, parse_filter

NODE_FIELDS = nodes.FILTER_FIELDS
DEPLOYMENT_FIELDS = deployments.FILTER_FIELDS

VALID_NODE_FILTERS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "an empty filter has no terms": ("", []),
    "a blank filter has no terms": ("  \t\n ", []),
    "one bare term": ("provider = aws", [("provider", "aws")]),
    "no spaces around the equals sign": ("provider=aws", [("provider", "aws")]),
    "extra spaces everywhere": ("  provider   =   aws  ", [("provider", "aws")]),
    "two terms joined by AND": (
        "provider = aws AND region = us-east-1",
        [("provider", "aws"), ("region", "us-east-1")],
    ),
    "three terms joined by AND": (
        "provider=aws AND region=eu AND status=READY",
        [("provider", "aws"), ("region", "eu"), ("status", "READY")],
    ),
    "a quoted value": ('region = "us-east-1"', [("region", "us-east-1")]),
    "a quoted value with spaces and an equals sign": (
        'provider = "a b = c"',
        [("provider", "a b = c")],
    ),
    "a quoted empty value": ('region = ""', [("region", "")]),
    "a quoted value with an escaped quote": (
        r'provider = "say \"hi\""',
        [("provider", 'say "hi"')],
    ),
    "a quoted value with an escaped backslash": (r'provider = "a\\b"', [("provider", "a\\b")]),
    "a quoted value with the word AND in it": (
        'provider = "x AND y"',
        [("provider", "x AND y")],
    ),
    "a label": ("labels.zone = a", [("labels.zone", "a")]),
    "a label with dots and a slash in its key": (
        "labels.example.com/owner = team-a",
        [("labels.example.com/owner", "team-a")],
    ),
    "a label with a quoted value": ('labels.zone = "us east"', [("labels.zone", "us east")]),
    "a status in the short form": ("status = READY", [("status", "READY")]),
    "a status in the full form": ("status = NODE_STATUS_READY", [("status", "READY")]),
    "a status in lower case": ("status = ready", [("status", "READY")]),
    "a status in the full form in lower case": (
        "status = node_status_offline",
        [("status", "OFFLINE")],
    ),
    "a status in mixed case": ("status = Suspect", [("status", "SUSPECT")]),
    "a quoted status": ('status = "pending"', [("status", "PENDING")]),
    "a term may repeat": (
        "provider = a AND provider = a",
        [("provider", "a"), ("provider", "a")],
    ),
}


@pytest.mark.parametrize(
    ("text", "terms"), VALID_NODE_FILTERS.values(), ids=list(VALID_NODE_FILTERS)
)
def test_a_valid_node_filter_parses_into_its_terms(text: str, terms: list[tuple[str, str]]) -> None:
    assert parse_filter(text, NODE_FIELDS) == terms


VALID_DEPLOYMENT_FILTERS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "a name": ("name = web", [("name", "web")]),
    "a status in the short form": ("status = RUNNING", [("status", "RUNNING")]),
    "a status in the full form": (
        "status = DEPLOYMENT_STATUS_STOPPING",
        [("status", "STOPPING")],
    ),
    "a status in lower case": ("status = failed", [("status", "FAILED")]),
    "a provider and a region": (
        "provider = aws AND region = eu",
        [("provider", "aws"), ("region", "eu")],
    ),
}


@pytest.mark.parametrize(
    ("text", "terms"), VALID_DEPLOYMENT_FILTERS.values(), ids=list(VALID_DEPLOYMENT_FILTERS)
)
def test_a_valid_deployment_filter_parses_into_its_terms(
    text: str, terms: list[tuple[str, str]]
) -> None:
    assert parse_filter(text, DEPLOYMENT_FIELDS) == terms


INVALID_NODE_FILTERS: dict[str, str] = {
    "a field alone": "provider",
    "a field and an equals sign with no value": "provider =",
    "a field and an equals sign and then AND": "provider = AND region = a",
    "two equals signs": "provider = = aws",
    "a value alone": '"aws"',
    "an equals sign first": "= aws",
    "a quoted field name": '"provider" = aws',
    "two terms without AND": "provider = a region = b",
    "a lower-case and": "provider = a and region = b",
    "OR is not supported": "provider = a OR region = b",
    "a trailing AND": "provider = a AND",
    "a leading AND": "AND provider = a",
    "two ANDs in a row": "provider = a AND AND region = b",
    "an unknown field": "color = red",
    "a field of deployments only": "name = web",
    "labels with no key": "labels. = a",
    "the bare word labels": "labels = a",
    "an unterminated quote": 'provider = "aws',
    "a quote that ends on an escape": 'provider = "aws\\"',
    "a value with an equals sign in it": "provider = a=b",
    "a not-equals operator": "provider != aws",
    "a comparison operator": "provider > aws",
    "a second value after a term": 'provider = "a" "b"',
    "an unknown status": "status = BROKEN",
    "an unspecified status": "status = UNSPECIFIED",
    "the full unspecified status": "status = NODE_STATUS_UNSPECIFIED",
    "a deployment status on nodes": "status = RUNNING",
    "the prefix of another enum": "status = DEPLOYMENT_STATUS_PENDING",
    "the bare enum prefix": "status = NODE_STATUS_",
    "an empty status": 'status = ""',
    "one character too long": "provider = " + "a" * (MAX_FILTER_LENGTH - len("provider = ") + 1),
    "ten megabytes": "provider = " + "a" * 10_000_000,
}


@pytest.mark.parametrize("text", INVALID_NODE_FILTERS.values(), ids=list(INVALID_NODE_FILTERS))
def test_an_invalid_node_filter_is_an_invalid_argument_on_the_filter_field(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_filter(text, NODE_FIELDS)
    [violation] = caught.value.violations
    assert violation.field == "filter"
    assert violation.description


def test_a_label_is_an_unknown_field_of_a_kind_without_labels() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_filter("labels.zone = a", DEPLOYMENT_FIELDS)
    [violation] = caught.value.violations
    assert violation.field == "filter"
    assert "labels.zone" in violation.description


def test_a_filter_of_exactly_the_maximum_length_is_accepted() -> None:
    text = "provider = " + "a" * (MAX_FILTER_LENGTH - len("provider = "))
    assert len(text) == MAX_FILTER_LENGTH
    assert parse_filter(text, NODE_FIELDS) == [("provider", text[len("provider = ") :])]


ERROR_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "an unknown field lists the filterable fields": (
        "color = red",
        "filterable fields: labels.*, provider, region, status",
    ),
    "a missing AND names what came instead": ("provider = a region = b", "'region'"),
    "a missing value names the field": ("provider = = aws", "after `provider =`"),
    "a half term shows the expected shape": ("provider =", "`field = value`"),
    "a bad status names the value": ("status = BROKEN", "'BROKEN'"),
    "an unparsable filter names the position": ('provider="aws', "character 10"),
    "a long filter states the limit": ("a" * (MAX_FILTER_LENGTH + 1), str(MAX_FILTER_LENGTH)),
}


@pytest.mark.parametrize(
    ("text", "expected"), ERROR_DESCRIPTIONS.values(), ids=list(ERROR_DESCRIPTIONS)
)
def test_an_error_says_what_was_wrong(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_filter(text, NODE_FIELDS)
    assert expected in caught.value.violations[0].description


NORMALIZED: dict[str, tuple[str, str | None]] = {
    "the short form": ("READY", "READY"),
    "the full form": ("NODE_STATUS_READY", "READY"),
    "lower case": ("ready", "READY"),
    "the full form in lower case": ("node_status_ready", "READY"),
    "an unknown name": ("GONE", None),
    "the prefix alone": ("NODE_STATUS_", None),
    "another enum's prefix": ("DEPLOYMENT_STATUS_READY", None),
    "an empty string": ("", None),
}


@pytest.mark.parametrize(("value", "expected"), NORMALIZED.values(), ids=list(NORMALIZED))
def test_an_enum_normalizer_accepts_short_full_and_lower_case_forms(
    value: str, expected: str | None
) -> None:
    normalize = enum_normalizer("NODE_STATUS_", ["PENDING", "READY"])
    assert normalize(value) == expected
