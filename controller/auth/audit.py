"""The audit log: one structured line per mutating call, on the `controller.audit` logger.

    {"logger": "controller.audit", "msg": "audit", "subject": "alice", "role": "admin",
     "rpc": "/automator67.v1.NodeService/DeleteNode", "resource_id": "1b4e...",
     "result": "OK", "request_id": "..."}

Written after the call ends, whatever its result: refused calls (UNAUTHENTICATED,
PERMISSION_DENIED) are audited too, with an empty subject when no token was accepted. Reads are
not audited. The line never carries request bodies, so no secret reaches it."""

from __future__ import annotations

import logging

from google.protobuf.message import Message

from controller.auth.principals import Principal

log = logging.getLogger("controller.audit")


def record(
    principal: Principal | None,
    rpc: str,
    resource_id: str,
    result: str,
    request_id: str,
) -> None:
    fields = {
        "subject": principal.subject if principal else "",
        "role": principal.role.value if principal else "",
        "rpc": rpc,
        "resource_id": resource_id,
        "result": result,
        "request_id": request_id,
    }
    log.info("audit", extra={"fields": fields})


def resource_id(request: object, response: object) -> str:
    """The id of the resource a call acted on: the created resource's id from the response,
    else the request's `*_id` field (`node_id`, `deployment_id`) or its resource's `id`."""
    for message in (response, request):
        if isinstance(message, Message):
            found = _id_in(message)
            if found:
                return found
    return ""


def _id_in(message: Message) -> str:
    for field, value in message.ListFields():
        if field.name == "request_id" or field.is_repeated:
            continue
        if field.name.endswith("_id") and isinstance(value, str):
            return value
        if field.message_type is not None and "id" in field.message_type.fields_by_name:
            nested = getattr(value, "id", "")
            if isinstance(nested, str) and nested:
                return nested
    return ""
