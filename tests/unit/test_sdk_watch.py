"""The SDK's resuming watches against scripted streams: where each broken stream resumes, the
RESET made when a state was cut short, a history reset (REVISION_AHEAD), errors that do not
resume, and cancelling. No server and no sleeps (every backoff delay is zero)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from automator67 import _methods
from automator67.errors import ApiError, PermissionDeniedError
from automator67.retry import Retry
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from automator67.watch import AsyncWatch, Watch, WatchCursor
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

ADDED, CHANGED = ns.NODE_EVENT_TYPE_ADDED, ns.NODE_EVENT_TYPE_CHANGED
SYNCED, RESET, DELETED = (
    ns.NODE_EVENT_TYPE_SYNCED,
    ns.NODE_EVENT_TYPE_RESET,
    ns.NODE_EVENT_TYPE_DELETED,
)
RESUME = Retry(initial_s=0.001, maximum_s=0.001, deadline_s=None, max_attempts=None)
Script = list[ns.WatchNodesResponse | grpc.RpcError]


def ev(kind: ns.NodeEventType.ValueType, revision: int, node_id: str = "") -> ns.WatchNodesResponse:
    return ns.WatchNodesResponse(type=kind, revision=revision, node=node_pb2.Node(id=node_id))


def broken(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, reason: str = "") -> grpc.RpcError:
    status = status_pb2.Status(code=code.value[0], message="broken")
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="automator67.io"))
        status.details.append(packed)
    trailers = aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return aio.AioRpcError(code, aio.Metadata(), trailers, "broken", None)


class Streams:
    """One scripted stream per open; notes the start revision of each."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.starts: list[int] = []
        self.cancelled = 0

    def start(self, revision: int) -> Any:
        self.starts.append(revision)
        return _Call(self, self.scripts.pop(0))


class _Call:
    def __init__(self, streams: Streams, script: Script) -> None:
        self._streams = streams
        self._items = iter(script)
        self._cancelled = False
        self._wake: asyncio.Event | None = None

    def __next__(self) -> ns.WatchNodesResponse:
        item = next(self._items)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def __iter__(self) -> Iterator[ns.WatchNodesResponse]:
        return self

    def __aiter__(self) -> AsyncIterator[ns.WatchNodesResponse]:
        return self._async()

    async def _async(self) -> AsyncIterator[ns.WatchNodesResponse]:
        for item in self._items:
            await asyncio.sleep(0)
            if isinstance(item, grpc.RpcError):
                raise item
            yield item
        # An open, quiet stream, until cancelled: then the read raises CancelledError, as a
        # grpc.aio call's does.
        self._wake = asyncio.Event()
        if not self._cancelled:
            await self._wake.wait()
        raise asyncio.CancelledError

    def cancel(self) -> bool:
        self._streams.cancelled += 1
        self._cancelled = True
        if self._wake is not None:
            self._wake.set()
        return True


def sync_watch(streams: Streams, start_revision: int = 0) -> Watch[ns.WatchNodesResponse]:
    return Watch(streams.start, start_revision, _methods.NODE_EVENTS, _methods.node_reset, RESUME)


def take(watch: Watch[ns.WatchNodesResponse], n: int) -> list[tuple[int, int, str]]:
    return [(e.type, e.revision, e.node.id) for _, e in zip(range(n), watch, strict=False)]


def test_a_broken_live_stream_resumes_from_the_last_revision_seen() -> None:
    streams = Streams(
        [ev(ADDED, 3, "a"), ev(ADDED, 5, "b"), ev(SYNCED, 7), ev(CHANGED, 8, "a"), broken()],
        [ev(DELETED, 9, "b"), ev(SYNCED, 9), ev(CHANGED, 10, "a")],
    )
    watch = sync_watch(streams)
    assert take(watch, 7) == [
        (ADDED, 3, "a"),
        (ADDED, 5, "b"),
        (SYNCED, 7, ""),
        (CHANGED, 8, "a"),
        (DELETED, 9, "b"),
        (SYNCED, 9, ""),
        (CHANGED, 10, "a"),
    ]
    assert streams.starts == [0, 8]
    assert watch.revision == 10


def test_a_stream_cut_during_the_state_starts_over_after_a_reset() -> None:
    streams = Streams(
        [ev(ADDED, 5, "b"), broken()],  # revision 5 is no place to resume from
        [ev(ADDED, 3, "a"), ev(ADDED, 5, "b"), ev(SYNCED, 7)],
    )
    watch = sync_watch(streams)
    assert take(watch, 5) == [
        (ADDED, 5, "b"),
        (RESET, 0, ""),  # made by the SDK: forget what came before
        (ADDED, 3, "a"),
        (ADDED, 5, "b"),
        (SYNCED, 7, ""),
    ]
    assert streams.starts == [0, 0]


def test_a_stream_cut_before_any_event_simply_starts_again() -> None:
    streams = Streams(
        [broken()],
        [ev(SYNCED, 4)],
    )
    assert take(sync_watch(streams), 1) == [(SYNCED, 4, "")]
    assert streams.starts == [0, 0]


def test_a_controller_reset_during_the_stream_is_a_state_again() -> None:
    cursor = WatchCursor(10, _methods.NODE_EVENTS)
    cursor.seen(CHANGED, 11)
    cursor.seen(RESET, 50)
    cursor.seen(ADDED, 20)
    assert cursor.resume() == (0, True)
    cursor.seen(SYNCED, 50)
    cursor.seen(ADDED, 51)  # a live registration after SYNCED is a change like any other
    assert cursor.resume() == (51, False)


def test_a_resume_refused_as_ahead_of_the_store_starts_over() -> None:
    streams = Streams(
        [ev(SYNCED, 7), broken()],
        [broken(grpc.StatusCode.INVALID_ARGUMENT, "REVISION_AHEAD")],
        [ev(ADDED, 1, "x"), ev(SYNCED, 1)],
    )
    assert take(sync_watch(streams), 4) == [
        (SYNCED, 7, ""),
        (RESET, 0, ""),
        (ADDED, 1, "x"),
        (SYNCED, 1, ""),
    ]
    assert streams.starts == [0, 7, 0]


def test_a_start_revision_resumes_and_errors_that_cannot_resume_are_raised_typed() -> None:
    streams = Streams([ev(CHANGED, 12, "a"), broken(grpc.StatusCode.PERMISSION_DENIED)])
    watch = sync_watch(streams, start_revision=11)
    assert take(watch, 1) == [(CHANGED, 12, "a")]
    with pytest.raises(PermissionDeniedError):
        next(watch)
    assert streams.starts == [11]


def test_a_watch_gives_up_when_its_policy_says_so() -> None:
    streams = Streams([broken()], [broken()], [broken()])
    watch = Watch(
        streams.start, 0, _methods.NODE_EVENTS, _methods.node_reset, Retry(max_attempts=2)
    )
    with pytest.raises(ApiError) as gave_up:
        next(watch)
    assert gave_up.value.code is grpc.StatusCode.UNAVAILABLE
    assert streams.starts == [0, 0]


def test_closing_a_sync_watch_ends_the_iteration() -> None:
    streams = Streams([ev(SYNCED, 1), ev(CHANGED, 2, "a")])
    with sync_watch(streams) as watch:
        assert next(watch).type == SYNCED
        watch.close()
        assert list(watch) == []
    assert streams.cancelled == 1


async def test_an_async_watch_resumes_and_cancel_ends_a_waiting_read() -> None:
    streams = Streams(
        [ev(ADDED, 2, "a"), ev(SYNCED, 2), ev(CHANGED, 3, "a"), broken()],
        [ev(CHANGED, 4, "a")],
    )
    watch = AsyncWatch(streams.start, 0, _methods.NODE_EVENTS, _methods.node_reset, RESUME)
    seen = []
    async for event in watch:
        seen.append((event.type, event.revision))
        if len(seen) == 4:
            break
    assert seen == [(ADDED, 2), (SYNCED, 2), (CHANGED, 3), (CHANGED, 4)]
    assert streams.starts == [0, 3]

    waiting = asyncio.ensure_future(watch.read())  # the stream is open and quiet
    await asyncio.sleep(0.01)
    watch.cancel()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


def test_a_close_while_the_stream_opens_cancels_the_stream_it_opened() -> None:
    # close() from another thread finds no call yet (start has not returned): the watch cancels
    # the one it gets, so that no stream outlives it.
    streams = Streams([ev(SYNCED, 1)])
    watch = sync_watch(streams)

    def start(revision: int) -> Any:
        call = streams.start(revision)
        watch.close()
        return call

    watch._start = start
    assert list(watch) == []
    assert streams.cancelled == 1


def test_a_stream_that_ends_after_a_close_ends_the_watch_without_resuming(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch: Watch[ns.WatchNodesResponse]
    starts: list[int] = []

    class EndsOnClose:  # the close (from another thread) lands while next() waits
        def __next__(self) -> ns.WatchNodesResponse:
            watch.close()
            raise StopIteration

        def cancel(self) -> bool:
            return True

    def start(revision: int) -> Any:
        starts.append(revision)
        return EndsOnClose()

    watch = Watch(start, 0, _methods.NODE_EVENTS, _methods.node_reset, RESUME)
    with caplog.at_level("WARNING", logger="automator67"):
        assert list(watch) == []
    assert starts == [0] and not caplog.records
