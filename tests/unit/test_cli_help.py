"""Every command's --help works (a literal % in a setting's help once crashed `serve --help`).
The commands are found by walking the parser, so a new subcommand is covered once it exists."""

from __future__ import annotations

import argparse

import pytest

from controller.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command path of `parser`: [], ["serve"], ["nodes"], ["nodes", "list"], ..."""
    found = [list(path)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


COMMANDS = commands(build_parser())


def test_the_walk_finds_the_operator_commands() -> None:
    for expected in (
        ["serve"],
        ["agent"],
        ["token", "create"],
        ["keys", "reencrypt"],
        ["nodes", "watch"],
        ["deployments", "scale"],
        ["stats"],
        ["status"],
    ):
        assert expected in COMMANDS, COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "automator67")
def test_help_prints_and_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    assert "usage: " in capsys.readouterr().out
