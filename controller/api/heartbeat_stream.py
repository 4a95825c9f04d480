"""The agent's heartbeat stream: one reader loop, one registry call per beat, cleanup in
`finally`.

    agent: hello ------------------> stream_opened (node READY), SessionStart <- controller
    agent: beat(seq) --------------> nodes.beat, BeatAck(seq) <-------------- controller
    (replaced by a newer stream) ---> ends with ABORTED
    (lifetime or shutdown) ---------> Reconnect <-, then ends OK (agent reconnects at once)
    (stream breaks or agent ends) --> stream_closed (node SUSPECT)

Acks are written by the reader task and assignments by the handler, under one lock, so writes
never overlap. Every task the handler starts (the reader, the wait for pushed assignments) is
cancelled and awaited on every way out, cancellation of the call included.

A bad message ends this stream only, with INVALID_ARGUMENT; beats far faster than the interval
end it with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from automator67.v1 import deployment_pb2
from automator67.v1 import heartbeat_pb2 as hb
from google.protobuf import duration_pb2, timestamp_pb2
from grpc import aio

from controller import metrics
from controller.api.convert import (
    REPORTABLE_STATES_PB,
    assignment_spec_pb,
    desired_state_pb,
    node_status_pb,
    report_of,
)
from controller.clock import Clock
from controller.errors import (
    ConflictError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from controller.registry.collection import check_id
from controller.registry.deployments import DeploymentRegistry
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import Session, Sessions, StopKind
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

    async def serve(self, requests: AsyncIterator[hb.HeartbeatRequest], context: Context) -> None:
        hello = await self._hello(requests)
        node = self._nodes.stream_opened(hello.node_id)
        session = self._sessions.open(node.id)
        fields = {"node_id": node.id, "session_id": session.id, "agent": hello.agent_version}
        log.info("heartbeat stream opened", extra={"fields": fields})
        reason, planned = "heartbeat stream broke", False
        ended = "broken"  # the reason label of automator67_heartbeat_stream_ends_total
        metrics.HEARTBEAT_STREAMS_OPEN.inc()
        reader: asyncio.Future[None] | None = None
        lifetime = asyncio.get_running_loop().call_later(
            self._settings.max_age_s * random.uniform(0.9, 1.1),
            session.stop,
            StopKind.RECONNECT,
            "stream lifetime reached",
        )
        try:
            interval = duration_pb2.Duration()
            interval.FromTimedelta(timedelta(seconds=self._settings.interval_s))
            start = hb.SessionStart(
                session_id=session.id,
                heartbeat_interval=interval,
                node_status=node_status_pb(node.status),
            )
            await context.write(hb.HeartbeatResponse(session=start))
            lock = asyncio.Lock()  # the reader's acks and our assignments never overlap

            async def send(response: hb.HeartbeatResponse) -> None:
                async with lock:
                    await context.write(response)

            await send(self._assignments(node.id))
            reader = asyncio.ensure_future(self._read_beats(requests, send, node.id))
            while not (reader.done() or session.stopped.done()):
                await _until_pushed(session, reader)
                if session.assignments_changed.is_set() and not session.stopped.done():
                    session.assignments_changed.clear()
                    await send(self._assignments(node.id))
            if reader.done():
                ended = "error"
                reader.result()  # a bad beat raises here
                ended = "agent_closed"
                reason = "agent closed its heartbeat stream"
                log.info("heartbeat stream closed by agent", extra={"fields": fields})
                return
            await _settle(reader)
            stop = session.stopped.result()
            if stop.kind is StopKind.REPLACED:
                ended = "replaced"
                raise ConflictError(stop.reason, reason="STREAM_REPLACED")
            await context.write(hb.HeartbeatResponse(reconnect=hb.Reconnect(reason=stop.reason)))
            reason, planned = stop.reason, True
            ended = "reconnect"
        finally:
            metrics.HEARTBEAT_STREAMS_OPEN.dec()
            metrics.HEARTBEAT_STREAM_ENDS.labels(ended).inc()
            lifetime.cancel()
            if reader is not None:
                reader.cancel()  # no beat is applied after this: the reader's next step raises
            if self._sessions.close(session):
                self._nodes.stream_closed(node.id, reason, planned=planned)
            if reader is not None:
                await _settle(reader)  # last: a second cancellation here skips nothing above

    async def _hello(self, requests: AsyncIterator[hb.HeartbeatRequest]) -> hb.AgentHello:
        try:
            first = await asyncio.wait_for(anext(requests), self._settings.hello_timeout_s)
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

    async def _read_beats(
        self,
        requests: AsyncIterator[hb.HeartbeatRequest],
        send: Callable[[hb.HeartbeatResponse], Awaitable[None]],
        node_id: str,
    ) -> None:
        s = self._settings
        bucket = (
            TokenBucket(s.burst, s.rate_factor / s.interval_s, self._clock)
            if s.rate_factor
            else None
        )
        last_sequence = -1
        received_beat = metrics.HEARTBEATS.inc  # bound once: a beat costs one unlabelled inc()
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
            self._nodes.beat(node_id)
            if beat.replicas:  # level-triggered: applying an unchanged report changes nothing
                self._deployments.report(node_id, [report_of(r) for r in beat.replicas])
            received = timestamp_pb2.Timestamp()
            received.FromDatetime(self._clock.now())
            ack = hb.BeatAck(sequence=beat.sequence, receive_time=received)
            await send(hb.HeartbeatResponse(ack=ack))


async def _until_pushed(session: Session, reader: asyncio.Future[None]) -> None:
    """Returns when the reader ends, the session stops or new assignments are pushed. The task
    waiting for a push never outlives this call, even when the call is cancelled (a task left
    pending is logged as destroyed when it is collected)."""
    pushed = asyncio.ensure_future(session.assignments_changed.wait())
    try:
        await asyncio.wait((reader, session.stopped, pushed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _settle(pushed)


async def _settle(task: asyncio.Future[Any]) -> None:
    """Cancels `task` and waits for it to end, retrieving its exception (an ack that failed as
    the agent left is no news). A cancellation of the caller still propagates."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()


def _check_beat(beat: hb.Beat) -> None:
    load = beat.load
    if not (math.isfinite(load.cpu_percent) and 0 <= load.cpu_percent <= 100):
        raise InvalidArgumentError.single("beat.load.cpu_percent", "must be between 0 and 100")
    for field, maximum in (("memory_used_gb", MAX_MEMORY_GB), ("disk_used_gb", MAX_DISK_GB)):
        value = getattr(load, field)
        if not (math.isfinite(value) and 0 <= value <= maximum):
            raise InvalidArgumentError.single(
                f"beat.load.{field}", f"must be a number from 0 to {maximum:g}"
            )
    if len(beat.replicas) > 1000:
        raise InvalidArgumentError.single("beat.replicas", "at most 1000 replicas")
    for i, replica in enumerate(beat.replicas):
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
