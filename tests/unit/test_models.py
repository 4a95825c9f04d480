"""Domain values: secrets never show themselves; string maps are sorted and immutable."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import pytest

from controller.models import Capabilities, Credentials, Node, Resources, Secret, frozen_map


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:}"):
        assert "hunter2" not in shown
        assert "***" in shown


def test_a_secret_reveals_its_value_on_request() -> None:
    assert Secret("hunter2").reveal() == "hunter2"


def test_secrets_compare_and_hash_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_credentials_and_nodes_print_their_token_masked() -> None:
    creds = Credentials(Secret("hunter2"), "github", 1)
    node = Node(
        id="n",
        provider="p",
        endpoint="e",
        region="",
        capabilities=Capabilities(1.0, 1.0),
        create_time=datetime(2026, 1, 1, tzinfo=UTC),
        update_time=datetime(2026, 1, 1, tzinfo=UTC),
        credentials=creds,
    )
    assert "hunter2" not in repr(creds)
    assert "hunter2" not in repr(node)


def test_a_frozen_map_is_a_sorted_copy() -> None:
    source = {"b": "2", "a": "1"}
    frozen = frozen_map(source)
    source["c"] = "3"
    assert list(frozen.items()) == [("a", "1"), ("b", "2")]


def test_a_frozen_map_of_one_entry_or_none_is_a_copy_too() -> None:
    one: dict[str, str] = {"a": "1"}
    empty: dict[str, str] = {}
    frozen_one, frozen_empty = frozen_map(one), frozen_map(empty)
    one["b"] = empty["b"] = "2"
    assert dict(frozen_one) == {"a": "1"}
    assert dict(frozen_empty) == {}


def test_a_frozen_map_cannot_be_changed() -> None:
    frozen = frozen_map({"a": "1"})
    with pytest.raises(TypeError):
        frozen["a"] = "2"  # type: ignore[index]


def test_a_frozen_map_of_nothing_is_empty() -> None:
    assert dict(frozen_map()) == {}
    assert dict(frozen_map(None)) == {}


def test_models_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        Resources().cpu_cores = 1.0  # type: ignore[misc]


def test_resources_add_field_by_field() -> None:
    total = Resources(1.0, 2.0, 3.0).plus(Resources(0.5, 0.25, 0.0))
    assert total == Resources(1.5, 2.25, 3.0)
