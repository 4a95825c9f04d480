"""The request interceptor: every RPC gets a request id, domain errors become statuses through
`status.py`, and anything unexpected becomes INTERNAL (logged with the id, shown without detail).
Each finished RPC is counted by method and code, and unary ones timed (`controller/metrics.py`).

It wraps each method handler instead of the servicers, so servicers hold no error handling and
health and reflection get request ids too."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from controller import metrics
from controller.api import status
from controller.api.handlers import Behavior, Handler, ServerInterceptor, rewrap
from controller.errors import ControllerError, InvalidArgumentError
from controller.logs import request_id_var

log = logging.getLogger("controller.api")
REQUEST_ID_KEY = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The caller's `x-request-id` if it is sane, else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _VALID_REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


class RequestInterceptor(ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        streaming = handler.response_streaming
        unary = not (streaming or handler.request_streaming)
        counted = metrics.rpc_metrics(method)  # label children, bound once per method
        return rewrap(
            handler,
            lambda behavior: _wrap(
                behavior, method, metadata, streaming=streaming, unary=unary, counted=counted
            ),
        )


def _wrap(
    behavior: Behavior,
    method: str,
    metadata: Any,
    *,
    streaming: bool,
    unary: bool,
    counted: metrics.RpcMetrics,
) -> Behavior:
    async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        request_id = request_id_of(metadata)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        outcome = "OK"
        code = "OK"  # the status the caller sees, for the metrics
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            result = behavior(request, context)
            if not streaming:
                return await result
            # Response streams are written through the context, whether the behavior is an
            # async generator or a coroutine that writes itself.
            if inspect.isasyncgen(result):
                async for response in result:
                    await context.write(response)
            else:
                await result
            return None
        except ControllerError as exc:
            outcome = code = status.code_of(exc).name
            failure = {"method": method, "code": outcome, "error": str(exc)}
            log.info("rpc failed", extra={"fields": failure})
            await _abort(context, status.to_status(exc))
        except DecodeError:  # a request that is not the message it claims to be
            outcome = code = "INVALID_ARGUMENT"
            log.info("malformed request", extra={"fields": {"method": method}})
            malformed = InvalidArgumentError.single("request", "not a valid protobuf message")
            await _abort(context, status.to_status(malformed))
        except aio.AbortError:
            outcome = "ABORTED_BY_HANDLER"
            code = metrics.code_name(context.code())
            raise
        except asyncio.CancelledError:
            outcome = code = "CANCELLED"
            raise
        except Exception:
            outcome = code = "INTERNAL"
            log.exception("rpc crashed", extra={"fields": {"method": method}})
            await _abort(context, status.internal_status(request_id))
        finally:
            elapsed_s = time.perf_counter() - start
            counted.done(code, elapsed_s, unary=unary)
            elapsed_ms = round(elapsed_s * 1000, 3)
            fields: dict[str, object] = {"method": method, "code": outcome, "ms": elapsed_ms}
            log.debug("rpc done", extra={"fields": fields})
            request_id_var.reset(token)

    return wrapped


async def _abort(context: aio.ServicerContext[Any, Any], rpc_status: grpc.Status) -> None:
    await context.abort(rpc_status.code, rpc_status.details, rpc_status.trailing_metadata)
