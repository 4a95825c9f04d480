"""The agent's settings: flags, then `A67_AGENT_*` env vars, then defaults (this host's)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import psutil
import pytest

from controller.agent.settings import AgentSettings, SettingsError, parse_settings
from controller.cli import build_parser

CONTROLLER = ["--controller", "10.0.0.5:50051"]


def test_defaults_describe_this_host() -> None:
    settings = parse_settings(CONTROLLER, environ={})

    assert settings.controller == "10.0.0.5:50051"
    assert settings.state_file == Path("agent-state.json")
    assert settings.provider == "bare-metal"
    assert settings.endpoint == socket.gethostname()
    assert settings.cpu_cores == psutil.cpu_count()
    assert settings.memory_gb == pytest.approx(psutil.virtual_memory().total / 1024**3, abs=0.01)
    assert settings.disk_gb == pytest.approx(psutil.disk_usage("/").total / 1024**3, abs=0.01)
    assert (settings.backoff_base_s, settings.backoff_max_s) == (0.5, 15.0)
    assert settings.driver == "simulated"


def test_every_setting_has_a_flag_and_an_env_var() -> None:
    environ = {
        "A67_AGENT_CONTROLLER": "c:1",
        "A67_AGENT_STATE_FILE": "/var/lib/a67/state.json",
        "A67_AGENT_PROVIDER": "fly",
        "A67_AGENT_ENDPOINT": "https://fly.example",
        "A67_AGENT_REGION": "eu-west-1",
        "A67_AGENT_LABELS": "tier=gpu, zone=a",
        "A67_AGENT_CPU_CORES": "2.5",
        "A67_AGENT_MEMORY_GB": "3",
        "A67_AGENT_DISK_GB": "0.5",
        "A67_AGENT_DRIVER": "exec",
        "A67_AGENT_BACKOFF_BASE_S": "1",
        "A67_AGENT_BACKOFF_MAX_S": "60",
        "A67_AGENT_RPC_TIMEOUT_S": "3",
        "A67_AGENT_LOG_LEVEL": "debug",
        "A67_AGENT_EVENT_LOOP": "asyncio",
        "A67_AGENT_TOKEN": "eyJ.a.b",
        "A67_AGENT_TLS_CA_FILE": "/etc/a67/ca.pem",
        "A67_AGENT_TLS_CERT_FILE": "/etc/a67/agent.pem",
        "A67_AGENT_TLS_KEY_FILE": "/etc/a67/agent-key.pem",
    }
    assert len(environ) == len(dataclasses.fields(AgentSettings))

    settings = parse_settings([], environ)

    assert settings == AgentSettings(
        controller="c:1",
        state_file=Path("/var/lib/a67/state.json"),
        provider="fly",
        endpoint="https://fly.example",
        region="eu-west-1",
        labels=(("tier", "gpu"), ("zone", "a")),
        cpu_cores=2.5,
        memory_gb=3.0,
        disk_gb=0.5,
        driver="exec",
        backoff_base_s=1.0,
        backoff_max_s=60.0,
        rpc_timeout_s=3.0,
        log_level="debug",
        event_loop="asyncio",
        token="eyJ.a.b",
        tls_ca_file="/etc/a67/ca.pem",
        tls_cert_file="/etc/a67/agent.pem",
        tls_key_file="/etc/a67/agent-key.pem",
    )
    assert "eyJ" not in repr(settings)  # the token never shows in a log line
    assert settings.labels_map == {"tier": "gpu", "zone": "a"}


def test_a_flag_wins_over_its_env_var() -> None:
    settings = parse_settings(
        [*CONTROLLER, "--region", "us-east-1"], {"A67_AGENT_REGION": "eu-west-1"}
    )

    assert settings.region == "us-east-1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([], "--controller", id="no controller"),
        pytest.param([*CONTROLLER, "--cpu-cores", "-1"], "CPU_CORES", id="negative cores"),
        pytest.param([*CONTROLLER, "--memory-gb", "nan"], "finite", id="memory not a number"),
        pytest.param([*CONTROLLER, "--cpu-cores", "many"], "--cpu-cores", id="cores not a number"),
        pytest.param([*CONTROLLER, "--labels", "gpu"], "KEY=VALUE", id="a label without value"),
        pytest.param([*CONTROLLER, "--labels", "a b=1"], "bad label", id="a bad label key"),
        pytest.param([*CONTROLLER, "--provider", "x" * 65], "PROVIDER", id="a long provider"),
        pytest.param(
            [*CONTROLLER, "--backoff-base-s", "20"], "BACKOFF", id="a base above the maximum"
        ),
        pytest.param([*CONTROLLER, "--backoff-base-s", "0"], "BACKOFF", id="a zero base"),
        pytest.param([*CONTROLLER, "--log-level", "loud"], "LOG_LEVEL", id="an unknown level"),
        pytest.param([*CONTROLLER, "--driver", "docker"], "DRIVER", id="an unknown driver"),
    ],
)
def test_invalid_settings_are_refused_with_one_clear_line(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(argv, environ={})


def test_help_documents_every_setting_and_its_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    for f in dataclasses.fields(AgentSettings):
        assert "--" + f.name.replace("_", "-") in text
        assert f"env {f.metadata['env']}, default" in text
