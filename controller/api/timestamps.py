"""The one conversion of a domain time to a protobuf Timestamp, for every converter in api/."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # a naive time is UTC, as Timestamp.FromDatetime takes it


def timestamp_pb(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """`value` as a Timestamp; None (the field left unset) for None. What
    `Timestamp.FromDatetime` makes, in a third of its time (it is pure Python, and every node
    message holds two or three)."""
    if value is None:
        return None
    since = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )
