"""The reference agent: registers its node once, then keeps one heartbeat stream open forever.

    start: state file has an id and GetNode finds it -> "reusing node"
           else RegisterNode (idempotent request_id), save the id -> "registered"
    loop:  open the stream -> "heartbeat stream opened"; beat every interval (session.py)
           Reconnect from the controller -> reconnect at once (small jitter)
           any other end -> "reconnecting" after full-jitter backoff; reset after a session
           with an acked beat; NOT_FOUND (node deleted) -> resolve the node again
    controllers: `--controller a:50051,b:50052,c:50053` names replicas; the agent starts at a
           random one (so a fleet spreads over them) and moves to the next after every end
           of an attempt (a dead replica, a Reconnect), after the delay above. One DNS name
           with several addresses is one target: each new channel picks one of its addresses
           at random (the SDK's pick_first with a shuffled address list).
    assignments: each stream hands the controller's Assignments to `Workloads` (workloads.py),
           which runs them with the configured driver; every beat reports every replica
    SIGTERM/SIGINT: close the stream cleanly (end of the request stream), stop the replicas
           (the exec driver's processes), "stopped", exit 0

It never gives up on the controller: every failure but a refused registration is retried."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Protocol, TypeVar

import grpc
from automator67.agent import AgentClient, HeartbeatProtocolError, node_of_token
from automator67.connection import TLS, split_targets
from automator67.errors import ApiError
from automator67.retry import NO_RETRY
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2, node_service_pb2

from controller import __version__
from controller.agent.backoff import Backoff, Random
from controller.agent.drivers import make_driver
from controller.agent.load import HostLoad
from controller.agent.session import (
    BeatStream,
    EndKind,
    SessionEnd,
    end_of_error,
    retry_after,
    run_session,
)
from controller.agent.settings import AgentSettings
from controller.agent.state import (
    AgentState,
    StateFileError,
    load_state,
    save_state,
    save_workloads,
)
from controller.agent.workloads import Workloads

log = logging.getLogger("controller.agent")
T = TypeVar("T")


class ControllerApi(Protocol):
    """What the agent needs of the SDK's `automator67.agent.AgentClient` (or of a fake in
    tests); the contract is AgentClient's."""

    async def __aenter__(self) -> ControllerApi: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def get_node(self, node_id: str) -> node_pb2.Node: ...

    async def register_node(
        self, node: node_pb2.Node, *, request_id: str | None = None
    ) -> node_service_pb2.RegisterNodeResponse: ...

    def heartbeat(
        self,
        node_id: str,
        agent_version: str = "",
        drivers: Sequence[str] = (),
        *,
        open_timeout_s: float = 10.0,
    ) -> BeatStream: ...


class RegistrationRefused(Exception):
    """The controller rejected this node's registration as invalid; retrying cannot help."""


class _Stopped(Exception):
    """The agent was asked to stop while it waited."""


class Agent:
    """One agent. `run()` returns after `stop()`, once its replicas have stopped; `stop()` may
    be called from a signal handler on the loop's thread. `load`, `rand`, `client` (a factory
    of clients, given the target of the attempt) and `workloads` are injectable for tests.
    The replicas outlive each stream: a reconnect does not restart them, the new stream's
    assignments converge them.

    Every attempt (registration and one heartbeat stream) uses a new client, so a new channel
    and a new connection: a Reconnect must be able to land on another controller replica, and
    a channel's own reconnect backoff (exponential with only +-20% jitter, so fleet-wide
    lockstep) must not stretch the agent's full-jitter delays."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        load: Callable[[], hb.NodeLoad] | None = None,
        rand: Random = random.random,
        client: Callable[[str], ControllerApi] | None = None,
        workloads: Workloads | None = None,
    ) -> None:
        self.settings = settings
        self._load = load or HostLoad().sample
        self._backoff = Backoff(settings.backoff_base_s, settings.backoff_max_s, rand)
        self._rand = rand
        self._client: Callable[[str], ControllerApi] = client or self._new_client
        self._targets = split_targets(settings.controller)
        self._next_target = int(rand() * len(self._targets)) % len(self._targets)
        if workloads is None:
            driver = make_driver(settings.driver)
            if hasattr(driver, "stderr_dir"):  # exec: files beside the state file
                state = settings.state_file
                driver.stderr_dir = state.with_name(f"{state.name}.stderr")
            workloads = Workloads(driver, partial(save_workloads, settings.state_file))
        self.workloads = workloads
        self._stopping = asyncio.Event()
        self._saved: AgentState | None = None
        self._request_id = _new_request_id()
        self.node_id = ""

    def stop(self) -> None:
        self._stopping.set()

    @property
    def failures(self) -> int:
        """Failed attempts since the last session with an acked beat (what the backoff grows
        with)."""
        return self._backoff.attempt

    async def run(self) -> None:
        """Runs until `stop()`. Raises StateFileError or RegistrationRefused, which no retry
        can fix."""
        self._saved = load_state(self.settings.state_file)
        if self._saved is not None and self._saved.workloads:
            # Before any stream: an adopted process is never started a second time.
            adopted = self.workloads.adopt(self._saved.workloads)
            counts = {"adopted": adopted, "recorded": len(self._saved.workloads)}
            log.info("workloads from before the restart", extra={"fields": counts})
        try:
            while True:
                end = await self._guarded_attempt()
                if end.kind is EndKind.STOPPED:
                    return
                if end.acked:
                    self._backoff.reset()
                if end.kind is EndKind.RECONNECT:
                    delay = self._backoff.reconnect_delay()
                else:
                    delay = self._backoff.next_delay()
                if end.retry_after_s:
                    # The controller named when to come back: at least then, and spread over
                    # half as long again so that the refused agents do not return together.
                    delay = max(delay, end.retry_after_s * (1 + 0.5 * self._rand()))
                fields = {
                    "delay_s": round(delay, 3),
                    "reason": end.reason,
                    "controller": self._targets[self._next_target],
                }
                log.info("reconnecting", extra={"fields": fields})
                await self._sleep(delay)
        except _Stopped:
            pass
        finally:
            stopped = await self.workloads.shutdown()
            if stopped:
                log.info("replicas stopped", extra={"fields": {"count": stopped}})
            log.info("stopped", extra={"fields": {"node_id": self.node_id}})

    async def _guarded_attempt(self) -> SessionEnd:
        """One attempt on a new client, to the next controller of the list (the one after it is
        next, whatever the outcome). An unexpected error (a bug, here or in a library) is
        logged and retried like a broken stream: the agent outlives its own bugs."""
        target = self._targets[self._next_target]
        self._next_target = (self._next_target + 1) % len(self._targets)
        try:
            async with self._client(target) as client:
                return await self._attempt(client, target)
        except (_Stopped, StateFileError, RegistrationRefused):
            raise
        except Exception as error:
            log.exception("unexpected error")
            return SessionEnd(EndKind.BROKEN, f"unexpected error: {error!r}")

    async def _attempt(self, client: ControllerApi, target: str) -> SessionEnd:
        """Resolves the node if needed, then runs one heartbeat stream; returns how it ended."""
        if not self.node_id:
            try:
                self.node_id = await self._resolve_node(client, target)
            except ApiError as error:
                if error.code is grpc.StatusCode.INVALID_ARGUMENT:
                    raise RegistrationRefused(error.message) from None
                return SessionEnd(
                    EndKind.BROKEN,
                    f"registration failed: {_describe(error)}",
                    retry_after_s=retry_after(error),
                )
        end = await self._session(client, self.node_id, target)
        if end.kind is EndKind.NODE_GONE:
            # Deleted while it ran: the next attempt checks once more, then registers anew.
            self._saved = AgentState(self.node_id, target)
            self.node_id = ""
        return end

    async def _resolve_node(self, client: ControllerApi, target: str) -> str:
        """The node of a node token, or the saved node if the controller still has it, else a
        new registration. A node token may not call GetNode: with one, the heartbeat stream is
        what tells (NOT_FOUND) that the node is gone."""
        token_node = node_of_token(self.settings.token)
        if token_node:
            log.info("using the node of the token", extra={"fields": {"node_id": token_node}})
            return token_node
        saved = self._saved
        if saved is not None and saved.token:
            log.info("reusing node", extra={"fields": {"node_id": saved.node_id}})
            return saved.node_id
        if saved is not None:
            try:
                node = await self._until_stopped(client.get_node(saved.node_id))
            except ApiError as error:
                fields = {"node_id": saved.node_id, "state_file": str(self.settings.state_file)}
                if error.code is grpc.StatusCode.PERMISSION_DENIED:
                    # An agent-bootstrap token may register but not read nodes: with no node
                    # token left for the saved node (deleted, or its token refused after a key
                    # rotation), a new registration is the only way back.
                    log.warning(
                        "the token may not read the saved node; registering anew",
                        extra={"fields": fields},
                    )
                elif error.code is grpc.StatusCode.NOT_FOUND:
                    log.warning("saved node not found; registering anew", extra={"fields": fields})
                else:
                    raise
                self._saved = None
            else:
                log.info("reusing node", extra={"fields": {"node_id": node.id}})
                return node.id
        return await self._register(client, target)

    async def _register(self, client: ControllerApi, target: str) -> str:
        # The same request_id across retries: a registration whose answer was lost is returned
        # again instead of registering a second node.
        registering = client.register_node(self._node(), request_id=self._request_id)
        response = await self._until_stopped(registering)
        node = response.node
        self._request_id = _new_request_id()
        # The node token is kept (mode 0600) and used from the next connection on.
        self._saved = AgentState(node.id, target, response.agent_token)
        path = self.settings.state_file
        try:
            save_state(path, self._saved)
        except OSError as error:
            raise StateFileError(f"cannot write {path}: {error.strerror}") from None
        log.info("registered", extra={"fields": {"node_id": node.id}})
        return node.id

    def _token(self) -> str:
        """The bearer token of the next connection: a node token from the settings, else the
        node token saved at registration, else the token from the settings (if any)."""
        if node_of_token(self.settings.token):
            return self.settings.token
        if self._saved is not None and self._saved.token:
            return self._saved.token
        return self.settings.token

    def _forget_refused_token(self, error: ApiError) -> None:
        """A saved node token the controller refuses (its signing key was rotated) is dropped,
        so that the next connection uses the configured token instead."""
        saved = self._saved
        if error.code is grpc.StatusCode.UNAUTHENTICATED and saved is not None and saved.token:
            log.warning("the saved node token was refused; using the configured token")
            self._saved = AgentState(saved.node_id, saved.controller)

    def _new_client(self, target: str) -> AgentClient:
        return AgentClient(
            target,
            token=self._token() or None,
            tls=_tls(self.settings),
            timeout_s=self.settings.rpc_timeout_s,
            # The agent's own loop retries (and moves to another controller), not each call.
            retry=NO_RETRY,
            # Without it, channels to one address share one connection (and its backoff).
            options=[("grpc.use_local_subchannel_pool", 1)],
        )

    def _node(self) -> node_pb2.Node:
        s = self.settings
        capabilities = node_pb2.Capabilities(
            cpu_cores=s.cpu_cores, memory_gb=s.memory_gb, disk_gb=s.disk_gb
        )
        return node_pb2.Node(
            provider=s.provider,
            endpoint=s.endpoint,
            region=s.region,
            labels=s.labels_map,
            capabilities=capabilities,
        )

    async def _session(self, client: ControllerApi, node_id: str, target: str) -> SessionEnd:
        session = client.heartbeat(
            node_id,
            agent_version=__version__,
            drivers=(self.workloads.driver.name,),
            open_timeout_s=self.settings.rpc_timeout_s,
        )
        try:
            await self._until_stopped(session.open())
        except ApiError as error:
            self._forget_refused_token(error)
            if error.code is grpc.StatusCode.PERMISSION_DENIED and not node_of_token(self._token()):
                # No node token is left and the configured one may not stream (agent-bootstrap):
                # resolve the node again, which registers it anew if nothing else can be done.
                return SessionEnd(EndKind.NODE_GONE, f"no node token: {_describe(error)}")
            return end_of_error(error)
        except TimeoutError:
            return SessionEnd(EndKind.BROKEN, "no SessionStart in time")
        except HeartbeatProtocolError as error:
            return SessionEnd(EndKind.BROKEN, str(error))
        fields = {
            "session_id": session.session_id,
            "interval_s": session.interval_s,
            "controller": target,
        }
        log.info("heartbeat stream opened", extra={"fields": fields})
        return await run_session(session, self._sample, self._stopping, workloads=self.workloads)

    def _sample(self) -> hb.NodeLoad:
        try:
            return self._load()
        except Exception:  # a failed reading must not cost the node its heartbeat
            log.warning("cannot read the host's load", exc_info=True)
            return hb.NodeLoad()

    async def _sleep(self, delay_s: float) -> None:
        """Waits `delay_s`; raises _Stopped at once if the agent stops meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), delay_s)
        except TimeoutError:
            return
        raise _Stopped

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """Awaits `work`; if the agent stops first, cancels it and raises _Stopped."""
        task = asyncio.ensure_future(work)
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((task, stop_wait), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _Stopped
        return task.result()


def _new_request_id() -> str:
    return f"agent:{uuid.uuid4().hex}"


def _describe(error: ApiError) -> str:
    return f"{error.code.name}: {error.message}"


def _tls(settings: AgentSettings) -> TLS | None:
    """TLS to the controller when a CA is set (with a client certificate for mTLS). Read at
    each connection, so renewed certificates are picked up. The node token is read without
    verifying (`node_of_token`): the agent only decides what to try; the controller decides
    what is allowed."""
    if not settings.tls_ca_file:
        return None
    mutual = bool(settings.tls_cert_file)
    return TLS.from_files(
        settings.tls_ca_file,
        settings.tls_cert_file if mutual else None,
        settings.tls_key_file if mutual else None,
    )


async def run_agent(settings: AgentSettings) -> int:
    """Runs an agent until SIGTERM or SIGINT; returns the process's exit code."""
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except StateFileError as error:
        log.error("cannot use the state file", extra={"fields": {"error": str(error)}})
        return 2
    except RegistrationRefused as error:
        log.error("registration refused", extra={"fields": {"error": str(error)}})
        return 1
    return 0
