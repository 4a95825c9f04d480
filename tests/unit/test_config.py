"""The one Config: defaults, env vars and flags (the flag wins), derived defaults, and a one-line
ConfigError naming the setting for every invalid value."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from controller.config import Config, ConfigError, parse_config
from controller.server import server_options, warn_if_few_fds


def test_the_defaults() -> None:
    config = parse_config([], {})
    assert config.host == "127.0.0.1"
    assert config.port == 50051
    assert config.log_level == "info"
    assert config.log_level_number == logging.INFO
    assert config.data_dir == Path("data")
    assert config.store_url == "sqlite:///data/controller.db"
    assert config.shutdown_grace_s == 10.0
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert config.listen_address == "127.0.0.1:50051"


def test_an_empty_environment_and_the_process_environment_are_not_mixed_up() -> None:
    # environ={} means "no env vars", not "read os.environ".
    assert parse_config([], {}) == Config()


def test_the_config_is_frozen() -> None:
    config = parse_config([], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


# (env var, flag, raw value, field, parsed value)
SETTINGS: dict[str, tuple[str, str, str, str, object]] = {
    "host": ("A67_HOST", "--host", "0.0.0.0", "host", "0.0.0.0"),
    "port": ("PORT", "--port", "7000", "port", 7000),
    "log level": ("LOG_LEVEL", "--log-level", "debug", "log_level", "debug"),
    "data dir": ("A67_DATA_DIR", "--data-dir", "/var/lib/a67", "data_dir", Path("/var/lib/a67")),
    "store url": (
        "A67_STORE_URL",
        "--store-url",
        "sqlite:////tmp/x.db",
        "store_url",
        "sqlite:////tmp/x.db",
    ),
    "shutdown grace": (
        "A67_SHUTDOWN_GRACE_S",
        "--shutdown-grace-s",
        "2.5",
        "shutdown_grace_s",
        2.5,
    ),
    "max message bytes": (
        "A67_MAX_MESSAGE_BYTES",
        "--max-message-bytes",
        "65536",
        "max_message_bytes",
        65536,
    ),
    "handshake timeout": (
        "A67_HANDSHAKE_TIMEOUT_S",
        "--handshake-timeout-s",
        "0.5",
        "handshake_timeout_s",
        0.5,
    ),
}


@pytest.mark.parametrize(
    ("env", "flag", "raw", "name", "value"), SETTINGS.values(), ids=list(SETTINGS)
)
def test_a_setting_is_read_from_its_env_var(
    env: str, flag: str, raw: str, name: str, value: object
) -> None:
    assert getattr(parse_config([], {env: raw}), name) == value


@pytest.mark.parametrize(
    ("env", "flag", "raw", "name", "value"), SETTINGS.values(), ids=list(SETTINGS)
)
def test_a_setting_is_read_from_its_flag(
    env: str, flag: str, raw: str, name: str, value: object
) -> None:
    assert getattr(parse_config([flag, raw], {}), name) == value
    assert getattr(parse_config([f"{flag}={raw}"], {}), name) == value


FLAG_BEATS_ENV: dict[str, tuple[str, str, str, str, str, object]] = {
    "port": ("PORT", "1111", "--port", "2222", "port", 2222),
    "log level": ("LOG_LEVEL", "error", "--log-level", "warning", "log_level", "warning"),
    "host": ("A67_HOST", "10.0.0.1", "--host", "::1", "host", "::1"),
    "an invalid env var is not read when the flag is given": (
        "PORT",
        "not-a-number",
        "--port",
        "3333",
        "port",
        3333,
    ),
}


@pytest.mark.parametrize(
    ("env", "env_value", "flag", "flag_value", "name", "expected"),
    FLAG_BEATS_ENV.values(),
    ids=list(FLAG_BEATS_ENV),
)
def test_a_flag_beats_the_env_var(
    env: str, env_value: str, flag: str, flag_value: str, name: str, expected: object
) -> None:
    config = parse_config([flag, flag_value], {env: env_value})
    assert getattr(config, name) == expected


def test_an_empty_env_var_means_the_default() -> None:
    assert parse_config([], {"PORT": "", "LOG_LEVEL": ""}) == Config()


def test_unrelated_env_vars_are_ignored() -> None:
    assert parse_config([], {"HOME": "/root", "A67_UNKNOWN": "x"}) == Config()


def test_the_default_store_url_follows_the_data_dir() -> None:
    assert parse_config(["--data-dir", "/srv/a67"], {}).store_url == (
        "sqlite:////srv/a67/controller.db"
    )
    assert parse_config([], {"A67_DATA_DIR": "rel/dir"}).store_url == (
        "sqlite:///rel/dir/controller.db"
    )


def test_an_explicit_store_url_is_kept_whatever_the_data_dir() -> None:
    config = parse_config(["--data-dir", "/srv/a67", "--store-url", "sqlite:///other.db"], {})
    assert config.store_url == "sqlite:///other.db"


def test_a_postgresql_store_url_is_accepted() -> None:
    url = "postgresql://a67:secret@db.internal:5432/a67?sslmode=verify-full"
    assert parse_config([], {"A67_STORE_URL": url}).store_url == url


LISTEN_ADDRESSES = {
    "IPv4": ("10.1.2.3", "7000", "10.1.2.3:7000"),
    "IPv6 in brackets": ("::", "7000", "[::]:7000"),
    "localhost": ("localhost", "0", "localhost:0"),
}


@pytest.mark.parametrize(
    ("host", "port", "expected"), LISTEN_ADDRESSES.values(), ids=list(LISTEN_ADDRESSES)
)
def test_the_listen_address(host: str, port: str, expected: str) -> None:
    assert parse_config(["--host", host, "--port", port], {}).listen_address == expected


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error"])
def test_a_log_level_is_accepted_in_any_case(level: str) -> None:
    config = parse_config(["--log-level", level], {})
    assert config.log_level_number == logging.getLevelNamesMapping()[level.upper()]


# (environment, the setting the message must name)
INVALID: dict[str, tuple[dict[str, str], str]] = {
    "a port that is not a number": ({"PORT": "http"}, "PORT"),
    "a negative port": ({"PORT": "-1"}, "PORT"),
    "a port above 65535": ({"PORT": "65536"}, "PORT"),
    "a fractional port": ({"PORT": "80.5"}, "PORT"),
    "an unknown log level": ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    "the critical log level": ({"LOG_LEVEL": "critical"}, "LOG_LEVEL"),
    "a host name": ({"A67_HOST": "example.com"}, "A67_HOST"),
    "a host with a port": ({"A67_HOST": "127.0.0.1:80"}, "A67_HOST"),
    "a negative shutdown grace": ({"A67_SHUTDOWN_GRACE_S": "-1"}, "A67_SHUTDOWN_GRACE_S"),
    "a shutdown grace over an hour": ({"A67_SHUTDOWN_GRACE_S": "3601"}, "A67_SHUTDOWN_GRACE_S"),
    "a NaN shutdown grace": ({"A67_SHUTDOWN_GRACE_S": "nan"}, "A67_SHUTDOWN_GRACE_S"),
    "an infinite shutdown grace": ({"A67_SHUTDOWN_GRACE_S": "inf"}, "A67_SHUTDOWN_GRACE_S"),
    "a shutdown grace that is not a number": (
        {"A67_SHUTDOWN_GRACE_S": "ten"},
        "A67_SHUTDOWN_GRACE_S",
    ),
    "a message limit under 64 KiB": (
        {"A67_MAX_MESSAGE_BYTES": "65535"},
        "A67_MAX_MESSAGE_BYTES",
    ),
    "a message limit over 256 MiB": (
        {"A67_MAX_MESSAGE_BYTES": str(256 * 1024 * 1024 + 1)},
        "A67_MAX_MESSAGE_BYTES",
    ),
    "a message limit with a unit": ({"A67_MAX_MESSAGE_BYTES": "16MB"}, "A67_MAX_MESSAGE_BYTES"),
    "a mysql store url": ({"A67_STORE_URL": "mysql://db/a67"}, "A67_STORE_URL"),
    "a store url without a scheme": ({"A67_STORE_URL": "/tmp/a.db"}, "A67_STORE_URL"),
    "a port of 5000 digits": ({"PORT": "9" * 5000}, "PORT"),
    "a zero handshake timeout": ({"A67_HANDSHAKE_TIMEOUT_S": "0"}, "A67_HANDSHAKE_TIMEOUT_S"),
    "a handshake timeout over 2 minutes": (
        {"A67_HANDSHAKE_TIMEOUT_S": "121"},
        "A67_HANDSHAKE_TIMEOUT_S",
    ),
}


@pytest.mark.parametrize(("environ", "setting"), INVALID.values(), ids=list(INVALID))
def test_an_invalid_env_var_is_a_one_line_config_error_naming_it(
    environ: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([], environ)
    message = str(caught.value)
    assert setting in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--port", "x"), ("--shutdown-grace-s", "soon"), ("--max-message-bytes", "1e6")],
)
def test_an_invalid_flag_is_a_config_error_naming_the_flag(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_config([flag, value], {})


def test_a_value_with_a_newline_is_still_reported_on_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([], {"A67_HOST": "evil\nINFO fake log line"})
    assert "\n" not in str(caught.value)


def test_a_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_config([], {"PORT": "-5"})


FLOAT_SETTINGS = [f for f in dataclasses.fields(Config) if f.type == "float"]


@pytest.mark.parametrize("env", [f.metadata["env"] for f in FLOAT_SETTINGS])
def test_nan_is_refused_for_every_float_setting(env: str) -> None:
    with pytest.raises(ConfigError):
        parse_config([], {env: "nan"})


def test_the_handshake_timeout_defaults_to_5_s_and_reaches_grpc_in_ms() -> None:
    assert parse_config([], {}).handshake_timeout_s == 5.0
    options = dict(server_options(parse_config(["--handshake-timeout-s", "0.25"], {})))
    assert options["grpc.server_handshake_timeout_ms"] == 250


def test_a_low_open_file_limit_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "controller.server")
    warn_if_few_fds(65536)
    assert caplog.records == []

    warn_if_few_fds(1024)
    [record] = caplog.records
    assert record.fields == {"limit": 1024, "agents_at_most": 768, "fix": "ulimit -n"}  # type: ignore[attr-defined]
