"""Durable private files (`controller/files.py`) and every writer that uses them: the file is
fsynced before it is put in place and its folder after, so a crash keeps the new file; the mode
is 0600; a create never overwrites; a failed write leaves the old file and no temporary one."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from controller import crypto
from controller.agent.state import AgentState, save_state
from controller.auth.keys import signing_keys
from controller.config import Config
from controller.files import write_private_file


class Recorder:
    """Records the fsyncs (of files and of folders) and renames, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

        def fsync(fd: int) -> None:
            kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append(f"fsync {kind}")
            real_fsync(fd)

        def replace(src: str, dst: str) -> None:
            self.events.append("rename")
            real_replace(src, dst)

        def link(src: str, dst: str) -> None:
            self.events.append("rename")
            real_link(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "link", link)


def _no_file(folder: Path) -> None:
    pass


def _key_file(folder: Path) -> None:
    crypto.save_keys(folder / crypto.DEFAULT_KEYS_FILE, [crypto.new_key()])


def _rotate(folder: Path) -> Path:
    crypto.rotate(folder / crypto.DEFAULT_KEYS_FILE)
    return folder / crypto.DEFAULT_KEYS_FILE


def _generate_credential_key(folder: Path) -> Path:
    crypto.load_sealer(Config(data_dir=folder), generate=True)
    return folder / crypto.DEFAULT_KEYS_FILE


def _generate_signing_key(folder: Path) -> Path:
    return Path(signing_keys(Config(data_dir=folder), generate=True).source)


def _first_state(folder: Path) -> None:
    save_state(folder / "agent.json", AgentState("n-1"))


def _next_state(folder: Path) -> Path:
    save_state(folder / "agent.json", AgentState("n-2"))
    return folder / "agent.json"


# name: (prepare, then with the recorder on: write, which returns the file written)
WRITERS: dict[str, tuple[Callable[[Path], None], Callable[[Path], Path]]] = {
    "keys rotate": (_key_file, _rotate),
    "a generated credential key file": (_no_file, _generate_credential_key),
    "a generated signing key": (_no_file, _generate_signing_key),
    "the agent's state file": (_first_state, _next_state),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_each_writer_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    prepare, write = WRITERS[writer]
    prepare(tmp_path)
    recorder = Recorder(monkeypatch)

    path = write(tmp_path)

    assert recorder.events == ["fsync file", "rename", "fsync folder"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_write_replaces_the_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    path.chmod(0o644)

    write_private_file(path, b"new")

    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_private_file(path, b"first", overwrite=False)

    with pytest.raises(FileExistsError):
        write_private_file(path, b"second", overwrite=False)

    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_create_works_where_hard_links_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "f"

    write_private_file(path, b"data", overwrite=False)

    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private_file(path, b"again", overwrite=False)


def test_missing_folders_are_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f"

    write_private_file(path, b"x")

    assert path.read_bytes() == b"x"
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_a_failed_write_keeps_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    write_private_file(path, b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_private_file(path, b"new")

    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
