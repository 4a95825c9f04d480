"""timestamp_pb makes what protobuf's own Timestamp.FromDatetime makes, for every kind of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from controller.api.timestamps import timestamp_pb

TIMES: dict[str, datetime] = {
    "UTC, with microseconds": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "the epoch": datetime(1970, 1, 1, tzinfo=UTC),
    "before the epoch": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    "long before the epoch": datetime(1, 1, 1, tzinfo=UTC),
    "the last representable": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    "another offset": datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5.75))),
    "a negative offset": datetime(2000, 2, 29, 0, 0, tzinfo=timezone(timedelta(hours=-12))),
    "naive (taken as UTC)": datetime(2026, 1, 2, 3, 4, 5, 6),
}


@pytest.mark.parametrize("value", TIMES.values(), ids=list(TIMES))
def test_a_time_becomes_the_timestamp_protobuf_makes_of_it(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert timestamp_pb(value) == expected


def test_no_time_is_no_timestamp() -> None:
    assert timestamp_pb(None) is None
