"""How the agent runs replicas: one `Driver` (base.py has the contract), chosen by name.

    simulated.py  pretends: STARTING, RUNNING shortly after, STOPPED when asked (the default)
    exec.py       runs the deployment's command as a local process group

Drivers are imported only when made, so that settings can name them without loading them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.agent.drivers.base import Driver


def _simulated() -> Driver:
    from controller.agent.drivers.simulated import SimulatedDriver

    return SimulatedDriver()


def _exec() -> Driver:
    from controller.agent.drivers.exec import ExecDriver

    return ExecDriver()


DRIVERS: dict[str, Callable[[], Driver]] = {"simulated": _simulated, "exec": _exec}


def make_driver(name: str) -> Driver:
    """The driver called `name`; raises KeyError for a name not in DRIVERS."""
    return DRIVERS[name]()
