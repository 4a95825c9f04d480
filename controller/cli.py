"""The `automator67` command. `automator67 serve` runs the controller; `automator67 agent` runs
the reference node agent against one; `nodes`, `deployments`, `stats` and `status` operate a
running controller (controller/ctl/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from controller import __version__, event_loop
from controller.config import Config, ConfigError
from controller.logs import setup_logging

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_serve(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the controller",
        description="Run the controller. Each flag can also be set by the env var shown.",
    )
    Config.add_arguments(serve)


def _add_agent(commands: Commands) -> None:
    from controller.agent.settings import AgentSettings

    agent = commands.add_parser(
        "agent",
        help="run the reference node agent",
        description="Run the node agent: register this host with the controller (or reuse the "
        "node id in the state file), then stream heartbeats, reconnecting with jittered backoff "
        "after any break. SIGTERM or SIGINT closes the stream cleanly and exits 0. Each flag can "
        "also be set by the env var shown.",
    )
    AgentSettings.add_arguments(agent)


def _add_security(commands: Commands) -> None:
    from controller import security_cli

    security_cli.add_commands(commands)  # token create, keys init | rotate | reencrypt


def _add_operator(commands: Commands) -> None:
    from controller.ctl.commands import add_commands

    add_commands(commands)  # nodes, deployments, stats, status


# The commands, in the order of `--help`, each with the function that adds its parser. Only the
# parser of the command being run is built (with its module's import): `serve` then imports
# neither the agent's settings, nor the operator commands, nor the key commands (~5 ms of a
# start, and their memory for the controller's whole life); `nodes list` not the key commands.
COMMANDS: tuple[tuple[tuple[str, ...], Callable[[Commands], None]], ...] = (
    (("serve",), _add_serve),
    (("agent",), _add_agent),
    (("token", "keys"), _add_security),
    (("nodes", "deployments", "stats", "status"), _add_operator),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of `command`'s arguments, or of every command's when it is None or not a
    command (for `automator67 --help` and for the error that lists the commands)."""
    parser = argparse.ArgumentParser(prog="automator67", description="The Automator67 controller.")
    parser.add_argument("--version", action="version", version=f"automator67 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    known = any(command in names for names, _ in COMMANDS)
    for names, add in COMMANDS:
        if not known or command in names:
            add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word: the top level has no option that takes a value.
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    if args.command == "serve":
        try:
            config = Config.load(args)
        except ConfigError as exc:
            print(f"automator67: invalid configuration: {exc}", file=sys.stderr)
            return 2
        setup_logging(config.log_level)
        from controller.errors import UnavailableError
        from controller.server import serve  # grpc is imported only when serving
        from controller.store.base import StoreInUseError

        try:
            event_loop.run(serve(config), event_loop.resolve(config.event_loop))
        except ConfigError as exc:  # a key or certificate file that cannot be used
            print(f"automator67: invalid configuration: {exc}", file=sys.stderr)
            return 2
        except (StoreInUseError, UnavailableError) as exc:  # another replica, no database
            print(f"automator67: {exc}", file=sys.stderr)
            return 2
    elif args.command == "agent":
        return _agent(args)
    elif args.command in ("token", "keys"):
        from controller import security_cli

        return security_cli.run(args)
    elif getattr(args, "handler", None):  # nodes, deployments, stats, status
        from controller.ctl.run import run

        return run(args)
    return 0


def _agent(args: argparse.Namespace) -> int:
    from controller.agent.settings import AgentSettings, SettingsError

    try:
        settings = AgentSettings.load(args)
    except SettingsError as exc:
        print(f"automator67 agent: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    from controller.agent.runner import run_agent  # grpc is imported only when running

    loop = event_loop.resolve(settings.event_loop, "A67_AGENT_EVENT_LOOP")
    return event_loop.run(run_agent(settings), loop)


if __name__ == "__main__":
    sys.exit(main())
