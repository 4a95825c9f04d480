"""The host's load as a heartbeat reports it: measured without blocking, clamped to what the
controller accepts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.agent.load import GIB, HostLoad, Probes


@dataclass(frozen=True)
class Memory:
    total: int
    available: int


@dataclass(frozen=True)
class Disk:
    used: int


def probes(cpu: Iterator[float], memory: Memory, disk: Disk) -> Probes:
    return Probes(cpu_percent=lambda: next(cpu), memory=lambda: memory, disk=lambda path: disk)


def test_a_sample_reports_cpu_memory_in_use_and_disk_in_use() -> None:
    fake = probes(
        iter([0.0, 37.5]),
        Memory(total=16 * GIB, available=12 * GIB),
        Disk(used=40 * GIB),
    )

    load = HostLoad(probes=fake).sample()

    assert (load.cpu_percent, load.memory_used_gb, load.disk_used_gb) == (37.5, 4.0, 40.0)


def test_the_first_cpu_reading_is_taken_at_start_and_discarded() -> None:
    readings: list[float] = []

    def cpu() -> float:
        readings.append(99.0 if not readings else 5.0)
        return readings[-1]

    fake = Probes(cpu_percent=cpu, memory=lambda: Memory(GIB, GIB), disk=lambda path: Disk(0))
    host = HostLoad(probes=fake)

    assert host.sample().cpu_percent == 5.0
    assert len(readings) == 2


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        pytest.param(100.4, 100.0, id="above 100 percent"),
        pytest.param(-0.1, 0.0, id="below zero"),
        pytest.param(math.nan, 0.0, id="not a number"),
    ],
)
def test_odd_cpu_readings_are_clamped_so_the_stream_is_never_rejected(
    cpu: float, expected: float
) -> None:
    fake = probes(iter([0.0, cpu]), Memory(GIB, GIB), Disk(0))

    assert HostLoad(probes=fake).sample().cpu_percent == expected


def test_memory_in_use_is_never_negative() -> None:
    fake = probes(iter([0.0, 1.0]), Memory(total=GIB, available=2 * GIB), Disk(0))

    assert HostLoad(probes=fake).sample().memory_used_gb == 0.0


def test_the_disk_of_the_given_path_is_measured() -> None:
    asked: list[str] = []

    def disk(path: str) -> Disk:
        asked.append(path)
        return Disk(GIB)

    fake = Probes(cpu_percent=lambda: 0.0, memory=lambda: Memory(GIB, GIB), disk=disk)
    HostLoad("/var/lib", probes=fake).sample()

    assert asked == ["/var/lib"]


def test_this_hosts_real_load_is_within_the_accepted_ranges() -> None:
    load = HostLoad().sample()

    assert 0.0 <= load.cpu_percent <= 100.0
    assert load.memory_used_gb > 0.0
    assert load.disk_used_gb > 0.0
