"""HTTP routes read from the `google.api.http` annotations of the services' descriptors.

Nothing here names an RPC: every route is one HttpRule (and its `additional_bindings`) found on
a method at start-up, so an annotated RPC is served over HTTP as soon as it exists. A few
services we do not own (grpc.health.v1) get their rule from `EXTRA_RULES`, as grpc-gateway takes
them from its API configuration file.

Path templates follow google/api/http.proto:

    Template = "/" Segments [ ":" Verb ] ;   Segment = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;

Where several templates match one path, the more specific one wins: segment by segment a
literal beats a variable, which beats `**` (so `GET /api/v1/nodes/stats` is GetNodeStats, not
GetNode of a node called "stats"), as in most HTTP routers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message_factory

LITERAL, SINGLE, MULTI = 0, 1, 2  # segment kinds, in order of precedence


class TemplateError(ValueError):
    """A path template this gateway cannot serve (an error in a .proto file)."""


@dataclass(frozen=True)
class Variable:
    field_path: tuple[str, ...]  # proto field names, e.g. ("deployment", "id")
    start: int  # first segment it covers
    end: int  # one past the last segment (-1: up to the end, for `**`)


@dataclass(frozen=True)
class Template:
    text: str
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or "")
    variables: tuple[Variable, ...]
    verb: str

    def match(self, path: str) -> dict[tuple[str, ...], str] | None:
        """The variables' values if `path` (raw, still percent-encoded) matches, else None."""
        if self.verb:
            suffix = ":" + self.verb
            if not path.endswith(suffix):
                return None
            path = path[: -len(suffix)]
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        multi = bool(self.segments) and self.segments[-1][0] == MULTI
        fixed = len(self.segments) - (1 if multi else 0)
        if len(parts) < fixed or (not multi and len(parts) != fixed):
            return None
        for (kind, text), part in zip(self.segments[:fixed], parts, strict=False):
            if kind == LITERAL and part != text:
                return None
            if kind == SINGLE and not part:
                return None
        values = {}
        for var in self.variables:
            covered = parts[var.start :] if var.end == -1 else parts[var.start : var.end]
            values[var.field_path] = "/".join(unquote(p) for p in covered)
        return values

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts before the templates it should win over (smaller is more specific)."""
        return (0 if self.verb else 1, *(kind for kind, _ in self.segments))


@dataclass(frozen=True)
class Route:
    http_method: str  # GET, POST, ...
    template: Template
    body: str  # "", "*" or a request field name
    response_body: str  # "" or a response field name
    rpc: str  # full gRPC method path: /automator67.v1.NodeService/GetNode
    request_type: Any  # the generated message class
    response_type: Any
    server_streaming: bool
    bound: frozenset[tuple[str, ...]] = field(default_factory=frozenset)  # path-variable fields


def parse_template(text: str) -> Template:
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a path template starts with /")
    body, verb = text[1:], ""
    tail = max(body.rfind("/"), body.rfind("}"))
    colon = body.find(":", tail + 1)
    if colon != -1:
        body, verb = body[:colon], body[colon + 1 :]
    segments: list[tuple[int, str]] = []
    variables: list[Variable] = []
    for token in _split(body):
        if token.startswith("{"):
            if not token.endswith("}"):
                raise TemplateError(f"{text!r}: unclosed variable")
            name, _, pattern = token[1:-1].partition("=")
            start = len(segments)
            segments.extend(_segments(pattern or "*", text))
            end = -1 if segments[-1][0] == MULTI else len(segments)
            variables.append(Variable(tuple(name.split(".")), start, end))
        else:
            segments.extend(_segments(token, text))
    if any(kind == MULTI for kind, _ in segments[:-1]):
        raise TemplateError(f"{text!r}: ** may only be the last segment")
    return Template(text, tuple(segments), tuple(variables), verb)


def _split(body: str) -> list[str]:
    """Splits at the slashes outside braces: "a/{b=c/*}/d" -> ["a", "{b=c/*}", "d"]."""
    tokens, depth, current = [], 0, ""
    for char in body:
        depth += char == "{"
        depth -= char == "}"
        if char == "/" and depth == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    return tokens


def _segments(pattern: str, text: str) -> list[tuple[int, str]]:
    found = []
    for part in pattern.split("/"):
        if not part or "{" in part or "}" in part:
            raise TemplateError(f"{text!r}: empty or malformed segment")
        kind = {"*": SINGLE, "**": MULTI}.get(part, LITERAL)
        found.append((kind, part if kind == LITERAL else ""))
    return found


def rule_of(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def routes_of(
    services: Iterable[descriptor.ServiceDescriptor],
    extra_rules: Mapping[str, http_pb2.HttpRule] | None = None,
) -> list[Route]:
    """Every route of `services`' annotated methods (and of `extra_rules`, keyed by full gRPC
    method path), most specific first."""
    routes = []
    for service in services:
        for method in service.methods:
            rpc = f"/{service.full_name}/{method.name}"
            rule = (extra_rules or {}).get(rpc) or rule_of(method)
            if rule is None:
                continue
            for one in (rule, *rule.additional_bindings):
                routes.append(_route(one, method, rpc))
    return sorted(routes, key=lambda r: r.template.specificity)


def _route(rule: http_pb2.HttpRule, method: descriptor.MethodDescriptor, rpc: str) -> Route:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise TemplateError(f"{rpc}: the http rule names no method and path")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = pattern.upper(), getattr(rule, pattern)
    template = parse_template(path)
    request = method.input_type
    for var in template.variables:
        _field_at(request, var.field_path, rpc)
    if rule.body not in ("", "*"):
        _field_at(request, (rule.body,), rpc)
    return Route(
        http_method=verb,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        rpc=rpc,
        request_type=message_factory.GetMessageClass(request),
        response_type=message_factory.GetMessageClass(method.output_type),
        server_streaming=method.server_streaming,
        bound=frozenset(var.field_path for var in template.variables),
    )


def _field_at(
    message: descriptor.Descriptor | None, path: tuple[str, ...], rpc: str
) -> descriptor.FieldDescriptor:
    found = None
    for name in path:
        if message is None or name not in message.fields_by_name:
            raise TemplateError(f"{rpc}: the request has no field {'.'.join(path)}")
        found = message.fields_by_name[name]
        message = found.message_type
    assert found is not None
    return found


class NoRoute(Exception):
    """No template matches the path (404)."""


class WrongMethod(Exception):
    """Templates match the path, for other methods (405); `allowed` lists them."""

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: r.template.specificity)

    def match(self, http_method: str, raw_path: str) -> tuple[Route, dict[tuple[str, ...], str]]:
        """The most specific route for the method and path. Raises NoRoute or WrongMethod."""
        allowed: list[str] = []
        for route in self.routes:
            values = route.template.match(raw_path)
            if values is None:
                continue
            if route.http_method == http_method:
                return route, values
            if route.http_method not in allowed:
                allowed.append(route.http_method)
        if allowed:
            raise WrongMethod(allowed)
        raise NoRoute(raw_path)
