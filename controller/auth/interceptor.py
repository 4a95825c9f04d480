"""The auth interceptor: authenticates every RPC but health checks, authorizes it by role, bounds
the streams one principal holds open, and audits mutating calls.

    no, malformed, expired, forged token  -> UNAUTHENTICATED ("a valid bearer token is required";
                                             why is logged here, never sent)
    valid token, role may not call this   -> PERMISSION_DENIED
    one more stream than allowed          -> RESOURCE_EXHAUSTED

Who calls and whether they may is decided from the call's metadata alone, before grpc reads the
request: a refused call gets a handler (`handlers.refusing`) that parses no message and only
raises the refusal, so an unauthenticated caller costs a token check, not a parse of its body
(its audit line names no resource: the request is never parsed).

A refused request stream (a heartbeat, reflection; also one over the stream limit) is answered
only once its first message (raw bytes when unauthorized, dropped) or its half-close arrived, or
after `REFUSAL_GRACE_S`: grpc.aio's client turns a call into INTERNAL ("Internal error from
Core") when one of its writes fails because the server's status already ended the stream
(grpc/grpc#36066), so a client that writes its first message as the refusal lands would see
INTERNAL instead of the refusal. A client that reads first gets its refusal after the grace.
Unary requests come with their half-close in one batch and are refused at once.

It runs inside the request interceptor (`controller/api/interceptors.py`), which gives the call
its request id and turns the errors raised here into statuses through the one error table. The
principal is set in `current_principal` here, in the call's own task, so it holds for the whole
call; the heartbeat stream reads it to keep a node token to its own node. A unary call that
mutates nothing (GetNode, ListNodes: the hot path) keeps its method's own handler, unwrapped;
the others get their method's wrap, built once (`_Calls`), which bounds streams and audits.
With authentication off (`verifier` None) only auditing remains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

# Both are the API edge, as this interceptor is: handler rewrapping and call outcomes
# (`api/handlers.py`) and the error table (`api/status.py`) are shared with the request
# interceptor, not a layer below reaching up.
from controller.api import status
from controller.api.handlers import (
    Behavior,
    Handler,
    ServerInterceptor,
    Wraps,
    outcome_of,
    refusing,
    rewrap,
    run,
)
from controller.auth import audit, tokens
from controller.auth.principals import Principal, Rule, allowed, current_principal, rule_for
from controller.auth.tokens import InvalidTokenError, TokenVerifier
from controller.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from controller.logs import request_id_var

log = logging.getLogger("controller.auth")
AUTHORIZATION_KEY = "authorization"
UNAUTHENTICATED_MESSAGE = "a valid bearer token is required"
# How long a refused request stream waits for its first message or half-close (see above):
# generous for a loaded machine's client, short for one that reads first.
REFUSAL_GRACE_S = 5.0

Metadata = tuple[tuple[str, str | bytes], ...] | None


class AuthInterceptor(ServerInterceptor):
    def __init__(
        self,
        verifier: TokenVerifier | None,
        max_streams_per_principal: int,
        refusal_grace_s: float = REFUSAL_GRACE_S,
    ) -> None:
        self._verifier = verifier
        self._max_streams = max_streams_per_principal
        self.refusal_grace_s = refusal_grace_s
        self._open_streams: Counter[tuple[str, str]] = Counter()
        self._calls = _Calls(self)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        rule = rule_for(method)
        if handler is None or (rule.roles is None and not rule.mutating):
            return handler  # health checks: open, and nothing to audit
        principal: Principal | None = None
        if self._verifier is not None and not tokens.is_imported():
            await tokens.imported()  # the first call after a start (auth/tokens.py)
        try:
            principal = self.authenticate(handler_call_details.invocation_metadata, method)
            authorize(principal, rule, method)
        except (UnauthenticatedError, PermissionDeniedError) as refusal:
            # Only a request stream's first message can race the refusal (see above).
            grace_s = self.refusal_grace_s if handler.request_streaming else None
            refused = _Refused(refusal, principal, method, rule, grace_s)
            return refusing(handler, refused.refuse)
        current_principal.set(principal)  # in the call's task: the behavior runs in it too
        streaming = handler.request_streaming or handler.response_streaming
        if not rule.mutating and not (streaming and principal is not None):
            return handler  # nothing to bound or audit: no wrap, no per-call cost
        return self._calls.wrapped(method, rule, handler)

    def authenticate(self, metadata: Metadata, method: str) -> Principal | None:
        """The caller, or None when authentication is off. Raises UnauthenticatedError."""
        if self._verifier is None:
            return None
        values = [value for key, value in metadata or () if key == AUTHORIZATION_KEY]
        try:
            if len(values) != 1 or not isinstance(values[0], str):
                raise InvalidTokenError("no authorization header, or more than one")
            scheme, _, token = values[0].strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidTokenError("the authorization header is not 'Bearer TOKEN'")
            return self._verifier.verify(token.strip())
        except InvalidTokenError as error:
            fields = {"method": method, "reason": str(error)}
            log.info("authentication failed", extra={"fields": fields})
            raise UnauthenticatedError(UNAUTHENTICATED_MESSAGE) from None

    def open_stream(self, principal: Principal) -> tuple[str, str]:
        key = (principal.role.value, principal.subject)
        if self._open_streams[key] >= self._max_streams:
            raise ResourceExhaustedError(
                f"at most {self._max_streams} open streams per token subject; close some first",
                reason="STREAM_LIMIT",
                metadata={"limit": str(self._max_streams)},
            )
        self._open_streams[key] += 1
        return key

    def close_stream(self, key: tuple[str, str]) -> None:
        self._open_streams[key] -= 1
        if self._open_streams[key] <= 0:
            del self._open_streams[key]


def authorize(principal: Principal | None, rule: Rule, method: str) -> None:
    """Raises PermissionDeniedError if `principal` may not call `method`."""
    if principal is not None and not allowed(principal, rule):
        name = method.rsplit("/", 1)[-1]
        raise PermissionDeniedError(
            f"the {principal.role.value} role may not call {name}",
            metadata={"role": principal.role.value, "method": name},
        )


async def first_message_or_end(requests: AsyncIterator[Any], grace_s: float) -> None:
    """Waits at most `grace_s` for the first message of a request stream that is about to be
    refused (the message is dropped), or for its end; see the module's docstring."""
    with contextlib.suppress(StopAsyncIteration, TimeoutError, InvalidArgumentError):
        async with asyncio.timeout(grace_s):
            await anext(requests)


class _Refused:
    """One refused call: its behavior audits (if the method mutates) and raises the refusal,
    without parsing the request. With `grace_s` (a request stream) it first waits that long at
    most for the stream's first message or end."""

    def __init__(
        self,
        refusal: UnauthenticatedError | PermissionDeniedError,
        principal: Principal | None,
        method: str,
        rule: Rule,
        grace_s: float | None,
    ) -> None:
        self._refusal = refusal
        self._principal = principal
        self._method = method
        self._rule = rule
        self._grace_s = grace_s

    async def refuse(
        self, requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> Any:
        if self._grace_s is not None:
            await first_message_or_end(requests, self._grace_s)
        if self._rule.mutating:
            result = status.code_of(self._refusal).name
            audit.record(self._principal, self._method, "", result, request_id_var.get())
        raise self._refusal


class _Calls:
    """The authorized calls' handlers, wrapped once per method (the principal and request id
    come from the call's context variables): a call bounds its streams and audits."""

    def __init__(self, interceptor: AuthInterceptor) -> None:
        self._interceptor = interceptor
        self._wraps = Wraps()

    def wrapped(self, method: str, rule: Rule, handler: Handler) -> Handler:
        kind = (handler.request_streaming, handler.response_streaming)
        return self._wraps.get(
            method,
            handler,
            lambda inner: rewrap(inner, lambda behavior: self._wrap(behavior, method, rule, kind)),
        )

    def _wrap(
        self, behavior: Behavior, method: str, rule: Rule, kind: tuple[bool, bool]
    ) -> Behavior:
        interceptor = self._interceptor
        request_streaming, response_streaming = kind
        streaming = request_streaming or response_streaming

        async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            principal = current_principal.get()
            stream_key: tuple[str, str] | None = None
            response: Any = None
            result = "OK"
            try:
                if principal is not None and streaming:
                    try:
                        stream_key = interceptor.open_stream(principal)
                    except ResourceExhaustedError:
                        if request_streaming:  # as a refused request stream
                            await first_message_or_end(request, interceptor.refusal_grace_s)
                        raise
                response = await run(behavior, request, context, response_streaming)
                return response
            except BaseException as error:
                result = outcome_of(error, context)
                raise
            finally:
                if stream_key is not None:
                    interceptor.close_stream(stream_key)
                if rule.mutating:
                    target = audit.resource_id(None if request_streaming else request, response)
                    audit.record(principal, method, target, result, request_id_var.get())

        return wrapped
