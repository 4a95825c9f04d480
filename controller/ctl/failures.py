"""How an operator command fails: one line on stderr and an exit code a script can branch on.

Exit codes (kubectl returns 1 for every failure and nomad 1 or 2; like curl and grpcurl, these
split failures by what a script would do next, and keep 2 for usage errors as argparse does):

    0  success
    1  any other failure: INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, CANCELLED
    2  usage: a bad flag or file, an ambiguous id prefix, INVALID_ARGUMENT, OUT_OF_RANGE
    3  not found: NOT_FOUND, or no resource matches the id prefix or name given
    4  conflict: ABORTED (a stale --etag), ALREADY_EXISTS, FAILED_PRECONDITION
    5  try again later: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, a --wait --timeout
    6  not allowed: UNAUTHENTICATED (no or a bad token), PERMISSION_DENIED
    7  --wait: the deployment cannot get there (FAILED, or no node fits its replicas)
  130  interrupted (Ctrl-C), as a shell reports SIGINT

Imports nothing of grpc: a usage error must not pay for it."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from automator67.errors import ApiError


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNAVAILABLE = 5
    DENIED = 6
    CANNOT_RUN = 7
    INTERRUPTED = 130


# gRPC status code names -> exit codes; any code not here is ERROR.
_BY_STATUS: dict[str, ExitCode] = {
    "INVALID_ARGUMENT": ExitCode.USAGE,
    "OUT_OF_RANGE": ExitCode.USAGE,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "ABORTED": ExitCode.CONFLICT,
    "ALREADY_EXISTS": ExitCode.CONFLICT,
    "FAILED_PRECONDITION": ExitCode.CONFLICT,
    "UNAVAILABLE": ExitCode.UNAVAILABLE,
    "DEADLINE_EXCEEDED": ExitCode.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": ExitCode.UNAVAILABLE,
    "UNAUTHENTICATED": ExitCode.DENIED,
    "PERMISSION_DENIED": ExitCode.DENIED,
}


class CommandError(Exception):
    """A failure found by the command itself (not by the controller): `message` is the line
    printed, `code` the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage(message: str) -> CommandError:
    return CommandError(message, ExitCode.USAGE)


def exit_code_of(status_name: str) -> ExitCode:
    """The exit code of a gRPC status code, by name (e.g. "NOT_FOUND")."""
    return _BY_STATUS.get(status_name, ExitCode.ERROR)


def describe(error: ApiError) -> str:
    """One line: the status, the ErrorInfo reason, the message, then the fields at fault and
    any etag the controller holds now, e.g.
    `ABORTED (ETAG_MISMATCH): deployment ... changed since etag 4 (now 9) [current etag 9]`."""
    reason = f" ({error.reason})" if error.reason else ""
    message = " ".join(error.message.split()) or "(no message)"
    extras = [f"{v.field}: {v.description}" for v in error.field_violations]
    if "current_etag" in error.metadata:
        extras.append(f"current etag {error.metadata['current_etag']}")
    tail = f" [{'; '.join(extras)}]" if extras else ""
    return f"{error.code.name}{reason}: {message}{tail}"
