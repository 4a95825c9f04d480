"""Runs one operator command: imports its handler, connects, and turns every failure into one
line on stderr and an exit code (`failures.py`), never a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from controller.ctl.connection import ConnectionSettings
from controller.ctl.failures import CommandError, ExitCode, describe, exit_code_of

if TYPE_CHECKING:
    from automator67.client import Client

    from controller.ctl.output import Console

Handler = Callable[["Client", argparse.Namespace, "Console"], int | None]
PROG = "automator67"


def run(args: argparse.Namespace) -> int:
    try:
        settings = ConnectionSettings.load(args)
        handler = _handler(args.handler)
        from automator67.errors import ApiError

        from controller.ctl.output import Console
    except CommandError as error:
        return _fail(error.message, error.code)
    console = Console(sys.stdout, sys.stderr)
    log_sdk_warnings(sys.stderr)
    try:
        with settings.client() as client:
            return int(handler(client, args, console) or ExitCode.OK)
    except CommandError as error:
        return _fail(error.message, error.code)
    except ApiError as error:
        return _fail(describe(error), exit_code_of(error.code.name))
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # about the unflushed stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as error:  # a bug of ours: still one line, no traceback
        return _fail(f"unexpected error: {type(error).__name__}: {error}", ExitCode.ERROR)


class OneLine(logging.Formatter):
    """The SDK's log records (a watch that resumes after a broken stream) as one line, like the
    command's own errors: `automator67: watch broken; resuming (revision=12, delay_s=0.4, ...)`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = ", ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{PROG}: {record.getMessage()}" + (f" ({extra})" if extra else "")
        return " ".join(line.split())


def log_sdk_warnings(stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLine())
    logger = logging.getLogger("automator67")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _handler(name: str) -> Handler:
    module_name, function = name.split(":")
    handler: Handler = getattr(importlib.import_module(module_name), function)
    return handler


def _fail(message: str, code: ExitCode) -> int:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return int(code)
