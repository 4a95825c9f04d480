"""Durable writes of small private files: key files, the agent's state file.

A file is written whole to a temporary file in the same folder (mode 0600 from its first byte),
fsynced, then put in place by one rename (or link), and the folder is fsynced so that the rename
itself survives a power loss. A reader, or a crash at any instant, sees the old file or the new
one, never a torn or half-written one; without the folder's fsync a crash right after
`keys rotate` could bring back the old key file, and the new key with it would be gone."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def write_private_file(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Puts `data` at `path` atomically and durably, with mode 0600; creates missing folders
    with mode 0700. With `overwrite=False` an existing file is left alone and FileExistsError
    is raised (two processes creating the same key: exactly one wins, the other reads it)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _create(Path(temporary), path, data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)  # gone already after a replace
    fsync_folder(folder)


def _create(temporary: Path, path: Path, data: bytes) -> None:
    """Links the complete temporary file at `path`, which must not exist."""
    try:
        os.link(temporary, path)  # FileExistsError (EEXIST) if it exists: never overwritten
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        # A file system without hard links: create exclusively and write in place instead.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())


def fsync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
