"""One heartbeat stream of the agent, against a scripted fake stream: why it ends, and what the
agent does to the stream on the way out. No sockets, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import grpc
import pytest
from automator67.errors import ApiError, error_class
from automator67.v1 import heartbeat_pb2 as hb

from controller.agent.session import EndKind, run_session

OnBeat = Callable[["FakeStream", int], None]


def rpc_error(code: grpc.StatusCode, details: str = "") -> ApiError:
    """The typed error the SDK raises for a call that ended with `code`."""
    return error_class(code)(details, code=code)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStream:
    """A heartbeat stream whose controller side is scripted: `on_beat(stream, sequence)` runs
    after each beat is sent. Each beat moves `clock` (if given) by one interval."""

    def __init__(
        self,
        *,
        on_beat: OnBeat | None = None,
        interval_s: float = 3600.0,
        clock: FakeClock | None = None,
        open_error: BaseException | None = None,
        session_id: str = "session-1",
    ) -> None:
        self.session_id = session_id
        self.interval_s = interval_s
        self.beats: list[hb.Beat] = []
        self.opened = self.closed = self.cancelled = False
        self.break_at_next_beat: ApiError | None = None
        self._on_beat = on_beat
        self._clock = clock
        self._open_error = open_error
        self._incoming: asyncio.Queue[hb.HeartbeatResponse | BaseException | None] = asyncio.Queue()

    @property
    def sequence(self) -> int:
        return len(self.beats)

    async def open(self) -> FakeStream:
        self.opened = True
        if self._open_error is not None:
            raise self._open_error
        return self

    async def beat(
        self, load: hb.NodeLoad | None = None, replicas: Iterable[hb.ReplicaReport] = ()
    ) -> int:
        if self.break_at_next_beat is not None:
            # The stream ended while the beat was written: the write fails, the read says why.
            self.end(self.break_at_next_beat)
            raise asyncio.InvalidStateError("RPC already finished.")
        self.beats.append(hb.Beat(sequence=self.sequence + 1, load=load, replicas=replicas))
        if self._clock is not None:
            self._clock.now += self.interval_s
        if self._on_beat is not None:
            self._on_beat(self, self.sequence)
        for _ in range(3):  # yields (not sleeps): the reader and the stop waiter take their turn
            await asyncio.sleep(0)
        return self.sequence

    async def receive(self) -> hb.HeartbeatResponse | None:
        item = await self._incoming.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self, timeout_s: float = 5.0) -> grpc.StatusCode:
        self.closed = True
        self._incoming.put_nowait(None)
        return grpc.StatusCode.OK

    def cancel(self) -> None:
        self.cancelled = True
        self._incoming.put_nowait(rpc_error(grpc.StatusCode.CANCELLED))

    # The controller's side.

    def send(self, response: hb.HeartbeatResponse) -> None:
        self._incoming.put_nowait(response)

    def ack(self, sequence: int) -> None:
        self.send(hb.HeartbeatResponse(ack=hb.BeatAck(sequence=sequence)))

    def reconnect(self, reason: str) -> None:
        self.send(hb.HeartbeatResponse(reconnect=hb.Reconnect(reason=reason)))

    def end(self, error: BaseException | None = None) -> None:
        self._incoming.put_nowait(error)


def load() -> hb.NodeLoad:
    return hb.NodeLoad(cpu_percent=12.5, memory_used_gb=1.0, disk_used_gb=2.0)


async def test_the_first_beat_goes_out_at_once_and_a_stop_closes_the_stream_cleanly() -> None:
    stopping = asyncio.Event()
    stream = FakeStream(on_beat=lambda stream, sequence: stopping.set())

    end = await run_session(stream, load, stopping)

    assert end.kind is EndKind.STOPPED
    assert [b.sequence for b in stream.beats] == [1]
    assert stream.beats[0].load == load()
    assert stream.closed and not stream.cancelled


async def test_beats_are_acked_and_numbered_in_order() -> None:
    stopping = asyncio.Event()
    clock = FakeClock()

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        if sequence == 5:
            stopping.set()

    stream = FakeStream(on_beat=on_beat, interval_s=5.0, clock=clock)

    end = await run_session(stream, load, stopping, monotonic=clock)

    assert end.kind is EndKind.STOPPED
    assert [b.sequence for b in stream.beats] == [1, 2, 3, 4, 5]
    assert end.acked == 5


async def test_a_reconnect_from_the_controller_ends_the_stream_for_an_immediate_reconnect() -> None:
    stream = FakeStream(
        on_beat=lambda stream, sequence: stream.reconnect("controller shutting down")
    )

    end = await run_session(stream, load, asyncio.Event())

    assert (end.kind, end.reason) == (EndKind.RECONNECT, "controller shutting down")
    assert stream.closed and not stream.cancelled


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        pytest.param(
            rpc_error(grpc.StatusCode.NOT_FOUND, "node 'n' not found"),
            EndKind.NODE_GONE,
            "NOT_FOUND: node 'n' not found",
            id="the node was deleted",
        ),
        pytest.param(
            rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"),
            EndKind.BROKEN,
            "UNAVAILABLE: connection reset",
            id="the connection broke",
        ),
        pytest.param(
            rpc_error(grpc.StatusCode.ABORTED, "replaced by a newer stream"),
            EndKind.BROKEN,
            "ABORTED: replaced by a newer stream",
            id="another stream of the node replaced it",
        ),
        pytest.param(
            None, EndKind.BROKEN, "the controller ended the stream", id="it ended without a word"
        ),
    ],
)
async def test_how_a_stream_the_controller_ended_is_judged(
    error: BaseException | None, kind: EndKind, reason: str
) -> None:
    stream = FakeStream(on_beat=lambda stream, sequence: stream.end(error))

    end = await run_session(stream, load, asyncio.Event())

    assert (end.kind, end.reason) == (kind, reason)


async def test_a_stream_that_stops_acking_is_cancelled_after_three_beats() -> None:
    clock = FakeClock()
    stream = FakeStream(interval_s=5.0, clock=clock)

    end = await run_session(stream, load, asyncio.Event(), monotonic=clock)

    assert (end.kind, end.reason) == (EndKind.BROKEN, "no ack for 3 beats")
    assert len(stream.beats) == 3
    assert stream.cancelled


async def test_a_beat_written_as_the_stream_ends_gets_the_readers_reason() -> None:
    clock = FakeClock()

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.ack(sequence)
        stream.break_at_next_beat = rpc_error(grpc.StatusCode.UNAVAILABLE, "goaway")

    stream = FakeStream(on_beat=on_beat, interval_s=5.0, clock=clock)

    end = await run_session(stream, load, asyncio.Event(), monotonic=clock)

    assert (end.kind, end.reason, end.acked) == (EndKind.BROKEN, "UNAVAILABLE: goaway", 1)


async def test_messages_of_kinds_this_agent_does_not_know_are_ignored() -> None:
    stopping = asyncio.Event()

    def on_beat(stream: FakeStream, sequence: int) -> None:
        stream.send(hb.HeartbeatResponse())  # no kind set: what an unknown kind parses to
        stream.ack(sequence)
        stopping.set()

    stream = FakeStream(on_beat=on_beat)

    end = await run_session(stream, load, stopping)

    assert end.kind is EndKind.STOPPED
