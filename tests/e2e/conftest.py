"""Fixtures of the end-to-end suite: a real controller process on a free port of 127.0.0.1, and
grpc.aio stubs connected to it. Every process a test starts is stopped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from automator67.v1 import (
    agent_service_pb2_grpc,
    deployment_service_pb2_grpc,
    node_service_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from .controller_process import ADMIN_TOKENS, ControllerProcess

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.deployment_service_pb2_grpc import DeploymentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

# Every RPC a test makes gets this deadline unless it sets its own, so a wedged server fails
# the test with DEADLINE_EXCEEDED instead of hanging it.
RPC_TIMEOUT_S = 10.0

StartController = Callable[..., ControllerProcess]


if TYPE_CHECKING:
    _UnaryUnary = aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = aio.StreamStreamClientInterceptor[Any, Any]
else:  # not generic at run time
    _UnaryUnary = aio.UnaryUnaryClientInterceptor
    _UnaryStream = aio.UnaryStreamClientInterceptor
    _StreamUnary = aio.StreamUnaryClientInterceptor
    _StreamStream = aio.StreamStreamClientInterceptor


class _DefaultDeadline(_UnaryUnary, _UnaryStream):
    """Gives unary calls a deadline. Streams keep none: a watch must outlive any fixed deadline;
    tests bound their waits on streams themselves."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        if details.timeout is None:
            details = aio.ClientCallDetails(
                details.method,
                RPC_TIMEOUT_S,
                details.metadata,
                details.credentials,
                details.wait_for_ready,
            )
        return await continuation(details, request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(details, request)


class _Bearer:
    """Adds `authorization: Bearer TOKEN` to every call that does not carry one. grpc.aio files
    an interceptor under the first call kind it implements only, hence one subclass per kind."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata.append(self._header)
        return aio.ClientCallDetails(
            details.method,
            details.timeout,
            aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )


class _BearerUnaryUnary(_Bearer, _UnaryUnary):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_token(details), request)


class _BearerUnaryStream(_Bearer, _UnaryStream):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_token(details), request)


class _BearerStreamUnary(_Bearer, _StreamUnary):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._with_token(details), requests)


class _BearerStreamStream(_Bearer, _StreamStream):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(self._with_token(details), requests)


_BEARERS = (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)


def open_channel(address: str, token: str | None = None) -> aio.Channel:
    """An insecure grpc.aio channel to `address` with the default deadline on unary calls. It
    sends `token` (default: the admin token of the test controller at `address`; "" for none)
    as a bearer token on every call that names no other."""
    token = ADMIN_TOKENS.get(address, "") if token is None else token
    interceptors: list[Any] = [_DefaultDeadline()]  # grpc-stubs types this list too narrowly
    if token:
        interceptors += [bearer(token) for bearer in _BEARERS]
    return aio.insecure_channel(address, interceptors=interceptors)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The data folder of this test's controller; restarts reuse it."""
    return tmp_path / "data"


@pytest.fixture
def start_controller(data_dir: Path) -> Iterator[StartController]:
    """Starts controllers on this test's data folder: `start_controller(log_level="debug",
    extra_args=[...])`. Each is stopped at teardown."""
    started: list[ControllerProcess] = []

    def start(*, log_level: str = "info", extra_args: Sequence[str] = ()) -> ControllerProcess:
        process = ControllerProcess(data_dir, log_level=log_level, extra_args=extra_args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    """A running controller with an empty store, logging at info level."""
    return start_controller()


@pytest.fixture(scope="module")
def shared_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One controller for a whole module. A module whose tests neither depend on an empty store
    nor stop the server overrides `controller` with it, to save a start per test."""
    process = ControllerProcess(tmp_path_factory.mktemp("shared") / "data")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest_asyncio.fixture
async def channel(controller: ControllerProcess) -> AsyncIterator[aio.Channel]:
    async with open_channel(controller.address) as channel:
        yield channel


@pytest.fixture
def node_stub(channel: aio.Channel) -> NodeServiceAsyncStub:
    return node_service_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture
def agent_stub(channel: aio.Channel) -> AgentServiceAsyncStub:
    return agent_service_pb2_grpc.AgentServiceStub(channel)


@pytest.fixture
def deployment_stub(channel: aio.Channel) -> DeploymentServiceAsyncStub:
    return deployment_service_pb2_grpc.DeploymentServiceStub(channel)


@pytest.fixture
def health_stub(channel: aio.Channel) -> Any:
    return health_pb2_grpc.HealthStub(channel)
