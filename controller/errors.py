"""The domain's errors. Layers below the API raise these; `api/status.py` maps them to codes.

Every error has a `reason`: a stable UPPER_SNAKE_CASE name that clients branch on (sent as
`google.rpc.ErrorInfo.reason`; messages are for people and may change), and `metadata` that a
client can act on (the current etag of a stale-etag conflict, the limit that was reached). A
class names its usual reason; a raise site names a more precise one where there is one. The
README lists every reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


class ControllerError(Exception):
    """Base of every error the domain raises on purpose. The message is safe to show to clients."""

    default_reason: ClassVar[str] = "ERROR"

    def __init__(
        self, message: str = "", *, reason: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is the request path (e.g. `node.capabilities.cpu_cores`)."""

    field: str
    description: str


# An error's message reaches the client in a trailer, which grpc clients cap at 8 KB with the
# status details: so a message lists violations up to a budget and counts the rest, and clips
# each one (field paths and descriptions may echo the caller's text). `api/status.py` bounds
# the whole status again, for every error.
MESSAGE_BUDGET_BYTES = 512
FIELD_LIMIT_BYTES = 96
DESCRIPTION_LIMIT_BYTES = 160


def clip(text: str, limit_bytes: int) -> str:
    """`text` cut to at most `limit_bytes` UTF-8 bytes, ending in "..." when cut."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit_bytes:
        return text
    return data[: max(0, limit_bytes - 3)].decode("utf-8", "ignore") + "..."


def summary(violations: list[FieldViolation]) -> str:
    """The violations as `field: description; ...`, as many as fit the budget, then how many
    more there are."""
    parts: list[str] = []
    used = 0
    for v in violations:
        part = f"{clip(v.field, FIELD_LIMIT_BYTES)}: {clip(v.description, DESCRIPTION_LIMIT_BYTES)}"
        size = len(part.encode("utf-8", "surrogatepass")) + 2
        if parts and used + size > MESSAGE_BUDGET_BYTES:
            break
        parts.append(part)
        used += size
    left_out = len(violations) - len(parts)
    return "; ".join(parts) + (f"; and {left_out} more" if left_out else "")


class InvalidArgumentError(ControllerError):
    """The request is malformed; `violations` names every bad field. The message summarizes
    them (bounded, see `summary`) unless one is given."""

    default_reason = "INVALID_FIELD"

    def __init__(
        self, violations: list[FieldViolation], message: str | None = None, *, reason: str = ""
    ) -> None:
        self.violations = violations
        super().__init__(summary(violations) if message is None else message, reason=reason)

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgumentError:
        return cls([FieldViolation(field, description)])


class NotFoundError(ControllerError):
    """The named resource does not exist."""

    def __init__(self, kind: str, resource_id: str) -> None:
        self.kind = kind
        self.resource_id = resource_id
        super().__init__(
            f"{kind} {resource_id!r} not found",
            reason=f"{kind.upper()}_NOT_FOUND",
            metadata={f"{kind}_id": resource_id},
        )


class AlreadyExistsError(ControllerError):
    """A resource with the same unique key exists."""

    default_reason = "ALREADY_EXISTS"


class ConflictError(ControllerError):
    """An optimistic-concurrency check failed: the resource changed since the caller read it."""

    default_reason = "ETAG_MISMATCH"


class FailedPreconditionError(ControllerError):
    """The system is not in a state in which the operation can run."""

    default_reason = "FAILED_PRECONDITION"


class FencedError(FailedPreconditionError):
    """A write only the leader may make came from a replica that no longer holds the lease (a
    newer leader took over, or its lease ran out while it was frozen): refused in the store's
    transaction. The replica steps down."""

    default_reason = "NOT_LEADER"


class UnavailableError(ControllerError):
    """The controller cannot serve the request now (e.g. the store is closed); retry later."""

    default_reason = "UNAVAILABLE"


class ResourceExhaustedError(ControllerError):
    """A limit was reached (a rate, a size, a count); the message names it."""

    default_reason = "LIMIT_EXCEEDED"


class UnauthenticatedError(ControllerError):
    """No valid credentials: a missing, malformed, expired or forged token. The message says no
    more than that; the reason is logged on the server."""

    default_reason = "TOKEN_INVALID"


class PermissionDeniedError(ControllerError):
    """Valid credentials whose role (or node) may not do this."""

    default_reason = "ROLE_NOT_PERMITTED"
