"""One heartbeat stream of the agent, from `SessionStart` to its end, and why it ended.

Two tasks share the stream: this loop writes a beat at every slot of a drift-free schedule, and
a reader takes what the controller sends (acks, Reconnect, Assignments, kinds added later).
Assignments go to the agent's workloads; every beat carries their reports. The stream ends
when the agent stops (it half-closes the stream, so the controller sees a clean end), when the
controller asks for a reconnect, when the stream fails, or when too many beats go unacked (a
connection that swallows data without failing; keepalive would find it only much later)."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc
from automator67.errors import ApiError
from automator67.v1 import heartbeat_pb2 as hb

log = logging.getLogger("controller.agent")

MIN_INTERVAL_S = 0.05  # the controller's own floor; guards this loop against a zero interval
MAX_UNACKED_BEATS = 3
CLOSE_TIMEOUT_S = 5.0


class BeatStream(Protocol):
    """What the agent needs of a heartbeat stream: the SDK's `automator67.agent.HeartbeatSession`,
    or a fake in tests. The contract is HeartbeatSession's."""

    session_id: str
    interval_s: float

    @property
    def sequence(self) -> int: ...

    async def open(self) -> BeatStream: ...

    async def beat(
        self, load: hb.NodeLoad | None = None, replicas: Iterable[hb.ReplicaReport] = ()
    ) -> int: ...

    async def receive(self) -> hb.HeartbeatResponse | None: ...

    async def close(self, timeout_s: float = 5.0) -> grpc.StatusCode: ...

    def cancel(self) -> None: ...


class Assignee(Protocol):
    """What a session needs of `controller.agent.workloads.Workloads` (or of a fake in tests);
    the contract is Workloads'."""

    def assign(self, assignments: hb.Assignments) -> None: ...

    def reports(self) -> list[hb.ReplicaReport]: ...


class EndKind(enum.Enum):
    STOPPED = "stopped"  # the agent is stopping; the stream was closed cleanly
    RECONNECT = "reconnect"  # the controller asked: reconnect at once
    NODE_GONE = "node gone"  # NOT_FOUND: the node was deleted; resolve it again
    BROKEN = "broken"  # anything else: reconnect after backoff


@dataclass(frozen=True)
class SessionEnd:
    kind: EndKind
    reason: str
    acked: int = 0  # beats the controller acknowledged on this stream
    # The controller was overloaded and named when to retry (`retry_after`): wait at least that.
    retry_after_s: float = 0.0


def end_of_error(error: ApiError, acked: int = 0) -> SessionEnd:
    """How a stream that failed with `error` ended."""
    kind = EndKind.NODE_GONE if error.code is grpc.StatusCode.NOT_FOUND else EndKind.BROKEN
    return SessionEnd(kind, f"{error.code.name}: {error.message}", acked, retry_after(error))


def retry_after(error: ApiError) -> float:
    """The delay the controller asked for in a RESOURCE_EXHAUSTED refusal (its ErrorInfo's
    `retry_after_ms`, as admission sets it: controller/api/admission.py), in seconds; 0 if none
    or not a number."""
    if error.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return 0.0
    try:
        milliseconds = float(error.metadata.get("retry_after_ms", "0"))
    except ValueError:
        return 0.0
    # A hint is bounded: a controller cannot park an agent for more than ten minutes.
    return (
        min(600.0, milliseconds / 1000) if math.isfinite(milliseconds) and milliseconds > 0 else 0.0
    )


class BeatSchedule:
    """Beat k is due at `start + k * interval_s` on the monotonic clock, whatever each beat
    cost, so beats do not drift. After a stall (a suspended process, a blocked loop) the next
    beat goes out at once and the slots missed before it are skipped: the agent never sends a
    burst to catch up, and keeps its phase."""

    def __init__(self, start: float, interval_s: float) -> None:
        self.interval_s = max(interval_s, MIN_INTERVAL_S)
        self._start = start
        self._slot = 0

    @property
    def due(self) -> float:
        return self._start + self._slot * self.interval_s

    def advance(self, now: float) -> int:
        """Moves to the next slot, or to the latest slot already due at `now` if that is
        later; returns how many slots were skipped."""
        following = self._slot + 1
        self._slot = max(following, math.floor((now - self._start) / self.interval_s))
        return self._slot - following


class _Reader:
    """Reads the controller's messages until the stream ends; the result says how."""

    def __init__(self, session: BeatStream, workloads: Assignee | None) -> None:
        self.acked = 0
        self.last_acked = 0
        self._session = session
        self._workloads = workloads

    async def run(self) -> SessionEnd:
        try:
            while (response := await self._session.receive()) is not None:
                kind = response.WhichOneof("kind")
                if kind == "ack":
                    self.acked += 1
                    self.last_acked = max(self.last_acked, response.ack.sequence)
                elif kind == "reconnect":
                    return SessionEnd(EndKind.RECONNECT, response.reconnect.reason, self.acked)
                elif kind == "assignments" and self._workloads is not None:
                    self._workloads.assign(response.assignments)
                else:  # a kind this agent does not know yet; newer controllers may send it
                    log.debug("ignored a message", extra={"fields": {"kind": kind}})
        except ApiError as error:
            return end_of_error(error, self.acked)
        return SessionEnd(EndKind.BROKEN, "the controller ended the stream", self.acked)


async def _reason_of_end(reading: asyncio.Future[SessionEnd], acked: int) -> SessionEnd:
    """The reader's verdict on a stream whose write failed; it comes at once, as the call is
    over, but a stuck read must never stall the agent."""
    try:
        return await asyncio.wait_for(asyncio.shield(reading), CLOSE_TIMEOUT_S)
    except TimeoutError:
        return SessionEnd(EndKind.BROKEN, "the stream failed without a status", acked)


async def run_session(
    session: BeatStream,
    load: Callable[[], hb.NodeLoad],
    stopping: asyncio.Event,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    workloads: Assignee | None = None,
) -> SessionEnd:
    """Beats on the open `session` until it ends; returns why. On `stopping` it closes the
    stream cleanly; after a Reconnect it closes it too; an unresponsive stream is cancelled.
    Assignments received go to `workloads`, whose reports every beat carries."""
    reader = _Reader(session, workloads)
    reading = asyncio.ensure_future(reader.run())
    stop_wait = asyncio.ensure_future(stopping.wait())
    schedule = BeatSchedule(monotonic(), session.interval_s)
    try:
        while True:
            delay = schedule.due - monotonic()
            if delay > 0:
                await asyncio.wait(
                    (reading, stop_wait), timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
            if stop_wait.done():
                await session.close(CLOSE_TIMEOUT_S)
                return SessionEnd(EndKind.STOPPED, "stopping", reader.acked)
            if reading.done():
                await session.close(CLOSE_TIMEOUT_S)
                return reading.result()
            if session.sequence - reader.last_acked >= MAX_UNACKED_BEATS:
                session.cancel()
                reason = f"no ack for {MAX_UNACKED_BEATS} beats"
                return SessionEnd(EndKind.BROKEN, reason, reader.acked)
            try:
                await session.beat(load(), workloads.reports() if workloads is not None else ())
            except (ApiError, asyncio.InvalidStateError):
                # The stream ended under the write; the reader has (or soon has) the reason.
                end = await _reason_of_end(reading, reader.acked)
                await session.close(CLOSE_TIMEOUT_S)
                return end
            skipped = schedule.advance(monotonic())
            if skipped:
                log.warning("beats skipped", extra={"fields": {"count": skipped}})
    finally:
        stop_wait.cancel()
        if not reading.done():
            reading.cancel()
        await asyncio.gather(reading, stop_wait, return_exceptions=True)
