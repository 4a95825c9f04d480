"""The agent's heartbeat stream: one reader loop, one registry call per beat, cleanup in
`finally`.

    agent: hello ------------------> stream_opened (node READY), SessionStart <- controller
    agent: beat(seq) --------------> nodes.beat, BeatAck(seq) <-------------- controller
    (replaced by a newer stream) ---> ends with ABORTED
    (lifetime or shutdown) ---------> Reconnect <-, then ends OK (agent reconnects at once)
    (stream breaks or agent ends) --> stream_closed (node SUSPECT)

The handler's own task reads the beats and writes each ack (one write per beat, no task or
future of ours per beat or per stream). A stop (replaced, lifetime, shutdown) cancels that task
through the session's listener; pushed assignments are written by a short task of their own,
under the one lock that keeps writes from overlapping. That task is cancelled and awaited on
every way out, cancellation of the call included.

A bad message ends this stream only, with INVALID_ARGUMENT; beats far faster than the interval
end it with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb
from google.protobuf import duration_pb2
from grpc import aio

from controller import metrics
from controller.api.convert import (
    REPORTABLE_STATES_PB,
    assignment_spec_pb,
    desired_state_pb,
    node_status_pb,
    report_of,
)
from controller.api.timestamps import timestamp_pb
from controller.clock import Clock
from controller.errors import (
    ConflictError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from controller.models import NodeStatus
from controller.registry.collection import check_id
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Session, Sessions, Stop, StopKind
from controller.registry.validation import MAX_DISK_GB, MAX_MEMORY_GB
from controller.token_bucket import TokenBucket

HEALTH_VALUES = frozenset(deployment_pb2.ReplicaHealth.values())

log = logging.getLogger("controller.heartbeat")
Context = aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class StreamSettings:
    interval_s: float = 5.0
    hello_timeout_s: float = 10.0
    max_age_s: float = 1800.0  # each stream ends after this, +-10% jitter
    burst: int = 10  # beats allowed back to back ...
    rate_factor: float = 4.0  # ... then at most this many per interval (0: no limit)


class HeartbeatStream:
    def __init__(
        self,
        nodes: NodeRegistry,
        deployments: DeploymentRegistry,
        sessions: Sessions,
        settings: StreamSettings,
        clock: Clock,
        node_of_caller: Callable[[], str | None] = lambda: None,
    ) -> None:
        # The node a node token names, for the call being served (None for other callers or
        # without auth): the auth layer knows the caller, this layer only asks.
        self._node_of_caller = node_of_caller
        self._nodes = nodes
        self._deployments = deployments
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._lifetimes = _Lifetimes()
        self._interval = duration_pb2.Duration()
        self._interval.FromTimedelta(timedelta(seconds=settings.interval_s))

    async def serve(self, requests: AsyncIterator[hb.HeartbeatRequest], context: Context) -> None:
        hello = await self._hello(requests)
        node = self._nodes.stream_opened(hello.node_id)
        node_id, status = node.id, node.status
        session = self._sessions.open(node_id)
        agent = hello.agent_version
        del hello, node  # held for the stream's life otherwise (a node copy, the hello message)
        log.info("heartbeat stream opened", extra={"fields": _fields(session, agent)})
        reason, planned = "heartbeat stream broke", False
        ended = "broken"  # the reason label of automator67_heartbeat_stream_ends_total
        metrics.HEARTBEAT_STREAMS_OPEN.inc()
        task = asyncio.current_task()
        assert task is not None
        stream = _Stream(self, context, session, task)
        lifetime = self._lifetimes.add(self._settings.max_age_s * random.uniform(0.9, 1.1), session)
        try:
            await context.write(self._session_start(session, status))
            session.take_push()  # the set sent next is current
            await context.write(self._assignments(node_id))
            try:
                stop = await stream.read_beats(requests)
            except Exception:
                ended = "error"  # a bad beat, a node deleted meanwhile, a failed ack
                raise
            if stop is None:
                ended = "agent_closed"
                reason = "agent closed its heartbeat stream"
                log.info(
                    "heartbeat stream closed by agent", extra={"fields": _fields(session, agent)}
                )
                return
            await stream.settle()
            if stop.kind is StopKind.REPLACED:
                ended = "replaced"
                raise ConflictError(stop.reason, reason="STREAM_REPLACED")
            await context.write(hb.HeartbeatResponse(reconnect=hb.Reconnect(reason=stop.reason)))
            reason, planned = stop.reason, True
            ended = "reconnect"
        finally:
            metrics.HEARTBEAT_STREAMS_OPEN.dec()
            metrics.HEARTBEAT_STREAM_ENDS.labels(ended).inc()
            self._lifetimes.cancel(lifetime)
            session.listen(None)  # no stop cancels this task from here on, no push starts
            if self._sessions.close(session):
                self._nodes.stream_closed(node_id, reason, planned=planned)
            await stream.settle()  # last: a second cancellation here skips nothing above

    async def _hello(self, requests: AsyncIterator[hb.HeartbeatRequest]) -> hb.AgentHello:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the read in a task of
            # its own (5 % of the controller's samples while 50,000 streams opened).
            async with asyncio.timeout(self._settings.hello_timeout_s):
                first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgumentError.single("hello", "the stream ended before hello") from None
        except TimeoutError:
            raise InvalidArgumentError.single(
                "hello", f"no hello within {self._settings.hello_timeout_s:g}s"
            ) from None
        if first.WhichOneof("kind") != "hello":
            raise InvalidArgumentError.single("hello", "the first message must be hello")
        hello = first.hello
        check_id(hello.node_id, "hello.node_id")
        caller_node = self._node_of_caller()
        if caller_node not in (None, hello.node_id):
            raise PermissionDeniedError(
                "a node token may only stream for its own node", reason="NODE_TOKEN_MISMATCH"
            )
        if len(hello.agent_version) > 64:
            raise InvalidArgumentError.single("hello.agent_version", "at most 64 characters")
        if len(hello.drivers) > 16 or any(len(d) > 64 for d in hello.drivers):
            raise InvalidArgumentError.single("hello.drivers", "at most 16, of 64 characters")
        return hello

    def _session_start(self, session: Session, status: NodeStatus) -> hb.HeartbeatResponse:
        start = hb.SessionStart(
            session_id=session.id,
            heartbeat_interval=self._interval,
            node_status=node_status_pb(status),
        )
        return hb.HeartbeatResponse(session=start)

    def _assignments(self, node_id: str) -> hb.HeartbeatResponse:
        assignments = [
            hb.Assignment(
                deployment=assignment_spec_pb(dep, replica),
                replica_index=replica.index,
                desired_state=desired_state_pb(replica.desired),
                placement_id=replica.placement_id,
            )
            for dep, replica in self._deployments.assignments(node_id)
        ]
        return hb.HeartbeatResponse(assignments=hb.Assignments(assignments=assignments))

    def _bucket(self) -> TokenBucket | None:
        s = self._settings
        if not s.rate_factor:
            return None
        return TokenBucket(s.burst, s.rate_factor / s.interval_s, self._clock)

    def _beat(self, node_id: str, beat: hb.Beat) -> hb.HeartbeatResponse:
        """Applies one checked beat; its ack."""
        self._nodes.beat(node_id)
        if beat.replicas:  # level-triggered: applying an unchanged report changes nothing
            self._deployments.report(node_id, [report_of(r) for r in beat.replicas])
        received = timestamp_pb(self._clock.now())
        return hb.HeartbeatResponse(ack=hb.BeatAck(sequence=beat.sequence, receive_time=received))


class _Lifetimes:
    """Each stream's end of life (then asked to reconnect), in one heap with one timer for all:
    a timer per stream cost ~600 bytes. A stream that ends first empties its entry, which stays
    in the heap until due or until the heap is compacted (when most entries are empty)."""

    __slots__ = ("_due", "_empty", "_heap", "_sequence", "_timer")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []  # [due (loop time), sequence, session or None]
        self._sequence = 0
        self._empty = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf

    def add(self, after_s: float, session: Session) -> list[Any]:
        """Asks `session` to reconnect after `after_s`; the entry to `cancel` if it ends first."""
        loop = asyncio.get_running_loop()
        self._sequence += 1
        entry = [loop.time() + after_s, self._sequence, session]
        heapq.heappush(self._heap, entry)
        if self._empty > 1024 and self._empty * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._empty = 0
        self._arm(loop)
        return entry

    def cancel(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] = None
            self._empty += 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._heap[0][0] if self._heap else math.inf
        if due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._due = loop.call_at(due, self._expire, loop), due

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._due = None, math.inf
        now = loop.time()
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            session, entry[2] = entry[2], None
            if session is None:
                self._empty -= 1
            else:
                session.stop(StopKind.RECONNECT, "stream lifetime reached")
        self._arm(loop)


class _Stream:
    """One open stream's beats and writes, run by the handler's own task: it reads the agent's
    beats and writes each ack itself. A stop cancels that task (and only that: the handler
    tells it from a cancellation of the call by `uncancel`); a push of new assignments starts a
    short task that writes them. Writes never overlap (one lock; uncontended but for a push)."""

    __slots__ = ("_context", "_lock", "_owner", "_pusher", "_session", "_stopping", "_task")

    def __init__(
        self, owner: HeartbeatStream, context: Context, session: Session, task: asyncio.Task[Any]
    ) -> None:
        self._owner = owner
        self._context = context
        self._session = session
        self._task = task
        self._lock = asyncio.Lock()
        self._pusher: asyncio.Task[None] | None = None
        self._stopping = False  # this stream cancelled its task for a stop

    # SessionListener

    def stop_requested(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._task.cancel()

    def assignments_pushed(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.ensure_future(self._push())

    async def _push(self) -> None:
        session = self._session
        while session.take_push():
            async with self._lock:
                await self._context.write(self._owner._assignments(session.node_id))

    async def read_beats(self, requests: AsyncIterator[hb.HeartbeatRequest]) -> Stop | None:
        """Reads and acks beats until the agent closes the stream (None) or the session is
        stopped (its Stop). A bad beat raises. One coroutine, not two: each open stream holds
        its frame (~300 bytes)."""
        session = self._session
        owner = self._owner
        s = owner._settings
        bucket = owner._bucket()
        last_sequence = -1
        received_beat = metrics.HEARTBEATS.inc  # bound once: a beat costs one unlabelled inc()
        lock = self._lock
        write = self._context.write
        node_id = session.node_id
        session.listen(self)
        try:
            async for request in requests:
                if request.WhichOneof("kind") != "beat":
                    raise InvalidArgumentError.single("beat", "after hello, only beats may be sent")
                beat = request.beat
                if beat.sequence <= last_sequence:
                    raise InvalidArgumentError.single(
                        "beat.sequence", f"must increase ({beat.sequence} after {last_sequence})"
                    )
                last_sequence = beat.sequence
                _check_beat(beat)
                if bucket is not None and not bucket.take():
                    raise ResourceExhaustedError(
                        f"beats arrive far faster than the heartbeat interval ({s.interval_s:g}s)",
                        reason="BEAT_RATE_EXCEEDED",
                        metadata={"heartbeat_interval_s": f"{s.interval_s:g}"},
                    )
                received_beat()
                ack = owner._beat(node_id, beat)
                del request, beat  # not held while the stream waits for the next beat
                async with lock:
                    await write(ack)
                del ack
        except asyncio.CancelledError:
            if not self._stopping or self._task.uncancel() > 0:
                raise  # the call itself was cancelled
            assert session.stopped is not None
            return session.stopped
        finally:
            session.listen(None)
        return None

    async def settle(self) -> None:
        """Ends a push being written, if any (an agent that left fails it: no news)."""
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            await _settle(pusher)


async def _settle(task: asyncio.Future[Any]) -> None:
    """Cancels `task` and waits for it to end, retrieving its exception (an ack that failed as
    the agent left is no news). A cancellation of the caller still propagates."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()


def _fields(session: Session, agent: str) -> dict[str, str]:
    """A stream's log fields, made when logged (a dict held per open stream costs ~300 bytes)."""
    return {"node_id": session.node_id, "session_id": session.id, "agent": agent}


def _check_beat(beat: hb.Beat) -> None:
    """Every beat is checked, so the common one (no replicas) costs a few comparisons: NaN and
    the infinities fail them too, as `0 <= x <= maximum` holds for finite numbers only."""
    load = beat.load
    if not 0 <= load.cpu_percent <= 100:
        raise InvalidArgumentError.single("beat.load.cpu_percent", "must be between 0 and 100")
    if not 0 <= load.memory_used_gb <= MAX_MEMORY_GB:
        raise InvalidArgumentError.single(
            "beat.load.memory_used_gb", f"must be a number from 0 to {MAX_MEMORY_GB:g}"
        )
    if not 0 <= load.disk_used_gb <= MAX_DISK_GB:
        raise InvalidArgumentError.single(
            "beat.load.disk_used_gb", f"must be a number from 0 to {MAX_DISK_GB:g}"
        )
    replicas = beat.replicas
    if replicas:
        _check_replicas(replicas)


def _check_replicas(replicas: Sequence[hb.ReplicaReport]) -> None:
    if len(replicas) > 1000:
        raise InvalidArgumentError.single("beat.replicas", "at most 1000 replicas")
    for i, replica in enumerate(replicas):
        check_id(replica.deployment_id, f"beat.replicas[{i}].deployment_id")
        if len(replica.message) > 1024:
            raise InvalidArgumentError.single(
                f"beat.replicas[{i}].message", "at most 1024 characters"
            )
        if replica.state not in REPORTABLE_STATES_PB:
            raise InvalidArgumentError.single(f"beat.replicas[{i}].state", "unknown value")
        if replica.health not in HEALTH_VALUES:
            raise InvalidArgumentError.single(f"beat.replicas[{i}].health", "unknown value")
        if len(replica.placement_id) > 64:
            raise InvalidArgumentError.single(
                f"beat.replicas[{i}].placement_id", "at most 64 characters"
            )
