"""The `automator67` command. `automator67 serve` runs the controller; `automator67 agent` runs
the reference node agent against one; `nodes`, `deployments`, `stats` and `status` operate a
running controller (controller/ctl/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller import __version__, event_loop, security_cli
from controller.agent.settings import AgentSettings, SettingsError
from controller.config import Config, ConfigError
from controller.ctl.commands import add_commands as add_operator_commands
from controller.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="automator67", description="The Automator67 controller.")
    parser.add_argument("--version", action="version", version=f"automator67 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the controller",
        description="Run the controller. Each flag can also be set by the env var shown.",
    )
    Config.add_arguments(serve)
    agent = commands.add_parser(
        "agent",
        help="run the reference node agent",
        description="Run the node agent: register this host with the controller (or reuse the "
        "node id in the state file), then stream heartbeats, reconnecting with jittered backoff "
        "after any break. SIGTERM or SIGINT closes the stream cleanly and exits 0. Each flag can "
        "also be set by the env var shown.",
    )
    AgentSettings.add_arguments(agent)
    security_cli.add_commands(commands)  # token create, keys init | rotate | reencrypt
    add_operator_commands(commands)  # nodes, deployments, stats, status
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        return security_cli.run(args)
    elif getattr(args, "handler", None):  # nodes, deployments, stats, status
        from controller.ctl.run import run

        return run(args)
    return 0


def _agent(args: argparse.Namespace) -> int:
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
