"""The domain's errors. Layers below the API raise these; `api/status.py` maps them to codes."""

from __future__ import annotations

from dataclasses import dataclass


class ControllerError(Exception):
    """Base of every error the domain raises on purpose. The message is safe to show to clients."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is the request path (e.g. `node.capabilities.cpu_cores`)."""

    field: str
    description: str


class InvalidArgumentError(ControllerError):
    """The request is malformed; `violations` names every bad field."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgumentError:
        return cls([FieldViolation(field, description)])


class NotFoundError(ControllerError):
    """The named resource does not exist."""

    def __init__(self, kind: str, resource_id: str) -> None:
        self.kind = kind
        self.resource_id = resource_id
        super().__init__(f"{kind} {resource_id!r} not found")


class AlreadyExistsError(ControllerError):
    """A resource with the same unique key exists."""


class ConflictError(ControllerError):
    """An optimistic-concurrency check failed: the resource changed since the caller read it."""


class FailedPreconditionError(ControllerError):
    """The system is not in a state in which the operation can run."""


class UnavailableError(ControllerError):
    """The controller cannot serve the request now (e.g. the store is closed); retry later."""


class ResourceExhaustedError(ControllerError):
    """A limit was reached (a rate, a size, a count); the message names it."""


class UnauthenticatedError(ControllerError):
    """No valid credentials: a missing, malformed, expired or forged token. The message says no
    more than that; the reason is logged on the server."""


class PermissionDeniedError(ControllerError):
    """Valid credentials whose role (or node) may not do this."""
