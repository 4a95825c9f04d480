"""Every command's --help works (a literal % in a setting's help once crashed `serve --help`)."""

from __future__ import annotations

import pytest

from controller.cli import main

COMMANDS = [
    [],
    ["serve"],
    ["agent"],
    ["token"],
    ["token", "create"],
    ["keys"],
    ["keys", "init"],
    ["keys", "rotate"],
    ["keys", "reencrypt"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "automator67")
def test_help_prints_and_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    assert "usage: " in capsys.readouterr().out
