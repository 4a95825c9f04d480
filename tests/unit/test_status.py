"""The one table from domain errors to gRPC status codes, and the details sent with them."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from controller import errors
from controller.api.status import code_of, internal_status, to_status

DETAILS_KEY = "grpc-status-details-bin"

CODES: dict[str, tuple[errors.ControllerError, grpc.StatusCode]] = {
    "invalid argument": (
        errors.InvalidArgumentError.single("node.provider", "is required"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "not found": (errors.NotFoundError("node", "abc"), grpc.StatusCode.NOT_FOUND),
    "already exists": (errors.AlreadyExistsError("name taken"), grpc.StatusCode.ALREADY_EXISTS),
    "conflict is aborted": (errors.ConflictError("etag moved"), grpc.StatusCode.ABORTED),
    "failed precondition": (
        errors.FailedPreconditionError("deleted"),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "unavailable": (errors.UnavailableError("store closed"), grpc.StatusCode.UNAVAILABLE),
    "resource exhausted": (
        errors.ResourceExhaustedError("too many streams"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    "an unmapped domain error is internal": (
        errors.ControllerError("surprise"),
        grpc.StatusCode.INTERNAL,
    ),
}


@pytest.mark.parametrize(("error", "code"), CODES.values(), ids=list(CODES))
def test_each_domain_error_maps_to_its_code(
    error: errors.ControllerError, code: grpc.StatusCode
) -> None:
    assert code_of(error) is code
    status = to_status(error)
    assert status.code is code
    assert status.details == str(error)


def test_a_subclass_maps_to_the_code_of_its_parent() -> None:
    class NodeGone(errors.NotFoundError):
        pass

    assert code_of(NodeGone("node", "x")) is grpc.StatusCode.NOT_FOUND


def test_every_error_class_in_the_domain_has_a_code() -> None:
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ControllerError)
        and cls is not errors.ControllerError
    ]
    unmapped = [
        cls.__name__ for cls in classes if code_of(cls.__new__(cls)) is grpc.StatusCode.INTERNAL
    ]
    assert unmapped == []


def decode(status: grpc.Status) -> status_pb2.Status:
    [value] = [v for k, v in status.trailing_metadata if k == DETAILS_KEY]
    assert isinstance(value, bytes)
    return status_pb2.Status.FromString(value)


def test_an_invalid_argument_carries_a_bad_request_with_every_violation() -> None:
    error = errors.InvalidArgumentError(
        [
            errors.FieldViolation("node.provider", "is required"),
            errors.FieldViolation("node.capabilities.cpu_cores", "must be greater than 0"),
        ]
    )
    rich = decode(to_status(error))

    assert rich.code == code_pb2.INVALID_ARGUMENT
    assert rich.message == str(error)
    info, detail = rich.details
    assert error_info(info).reason == "INVALID_FIELD"
    assert detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
    bad_request = error_details_pb2.BadRequest()
    detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("node.provider", "is required"),
        ("node.capabilities.cpu_cores", "must be greater than 0"),
    ]


def error_info(detail: Any) -> error_details_pb2.ErrorInfo:
    assert detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    assert info.domain == "automator67.io"
    return info


@pytest.mark.parametrize(
    ("error", "reason", "metadata"),
    [
        (errors.NotFoundError("node", "x"), "NODE_NOT_FOUND", {"node_id": "x"}),
        (errors.NotFoundError("deployment", "d"), "DEPLOYMENT_NOT_FOUND", {"deployment_id": "d"}),
        (errors.ConflictError("moved"), "ETAG_MISMATCH", {}),
        (
            errors.ConflictError("moved", metadata={"current_etag": "7"}),
            "ETAG_MISMATCH",
            {"current_etag": "7"},
        ),
        (
            errors.AlreadyExistsError("taken", reason="DEPLOYMENT_NAME_TAKEN"),
            "DEPLOYMENT_NAME_TAKEN",
            {},
        ),
        (errors.UnauthenticatedError("no"), "TOKEN_INVALID", {}),
        (errors.PermissionDeniedError("no"), "ROLE_NOT_PERMITTED", {}),
        (errors.ResourceExhaustedError("many"), "LIMIT_EXCEEDED", {}),
        (errors.UnavailableError("later"), "UNAVAILABLE", {}),
        (errors.FailedPreconditionError("not now"), "FAILED_PRECONDITION", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_other_errors_carry_only_their_error_info(
    error: errors.ControllerError, reason: str, metadata: dict[str, str]
) -> None:
    rich = decode(to_status(error))
    assert rich.code == code_of(error).value[0]
    assert rich.message == str(error)
    [detail] = rich.details
    info = error_info(detail)
    assert info.reason == reason
    assert dict(info.metadata) == metadata


def test_every_reason_is_upper_snake_case() -> None:
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ControllerError)
    ]
    for cls in classes:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", cls.default_reason), cls


def test_the_status_message_is_the_error_message() -> None:
    status = to_status(errors.NotFoundError("deployment", "d-1"))
    assert status.details == "deployment 'd-1' not found"


def test_an_internal_status_names_the_request_id_and_nothing_else() -> None:
    status = internal_status("req-42")
    assert status.code is grpc.StatusCode.INTERNAL
    assert "req-42" in status.details
    rich = decode(status)
    assert rich.code == code_pb2.INTERNAL
    assert "req-42" in rich.message
    [detail] = rich.details
    info = error_info(detail)
    assert (info.reason, dict(info.metadata)) == ("INTERNAL", {"request_id": "req-42"})


# Every status stays small enough for a grpc client (8 KB of trailers), whatever the error.
LIMIT_BYTES = 8 * 1024


def trailer_bytes(status: grpc.Status) -> int:
    """The status's size on the wire: the percent-encoded message and the base64 details."""
    message = status.details.encode()
    encoded = sum(1 if 0x20 <= b <= 0x7E and b != ord("%") else 3 for b in message)
    details = sum(len(k) + len(v) * 4 // 3 for k, v in status.trailing_metadata)
    return len("grpc-message") + encoded + details


HUGE_ERRORS: dict[str, errors.ControllerError] = {
    "10,000 violations": errors.InvalidArgumentError(
        [errors.FieldViolation(f"env[{i}]", "name must match [A-Z_]") for i in range(10_000)]
    ),
    "one violation with a 100 KB field path": errors.InvalidArgumentError.single(
        "labels[" + "k" * 100_000 + "]", "bad key"
    ),
    "one violation with a 100 KB non-ASCII description": errors.InvalidArgumentError.single(
        "update_mask", "cannot update " + "é" * 100_000
    ),
    "64 violations of 300 non-ASCII characters each": errors.InvalidArgumentError(
        [errors.FieldViolation("labels['" + "é" * 300 + "']", "ü" * 300) for _ in range(64)]
    ),
    "a not-found with a 100 KB id": errors.NotFoundError("node", "n" * 100_000),
    "a conflict with a 100 KB non-ASCII message": errors.ConflictError("€" * 100_000),
}


@pytest.mark.parametrize("error", HUGE_ERRORS.values(), ids=list(HUGE_ERRORS))
def test_every_status_stays_under_8_kb(error: errors.ControllerError) -> None:
    status = to_status(error)

    assert status.code is code_of(error)
    assert trailer_bytes(status) < LIMIT_BYTES
    assert decode(status).message == status.details


def test_a_long_list_of_violations_is_listed_in_part_and_counted() -> None:
    error = errors.InvalidArgumentError(
        [errors.FieldViolation(f"env[{i}]", "name must match [A-Z_]") for i in range(256)]
    )
    status = to_status(error)

    listed = str(status.details).count("env[")
    assert 1 <= listed < 256
    assert status.details.endswith(f"; and {256 - listed} more")
    bad_request = error_details_pb2.BadRequest()
    _, detail = decode(status).details
    detail.Unpack(bad_request)
    assert 1 <= len(bad_request.field_violations) <= 8
    assert bad_request.field_violations[0].field == "env[0]"


def test_user_text_is_clipped_in_the_message_and_the_details() -> None:
    error = errors.InvalidArgumentError.single("update_mask", "cannot update " + "x" * 20_000)
    status = to_status(error)

    assert len(status.details) < 1024
    assert status.details.startswith("update_mask: cannot update xxx")
    assert status.details.endswith("...")
    bad_request = error_details_pb2.BadRequest()
    _, detail = decode(status).details
    detail.Unpack(bad_request)
    [violation] = bad_request.field_violations
    assert violation.field == "update_mask"
    assert violation.description.endswith("...") and len(violation.description) < 256


def test_clip_never_splits_a_character() -> None:
    assert errors.clip("é" * 10, 8) == "éé..."
    assert errors.clip("short", 8) == "short"
