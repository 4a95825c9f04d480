"""The one conversion of a domain time to a protobuf Timestamp, for every converter in api/."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def timestamp_pb(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """`value` as a Timestamp; None (the field left unset) for None."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp
