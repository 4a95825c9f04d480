"""What a run of a stream fleet is told and what it measured, shared by both load clients: the
Python one (streams.py) and the compiled one (cppclient.py), so that neither imports the other
for its types."""

from __future__ import annotations

import array
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import common


@dataclass(frozen=True)
class Settings:
    mode: str = "paced"  # or "closed"
    interval_s: float = 10.0  # paced: each stream beats this often
    duration_s: float = 20.0  # the measured window
    warmup_s: float = 5.0  # after every stream is open, before the window
    workers: int = 3  # client processes
    streams_per_connection: int = 50
    open_concurrency: int = 100  # stream opens in flight per client process
    open_timeout_s: float = 300.0  # streams not open by then are left out (and reported)
    grace_s: float = 2.0  # after the window, for the acks of its last beats
    client: str = "python"  # or "cpp": the compiled client (cppclient.py), one process
    cpp_threads: int = 2  # the compiled client's threads (one completion queue each)
    cpp_streams_per_connection: int = 500


@dataclass
class FleetRun:
    """What the parent measured around one run of the fleet."""

    streams_open: int = 0
    open_s: float = 0.0
    beats_per_s: float = 0.0
    ack_p50_ms: float = float("nan")
    ack_p99_ms: float = float("nan")
    ack_p999_ms: float = float("nan")
    lost_beats: int = 0
    errors: int = 0
    reconnects: int = 0
    server_cpu_pct: float = 0.0
    server_cpu_us_per_beat: float = float("nan")
    server_rss_mb: float = 0.0
    rss_per_stream_kb: float = float("nan")
    client_cpu_pct: float = 0.0
    client_cpu_us_per_beat: float = float("nan")
    # Beats acked at all, in the window or not (the compiled client counts them; -1: not
    # counted): a server far behind acks none in the window but may still ack.
    acked_total: int = -1
    window_wall: tuple[float, float] = (0.0, 0.0)  # the window in wall-clock seconds
    error_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self).items()}


def summarize(
    run: FleetRun,
    results: Sequence[dict[str, Any]],
    latencies: array.array[float],
    settings: Settings,
    cpu: tuple[float, float],
    baseline_rss_mb: float,
) -> FleetRun:
    """Fills `run` from the client processes' counts and latencies (seconds) and the server's
    and clients' CPU seconds in the window."""
    server_cpu, client_cpu = cpu
    for counts in results:
        run.errors += counts["errors"]
        run.reconnects += counts["reconnects"]
        run.lost_beats += counts["sent_in_window"] - counts["acked_in_window"]
        for kind, n in counts["error_kinds"].items():
            run.error_kinds[kind] = run.error_kinds.get(kind, 0) + n
    held = sum(counts["open_at_end"] for counts in results)
    run.streams_open = min(run.streams_open, held)
    ordered = sorted(latencies)
    beats = len(ordered)
    run.beats_per_s = beats / settings.duration_s
    run.ack_p50_ms = common.percentile(ordered, 0.5) * 1000
    run.ack_p99_ms = common.percentile(ordered, 0.99) * 1000
    run.ack_p999_ms = common.percentile(ordered, 0.999) * 1000
    run.server_cpu_pct = server_cpu / settings.duration_s * 100
    run.client_cpu_pct = client_cpu / settings.duration_s * 100
    if beats:
        run.server_cpu_us_per_beat = server_cpu / beats * 1e6
        run.client_cpu_us_per_beat = client_cpu / beats * 1e6
    if held:
        run.rss_per_stream_kb = (run.server_rss_mb - baseline_rss_mb) * 1024 / held
    return run


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
