"""The numbers a beat may carry: load within sane bounds, else INVALID_ARGUMENT naming the field
(a node reporting 1e308 GB used would make every total meaningless)."""

from __future__ import annotations

import math

import pytest
from automator67.v1 import heartbeat_pb2 as hb

from controller.api.heartbeat_stream import _check_beat
from controller.errors import InvalidArgumentError
from controller.registry.validation import MAX_DISK_GB, MAX_MEMORY_GB

GOOD: dict[str, hb.NodeLoad] = {
    "no load": hb.NodeLoad(),
    "everything at its maximum": hb.NodeLoad(
        cpu_percent=100, memory_used_gb=MAX_MEMORY_GB, disk_used_gb=MAX_DISK_GB
    ),
}

# name: (load, the field the error names)
BAD: dict[str, tuple[hb.NodeLoad, str]] = {
    "1e308 GB of memory used": (hb.NodeLoad(memory_used_gb=1e308), "beat.load.memory_used_gb"),
    "memory just over the maximum": (
        hb.NodeLoad(memory_used_gb=MAX_MEMORY_GB * 1.01),
        "beat.load.memory_used_gb",
    ),
    "disk over the maximum": (hb.NodeLoad(disk_used_gb=MAX_DISK_GB * 2), "beat.load.disk_used_gb"),
    "NaN disk": (hb.NodeLoad(disk_used_gb=math.nan), "beat.load.disk_used_gb"),
    "minus infinite memory": (hb.NodeLoad(memory_used_gb=-math.inf), "beat.load.memory_used_gb"),
    "cpu over 100": (hb.NodeLoad(cpu_percent=1e308), "beat.load.cpu_percent"),
    # The range checks alone refuse what is not a finite number (no isfinite() per beat).
    "NaN cpu": (hb.NodeLoad(cpu_percent=math.nan), "beat.load.cpu_percent"),
    "infinite cpu": (hb.NodeLoad(cpu_percent=math.inf), "beat.load.cpu_percent"),
    "infinite memory": (hb.NodeLoad(memory_used_gb=math.inf), "beat.load.memory_used_gb"),
    "infinite disk": (hb.NodeLoad(disk_used_gb=math.inf), "beat.load.disk_used_gb"),
    "minus infinite disk": (hb.NodeLoad(disk_used_gb=-math.inf), "beat.load.disk_used_gb"),
    "NaN memory": (hb.NodeLoad(memory_used_gb=-math.nan), "beat.load.memory_used_gb"),
}


@pytest.mark.parametrize("load", GOOD.values(), ids=list(GOOD))
def test_a_sane_load_passes(load: hb.NodeLoad) -> None:
    _check_beat(hb.Beat(sequence=1, load=load))


@pytest.mark.parametrize(("load", "field"), BAD.values(), ids=list(BAD))
def test_an_absurd_load_is_invalid_naming_its_field(load: hb.NodeLoad, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        _check_beat(hb.Beat(sequence=1, load=load))
    assert [v.field for v in caught.value.violations] == [field]
