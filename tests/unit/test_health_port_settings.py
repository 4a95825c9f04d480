"""`--health-port` / `A67_HEALTH_PORT`: off by default, and a port of its own, different from
every other port the controller binds (tests/e2e/test_health_port.py runs it)."""

from __future__ import annotations

import pytest

from controller.config import ConfigError, parse_config


def test_the_health_port_is_off_by_default_and_set_by_flag_or_env() -> None:
    assert parse_config([], {}).health_port == 0
    assert parse_config([], {"A67_HEALTH_PORT": "50052"}).health_port == 50052
    assert parse_config(["--health-port", "8086"], {"A67_HEALTH_PORT": "50052"}).health_port == 8086


def test_it_may_sit_beside_every_other_port() -> None:
    argv = ["--port", "50051", "--metrics-port", "9464", "--http-port", "8080"]
    assert parse_config([*argv, "--health-port", "50052"], {}).health_port == 50052
    # PORT 0 picks a free port at start: any health port differs from it.
    assert parse_config(["--port", "0", "--health-port", "50052"], {}).health_port == 50052


@pytest.mark.parametrize(
    "argv",
    [
        ["--health-port", "70000"],
        ["--health-port", "-1"],
        ["--health-port", "50051"],  # the gRPC port (the default PORT)
        ["--port", "7000", "--health-port", "7000"],
        ["--health-port", "9464", "--metrics-port", "9464"],
        ["--health-port", "8080", "--http-port", "8080"],
    ],
)
def test_a_bad_health_port_is_refused_naming_it(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="A67_HEALTH_PORT"):
        parse_config(argv, {})
