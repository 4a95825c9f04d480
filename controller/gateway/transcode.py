"""Transcoding by the HttpRule: an HTTP request into the RPC's request message, its response
into proto3 JSON.

The request message is assembled as google/api/http.proto says, in this order (later wins):
the body (the whole message for `body: "*"`, else the field `body` names), then path variables,
then query parameters for every field neither bound by the path nor inside the body
(`?filter=...&page_size=10`, nested as `a.b`, repeated as `?x=1&x=2`; json or proto names).
Then protobuf's own proto3 JSON parser checks every type, so a wrong type names its field.

Choices where the spec leaves them, as grpc-gateway makes them: unknown JSON fields and unknown
query parameters are ignored (a client newer than the server keeps working); an empty body is
an empty message; a PATCH without `update_mask` gets one from the body's top-level fields
(without `etag`, output-only and identifier fields, and the ones the path binds); responses
print every field, defaults included, with json (camelCase) names, enums by name and 64-bit
integers as strings (the proto3 JSON mapping)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from controller import errors
from controller.gateway.errors import GatewayError, from_domain
from controller.gateway.routes import Route

_FIELD_PREFIX = re.compile(r"Failed to parse (\S+) field: ")
_WHERE_SUFFIX = re.compile(r" at [\w.]+$")
# Query parameters may set these message types: their JSON form is one string (or a bool).
_QUERY_MESSAGES = {
    "google.protobuf.FieldMask",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    *(f"google.protobuf.{kind}Value" for kind in ("Int32", "Int64", "UInt32", "UInt64")),
    *(f"google.protobuf.{kind}Value" for kind in ("Double", "Float", "String", "Bytes", "Bool")),
}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_NOT_IN_MASK = {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER}


def request_of(
    route: Route,
    path_values: dict[tuple[str, ...], str],
    query: Iterable[tuple[str, str]],
    body: bytes,
) -> Message:
    """The request message, or GatewayError INVALID_ARGUMENT naming the field."""
    request = route.request_type.DESCRIPTOR
    fields: dict[str, Any] = {}
    payload = _json_body(body, route.body) if route.body else None
    if route.body == "*":
        if not isinstance(payload, dict | None):
            raise _invalid("*", "the body must be a JSON object")
        fields = payload or {}
    elif route.body and payload is not None:
        if request.fields_by_name[route.body].message_type and not isinstance(payload, dict):
            raise _invalid(route.body, "the body must be a JSON object")
        fields[route.body] = payload
    for names, value in path_values.items():
        _put(fields, request, names, value)
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    mask_given = False
    for key, values in grouped.items():
        path = _resolve(request, key.split("."))
        if path is None:
            continue  # an unknown parameter (grpc-gateway ignores them too)
        names = tuple(f.name for f in path)
        if route.body == "*" or (route.body and names[0] == route.body) or names in route.bound:
            continue
        mask_given |= names == ("update_mask",)
        _put(fields, request, names, _query_value(path[-1], values, ".".join(names)))
    if route.http_method == "PATCH" and not mask_given and isinstance(payload, dict):
        mask = _mask_from_body(route, payload)
        if mask is not None:
            fields["update_mask"] = mask
    message: Message = route.request_type()
    try:
        json_format.ParseDict(fields, message, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise _type_error(request, str(error)) from None
    return message


def response_of(route: Route, message: Message) -> Any:
    """The response as a JSON value (the `response_body` field alone when the rule names one)."""
    printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    if route.response_body:
        field = message.DESCRIPTOR.fields_by_name[route.response_body]
        return printed.get(field.json_name)
    return printed


def _json_body(body: bytes, field: str) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise _invalid(field, "the body is not UTF-8", malformed=True) from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        message = f"the body is not JSON: {error.msg} at {where}"
        raise _invalid(field, message, malformed=True) from None


def _put(fields: dict[str, Any], message: Any, names: tuple[str, ...], value: Any) -> None:
    """Sets fields[names] (proto names), replacing a value set under the field's json name."""
    target = fields
    for i, name in enumerate(names):
        field = message.fields_by_name[name]
        existing = target.pop(field.json_name, None) if field.json_name != name else None
        if i == len(names) - 1:
            target[name] = value
            return
        child = target.get(name, existing)
        if not isinstance(child, dict):
            child = {}
        target[name] = child
        target, message = child, field.message_type


def _resolve(message: descriptor.Descriptor | None, parts: list[str]) -> list[Any] | None:
    path: list[descriptor.FieldDescriptor] = []
    for part in parts:
        if message is None:
            return None
        field = message.fields_by_name.get(part) or _by_json_name(message, part)
        if field is None:
            return None
        path.append(field)
        message = field.message_type
    return path


def _by_json_name(message: descriptor.Descriptor, name: str) -> Any:
    return next((f for f in message.fields if f.json_name == name), None)


def _query_value(field: descriptor.FieldDescriptor, values: list[str], name: str) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        raise _invalid(name, "a map cannot be set from a query parameter")
    if field.message_type is not None and field.message_type.full_name not in _QUERY_MESSAGES:
        raise _invalid(name, "this message cannot be set from a query parameter")
    converted = [_scalar(field, value, name) for value in values]
    if field.is_repeated:
        return converted
    if len(converted) > 1:
        raise _invalid(name, f"takes one value, got {len(converted)}")
    return converted[0]


def _scalar(field: descriptor.FieldDescriptor, value: str, name: str) -> Any:
    is_bool = field.type == descriptor.FieldDescriptor.TYPE_BOOL or (
        field.message_type is not None and field.message_type.full_name.endswith("BoolValue")
    )
    if is_bool:
        if value in _TRUE | _FALSE:
            return value in _TRUE
        raise _invalid(name, f"expected true or false, got {value!r}")
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM and value.lstrip("-").isdigit():
        return int(value)
    return value  # numbers stay strings: the proto3 JSON parser checks and converts them


def _mask_from_body(route: Route, payload: dict[str, Any]) -> str | None:
    request = route.request_type.DESCRIPTOR
    mask_field = request.fields_by_name.get("update_mask")
    if mask_field is None or mask_field.message_type.full_name != "google.protobuf.FieldMask":
        return None
    body = request.fields_by_name[route.body].message_type
    if body is None:
        return None
    paths = []
    for key in payload:
        field = body.fields_by_name.get(key) or _by_json_name(body, key)
        if field is None or field.name == "etag" or (route.body, field.name) in route.bound:
            continue
        behaviors = set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
        if not behaviors & _NOT_IN_MASK:
            paths.append(field.json_name)
    return ",".join(paths)


def _type_error(request: descriptor.Descriptor, text: str) -> GatewayError:
    """protobuf's "Failed to parse a field: Failed to parse b field: <why> at X.a.b." as the
    field `a.b` (proto names) and the reason."""
    names = []
    while match := _FIELD_PREFIX.match(text):
        names.append(match.group(1))
        text = text[match.end() :]
    reason = _WHERE_SUFFIX.sub("", text.rstrip(".")).rstrip(".") or "invalid value"
    while names and _resolve(request, names) is None:
        names.pop()  # protobuf names a map key or list index last: the field is before it
    path = _resolve(request, names) or []
    field = ".".join(f.name for f in path)
    return _invalid(field or "body", reason)


def _invalid(field: str, description: str, *, malformed: bool = False) -> GatewayError:
    reason = "MALFORMED_REQUEST" if malformed else ""
    violation = errors.FieldViolation(field, description)
    return from_domain(errors.InvalidArgumentError([violation], reason=reason))
