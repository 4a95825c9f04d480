"""`--http-port` / `A67_HTTP_PORT`: off by default, a port of its own, and TLS from the gRPC
port's files (the e2e tests check TLS and mTLS on the wire)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, parse_config
from controller.tls import http_ssl_context


def test_the_http_port_is_off_by_default_and_set_by_flag_or_env() -> None:
    assert parse_config([], {}).http_port == 0
    assert parse_config([], {"A67_HTTP_PORT": "3000"}).http_port == 3000
    assert parse_config(["--http-port", "8080"], {"A67_HTTP_PORT": "3000"}).http_port == 8080


@pytest.mark.parametrize(
    "argv",
    [
        ["--http-port", "70000"],
        ["--http-port", "-1"],
        ["--http-port", "50051"],  # the gRPC port
        ["--http-port", "9464", "--metrics-port", "9464"],
    ],
)
def test_a_bad_http_port_is_refused_naming_it(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="A67_HTTP_PORT"):
        parse_config(argv, {})


def test_no_tls_files_no_tls_and_unreadable_ones_name_the_setting(tmp_path: Path) -> None:
    assert http_ssl_context(parse_config([], {})) is None
    missing = str(tmp_path / "missing.pem")
    config = parse_config(["--tls-cert-file", missing, "--tls-key-file", missing], {})
    with pytest.raises(ConfigError, match="A67_HTTP_PORT"):
        http_ssl_context(config)
