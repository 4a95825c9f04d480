"""The host's real load, as a heartbeat reports it: CPU percent, memory and disk in use.

Measuring never blocks the event loop: CPU percent is psutil's non-blocking form, the share of
CPU time used since the previous call (so the first call primes it, in the constructor).
Memory in use is `total - available` (psutil's recommended measure: it leaves out caches the
kernel can drop at once, unlike `used`, whose meaning differs per platform). Disk in use is
that of the file system holding `disk_path`. Values are clamped to what the controller accepts
(cpu 0-100, sizes >= 0): one odd reading must never get the heartbeat stream rejected."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil
from automator67.v1 import heartbeat_pb2

GIB = 1024**3


class _Memory(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def available(self) -> int: ...


class _Disk(Protocol):
    @property
    def used(self) -> int: ...


@dataclass(frozen=True)
class Probes:
    """Where readings come from; the defaults are psutil's. Tests inject fakes."""

    cpu_percent: Callable[[], float] = lambda: psutil.cpu_percent(interval=None)
    memory: Callable[[], _Memory] = psutil.virtual_memory
    disk: Callable[[str], _Disk] = psutil.disk_usage


class HostLoad:
    """Samples the host's load. `sample()` is cheap (a few syscalls) and never sleeps."""

    def __init__(self, disk_path: str = "/", probes: Probes | None = None) -> None:
        self._disk_path = disk_path
        self._probes = probes or Probes()
        self._probes.cpu_percent()  # primes the CPU-time baseline; this first reading means nothing

    def sample(self) -> heartbeat_pb2.NodeLoad:
        memory = self._probes.memory()
        disk = self._probes.disk(self._disk_path)
        return heartbeat_pb2.NodeLoad(
            cpu_percent=_clamp(self._probes.cpu_percent(), 0.0, 100.0),
            memory_used_gb=_clamp((memory.total - memory.available) / GIB, 0.0, math.inf),
            disk_used_gb=_clamp(disk.used / GIB, 0.0, math.inf),
        )


def _clamp(value: float, low: float, high: float) -> float:
    if not math.isfinite(value):
        return low
    return min(high, max(low, value))
