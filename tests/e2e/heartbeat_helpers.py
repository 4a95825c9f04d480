"""Agents and watchers for the heartbeat and WatchNodes end-to-end tests.

Every response stream is read by a background task into an `Inbox`, which records each message
with the (monotonic) time it arrived. Tests then wait for the message they expect, with a
timeout, instead of sleeping; a wait that times out fails the test without cancelling the call.
`time.monotonic()` is the clock the controller judges liveness by, so arrival times here and
deadlines there are on one clock."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

import grpc
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as pb
from grpc import aio
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .controller_process import ControllerProcess, LogLine
from .seed import seed_node

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

# The longest a test waits for a message it expects. Generous: a loaded 2-core machine runs two
# controllers and two test processes; a healthy run waits milliseconds.
WAIT_S = 10.0

M = TypeVar("M")
NodeStatus: TypeAlias = node_pb2.NodeStatus.ValueType

READY = node_pb2.NODE_STATUS_READY
PENDING = node_pb2.NODE_STATUS_PENDING
SUSPECT = node_pb2.NODE_STATUS_SUSPECT
OFFLINE = node_pb2.NODE_STATUS_OFFLINE
ADDED = pb.NODE_EVENT_TYPE_ADDED
CHANGED = pb.NODE_EVENT_TYPE_CHANGED
STATUS_CHANGED = pb.NODE_EVENT_TYPE_STATUS_CHANGED
DELETED = pb.NODE_EVENT_TYPE_DELETED
SYNCED = pb.NODE_EVENT_TYPE_SYNCED
RESET = pb.NODE_EVENT_TYPE_RESET


@dataclass(frozen=True)
class Timing:
    """The liveness settings of a controller under test, in seconds."""

    interval_s: float
    suspect_after_s: float
    offline_after_s: float
    failover_grace_s: float
    # Short, so that a test that fails with a stream still open does not hold the teardown.
    shutdown_grace_s: float = 1.0

    @property
    def args(self) -> list[str]:
        """The `serve` flags that set these."""
        return [
            *("--heartbeat-interval-s", f"{self.interval_s:g}"),
            *("--suspect-after-s", f"{self.suspect_after_s:g}"),
            *("--offline-after-s", f"{self.offline_after_s:g}"),
            *("--failover-grace-s", f"{self.failover_grace_s:g}"),
            *("--shutdown-grace-s", f"{self.shutdown_grace_s:g}"),
        ]


# Every transition within about a second, for tests that watch the clock move a node.
FAST = Timing(interval_s=0.2, suspect_after_s=0.3, offline_after_s=1.0, failover_grace_s=2.0)
# No deadline passes during a test, so only stream events change a status: a SUSPECT seen is
# caused by what the test did, never by a loaded machine delaying a beat. (The rate limit still
# follows the 0.2 s interval: a burst of 10, then 20 beats per second.)
STEADY = Timing(interval_s=0.2, suspect_after_s=3.0, offline_after_s=6.0, failover_grace_s=6.0)


class ResponseStream(Protocol):
    """What an Inbox needs of a grpc.aio streaming call."""

    async def read(self) -> object: ...

    def cancel(self) -> bool: ...

    async def code(self) -> grpc.StatusCode: ...

    async def details(self) -> str: ...


class Inbox(Generic[M]):
    """Reads `call` to its end in a background task. `items[i]` arrived at `arrivals[i]`; when
    the call has ended, `ended` is set and `error` holds its error, if it failed."""

    def __init__(self, call: ResponseStream, kind: type[M]) -> None:
        self.call = call
        self.items: list[M] = []
        self.arrivals: list[float] = []
        self.ended = False
        self.error: aio.AioRpcError | None = None
        self._kind = kind
        self._news = asyncio.Event()  # replaced on every change; waiters wait on the current one
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                item = await self.call.read()
                if item is EOF:
                    return
                assert isinstance(item, self._kind), item
                self.arrivals.append(time.monotonic())
                self.items.append(item)
                self._notify()
        except aio.AioRpcError as error:
            self.error = error
        finally:
            self.ended = True
            self._notify()

    def _notify(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def wait_until(self, ready: Callable[[], bool], what: str, wait_s: float) -> None:
        """Returns once `ready()` holds; fails the test after `wait_s` seconds."""
        try:
            async with asyncio.timeout(wait_s):
                while not ready():
                    await self._news.wait()
        except TimeoutError:
            raise AssertionError(
                f"waited {wait_s}s for {what}; received {self.items}; "
                f"ended={self.ended} error={self.error!r}"
            ) from None

    async def first(
        self, predicate: Callable[[M], bool], what: str, *, start: int = 0, wait_s: float = WAIT_S
    ) -> int:
        """The index of the first item from `start` on that matches; fails the test if the
        stream ends, or `wait_s` passes, without one."""
        found: list[int] = []
        cursor = start  # items before it are known not to match

        def ready() -> bool:
            nonlocal cursor
            while cursor < len(self.items):
                if predicate(self.items[cursor]):
                    found.append(cursor)
                    return True
                cursor += 1
            return self.ended

        await self.wait_until(ready, what, wait_s)
        if not found:
            raise AssertionError(f"the stream ended without {what}: {self.items} {self.error!r}")
        return found[0]

    async def finished(self, wait_s: float = WAIT_S) -> grpc.StatusCode:
        """The call's status code, once it has ended."""
        await self.wait_until(lambda: self.ended, "the end of the stream", wait_s)
        return await asyncio.wait_for(self.call.code(), wait_s)

    async def close(self) -> None:
        """Cancels the call and waits for the reader (teardown; idempotent)."""
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def hello_request(node_id: str) -> hb.HeartbeatRequest:
    hello = hb.AgentHello(node_id=node_id, agent_version="0.1.0-e2e", drivers=["simulated"])
    return hb.HeartbeatRequest(hello=hello)


def beat_request(sequence: int, **fields: Any) -> hb.HeartbeatRequest:
    return hb.HeartbeatRequest(beat=hb.Beat(sequence=sequence, **fields))


def kind_of(response: hb.HeartbeatResponse) -> str | None:
    return response.WhichOneof("kind")


class Agent:
    """One heartbeat stream, as an agent drives it: `hello`, then beats, one by one
    (`beat()`) or in the background (`keep_beating()`); never both at once."""

    def __init__(self, stub: AgentServiceAsyncStub) -> None:
        self.call = stub.Heartbeat(None)  # requests are written one by one
        self.inbox = Inbox(self.call, hb.HeartbeatResponse)
        self.sequence = 0
        self.hello_sent_at = 0.0
        self._beater: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, stub: AgentServiceAsyncStub, node_id: str) -> Agent:
        """A stream that has sent hello and been answered with SessionStart."""
        agent = cls(stub)
        await agent.hello(node_id)
        return agent

    @property
    def messages(self) -> list[hb.HeartbeatResponse]:
        return self.inbox.items

    @property
    def acks(self) -> list[hb.BeatAck]:
        return [m.ack for m in self.messages if kind_of(m) == "ack"]

    async def send(self, request: hb.HeartbeatRequest) -> None:
        await asyncio.wait_for(self.call.write(request), WAIT_S)

    async def hello(self, node_id: str) -> hb.SessionStart:
        self.hello_sent_at = time.monotonic()
        await self.send(hello_request(node_id))
        index = await self.inbox.first(lambda m: True, "the answer to hello")
        answer = self.messages[index]
        assert kind_of(answer) == "session", answer
        return answer.session

    @property
    def session(self) -> hb.SessionStart:
        assert self.messages and kind_of(self.messages[0]) == "session", self.messages
        return self.messages[0].session

    async def beat(self, sequence: int = 0, **fields: Any) -> hb.BeatAck:
        """Sends the next beat (numbered `sequence`, if given) and returns its ack."""
        self.sequence = sequence or self.sequence + 1
        sequence = self.sequence
        await self.send(beat_request(sequence, **fields))
        index = await self.inbox.first(
            lambda m: kind_of(m) == "ack" and m.ack.sequence == sequence, f"the ack of {sequence}"
        )
        return self.messages[index].ack

    def keep_beating(self, period_s: float) -> None:
        """Beats every `period_s` in the background until the stream ends, the controller asks
        for a reconnect, or `stop_beating()`. Acks arrive in `acks`."""
        assert self._beater is None

        async def beat_forever() -> None:
            while not self.call.done() and not self.reconnects:
                self.sequence += 1
                try:
                    await self.call.write(beat_request(self.sequence))
                except (aio.AioRpcError, asyncio.InvalidStateError):
                    return  # the stream ended; its status is the call's
                await asyncio.sleep(period_s)  # the agent's pace, not a wait for state

        self._beater = asyncio.ensure_future(beat_forever())

    async def stop_beating(self) -> None:
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.cancel()
            await asyncio.gather(beater, return_exceptions=True)

    async def more_acks(self, count: int, wait_s: float = WAIT_S) -> None:
        """Waits until `count` more acks than now have arrived."""
        target = len(self.acks) + count
        await self.inbox.wait_until(lambda: len(self.acks) >= target, f"{count} more acks", wait_s)

    @property
    def reconnects(self) -> list[hb.Reconnect]:
        return [m.reconnect for m in self.messages if kind_of(m) == "reconnect"]

    async def close(self) -> grpc.StatusCode:
        """Ends the stream as a well-behaved agent does (half-close) and returns its status."""
        await self.stop_beating()
        await asyncio.wait_for(self.call.done_writing(), WAIT_S)
        return await self.inbox.finished()

    async def ended(self, wait_s: float = WAIT_S) -> grpc.StatusCode:
        """The status the controller ended the stream with, once it has."""
        return await self.inbox.finished(wait_s)

    async def discard(self) -> None:
        """Cancels the stream (teardown, or a killed agent) and stops its tasks."""
        await self.stop_beating()
        await self.inbox.close()


class Watch:
    """One WatchNodes stream. `next()` and `until()` consume its events in order."""

    def __init__(self, stub: NodeServiceAsyncStub, start_revision: int = 0) -> None:
        self.call = stub.WatchNodes(pb.WatchNodesRequest(start_revision=start_revision))
        self.inbox = Inbox(self.call, pb.WatchNodesResponse)
        self.consumed = 0

    async def next(self, what: str = "the next event", wait_s: float = WAIT_S) -> int:
        """Consumes the next event; returns its index in `inbox.items`."""
        index = await self.inbox.first(lambda e: True, what, start=self.consumed, wait_s=wait_s)
        self.consumed = index + 1
        return index

    async def next_event(self, wait_s: float = WAIT_S) -> pb.WatchNodesResponse:
        return self.inbox.items[await self.next(wait_s=wait_s)]

    async def until(
        self,
        predicate: Callable[[pb.WatchNodesResponse], bool],
        what: str,
        wait_s: float = WAIT_S,
    ) -> tuple[pb.WatchNodesResponse, list[pb.WatchNodesResponse]]:
        """Consumes events up to the first that matches; returns it and those before it."""
        start = self.consumed
        index = await self.inbox.first(predicate, what, start=start, wait_s=wait_s)
        self.consumed = index + 1
        return self.inbox.items[index], self.inbox.items[start:index]

    async def status_change(
        self, node_id: str, status: NodeStatus, wait_s: float = WAIT_S
    ) -> tuple[pb.WatchNodesResponse, float]:
        """Consumes events up to the node's STATUS_CHANGED to `status`; returns that event and
        when it arrived. Fails if the node changes to another status first."""
        start = self.consumed
        event, before = await self.until(
            lambda e: is_status_change(e, node_id, status),
            f"{node_id} becoming {node_pb2.NodeStatus.Name(status)}",
            wait_s,
        )
        others = [e for e in before if e.type == STATUS_CHANGED and e.node.id == node_id]
        assert not others, f"{node_id} changed otherwise first: {others}"
        return event, self.inbox.arrivals[start + len(before)]

    async def all_become(
        self, node_ids: Iterable[str], status: NodeStatus, wait_s: float = WAIT_S
    ) -> dict[str, float]:
        """Consumes events until every one of the nodes has changed to `status`, in any order;
        returns when each did."""
        pending = set(node_ids)
        when: dict[str, float] = {}
        cursor = self.consumed
        items, arrivals = self.inbox.items, self.inbox.arrivals

        def ready() -> bool:
            nonlocal cursor
            while pending and cursor < len(items):
                event = items[cursor]
                if event.node.id in pending and is_status_change(event, event.node.id, status):
                    pending.discard(event.node.id)
                    when[event.node.id] = arrivals[cursor]
                cursor += 1
            return not pending or self.inbox.ended

        name = node_pb2.NodeStatus.Name(status)
        await self.inbox.wait_until(ready, f"{sorted(pending)} becoming {name}", wait_s)
        if pending:
            raise AssertionError(f"the stream ended before {sorted(pending)} became {name}")
        self.consumed = cursor
        return when

    async def state(self) -> tuple[dict[str, node_pb2.Node], pb.WatchNodesResponse]:
        """Consumes the opening ADDED events and the SYNCED after them."""
        synced, before = await self.until(lambda e: e.type == SYNCED, "SYNCED")
        assert all(e.type == ADDED for e in before), before
        return {e.node.id: e.node for e in before}, synced

    async def close(self) -> None:
        await self.inbox.close()


class NodeView:
    """What a watcher knows from the events it has read: every node, the revision it has seen,
    and whether it is in the middle of a resync (after RESET, before SYNCED)."""

    def __init__(self) -> None:
        self.nodes: dict[str, node_pb2.Node] = {}
        self.revision = 0
        self.resyncing = False
        self.resets = 0
        self._applied = 0

    def apply(self, events: list[pb.WatchNodesResponse]) -> None:
        """Applies the events it has not applied yet (`events` only ever grows)."""
        for event in events[self._applied :]:
            if event.type == RESET:
                self.nodes.clear()
                self.resyncing = True
                self.resets += 1
            elif event.type == SYNCED:
                self.resyncing = False
            elif event.type == DELETED:
                self.nodes.pop(event.node.id, None)
            else:
                self.nodes[event.node.id] = event.node
            self.revision = max(self.revision, event.revision)
        self._applied = len(events)

    def caught_up(self, revision: int) -> bool:
        return not self.resyncing and self.revision >= revision


def is_status_change(event: pb.WatchNodesResponse, node_id: str, status: NodeStatus) -> bool:
    return event.type == STATUS_CHANGED and event.node.id == node_id and event.node.status == status


async def register_node(stub: NodeServiceAsyncStub, name: str = "") -> node_pb2.Node:
    name = name or uuid.uuid4().hex[:8]
    response = await stub.RegisterNode(pb.RegisterNodeRequest(node=seed_node(labels={"e2e": name})))
    return response.node


async def get_node(stub: NodeServiceAsyncStub, node_id: str) -> node_pb2.Node:
    return (await stub.GetNode(pb.GetNodeRequest(node_id=node_id))).node


async def list_all_nodes(stub: NodeServiceAsyncStub) -> dict[str, node_pb2.Node]:
    """Every node, following page tokens."""
    nodes: dict[str, node_pb2.Node] = {}
    token = ""
    while True:
        page = await stub.ListNodes(pb.ListNodesRequest(page_size=500, page_token=token))
        nodes.update((n.id, n) for n in page.nodes)
        token = page.next_page_token
        if not token:
            return nodes


async def assert_serving(channel: aio.Channel) -> None:
    """The controller answers a health check, and says SERVING."""
    health: Any = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def logged(
    process: ControllerProcess, predicate: Callable[[LogLine], bool], wait_s: float = WAIT_S
) -> LogLine:
    """The first server log line that matches, waiting for it without blocking the loop."""
    return await asyncio.to_thread(process.log.wait_for, predicate, wait_s)
