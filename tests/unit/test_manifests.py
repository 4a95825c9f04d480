"""The Kubernetes manifests in deploy/kubernetes: valid against the real Kubernetes schemas
(`kubernetes-validate --strict`) for the oldest and the newest version they support, and
consistent with the controller they run (every env var is a real setting, probes and scrape
annotations name the ports the controller listens on, the probes the plaintext health port since
gRPC is TLS only, secrets land where the settings point, the agents' token is the narrow
agent-bootstrap role).

Supported versions: from 1.25, the oldest release kubernetes-validate has schemas for in which
the kubelet's native gRPC probe is on by default (beta and on since 1.24, GA in 1.27), to the
newest release kubernetes-validate knows. The probes themselves are called against a running
container in tests/e2e/test_container.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.agent.settings import AgentSettings
from controller.auth.keys import DEFAULT_KEY_FILE
from controller.auth.principals import Principal, Role, allowed, rule_for
from controller.config import Config
from controller.crypto import DEFAULT_KEYS_FILE
from controller.server import SERVICES

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
OLDEST_SUPPORTED = "1.25.0"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"

Doc = dict[str, Any]


def newest_known() -> str:
    """The newest Kubernetes version the installed kubernetes-validate has schemas for."""
    spec = importlib.util.find_spec("kubernetes_validate")
    assert spec is not None and spec.origin, "kubernetes-validate is not installed"
    folder = Path(spec.origin).parent / "kubernetes-json-schema"
    versions = [
        tuple(int(part) for part in entry.name[1:].split("-")[0].split("."))
        for entry in folder.glob("v*-local-strict")
    ]
    return ".".join(str(part) for part in max(versions))


def load(name: str) -> Doc:
    doc = yaml.safe_load((MANIFESTS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def resources() -> list[str]:
    listed = load("kustomization.yaml")["resources"]
    assert isinstance(listed, list)
    return [str(name) for name in listed]


def container(doc: Doc, name: str) -> Doc:
    found = [c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{doc['metadata']['name']} has no container {name!r}"
    result: Doc = found[0]
    return result


def env_values(c: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in c.get("env", [])}


def validate(version: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    command = str(VALIDATE) if VALIDATE.exists() else shutil.which("kubernetes-validate")
    assert command, "kubernetes-validate is not installed (pip install -e '.[dev]')"
    return subprocess.run(
        [command, "--strict", "--kubernetes-version", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_kustomization_lists_every_manifest_of_the_folder() -> None:
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}

    assert sorted(resources()) == sorted(on_disk)


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, newest_known()])
def test_every_manifest_is_valid_for_the_supported_kubernetes_versions(version: str) -> None:
    done = validate(version, *(MANIFESTS / name for name in resources()))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len(resources()), done.stdout


def test_the_validation_is_strict(tmp_path: Path) -> None:
    # The same check must refuse a field Kubernetes does not know (a typo in a probe).
    deployment = load("controller-deployment.yaml")
    container(deployment, "controller")["readinessProbe"]["grpc"]["servce"] = "x"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))

    done = validate(OLDEST_SUPPORTED, broken)

    assert done.returncode != 0
    assert "servce" in done.stdout + done.stderr


def _settings_env(settings: type[Any]) -> set[str]:
    return {str(f.metadata["env"]) for f in dataclasses.fields(settings)}


@pytest.mark.parametrize(
    ("manifest", "name", "settings"),
    [
        ("controller-deployment.yaml", "controller", Config),
        ("agent-daemonset.yaml", "agent", AgentSettings),
    ],
)
def test_every_env_var_is_a_setting_of_the_command(
    manifest: str, name: str, settings: type[Any]
) -> None:
    names = set(env_values(container(load(manifest), name)))

    assert names <= _settings_env(settings), names - _settings_env(settings)


def test_the_controller_runs_three_replicas_on_postgresql_with_keys_from_secrets() -> None:
    deployment = load("controller-deployment.yaml")
    controller = container(deployment, "controller")
    env = env_values(controller)
    pod = deployment["spec"]["template"]["spec"]

    assert deployment["spec"]["replicas"] == 3
    assert env["A67_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "automator67-store"
    assert "A67_AUTH" not in env  # JWT, the default: --auth off is never needed
    secret_mounts = {
        mount["mountPath"]: volume["secret"]
        for mount in controller["volumeMounts"]
        for volume in pod["volumes"]
        if volume["name"] == mount["name"] and "secret" in volume
    }
    for setting, file_name in [
        ("A67_JWT_PRIVATE_KEY_FILE", DEFAULT_KEY_FILE),
        ("A67_CREDENTIAL_KEYS_FILE", DEFAULT_KEYS_FILE),
    ]:
        path = Path(env[setting]["value"])
        # The file is in a mounted Secret, under the name `automator67 keys init` writes.
        secret = secret_mounts[str(path.parent)]
        assert path.name == file_name
        assert {"key": file_name, "path": file_name} in secret["items"]


def literal_env(c: Doc) -> dict[str, str]:
    return {name: str(entry["value"]) for name, entry in env_values(c).items() if "value" in entry}


def test_probes_are_native_grpc_on_the_plaintext_health_port_against_registered_services() -> None:
    controller = container(load("controller-deployment.yaml"), "controller")
    ports = {port["name"]: port["containerPort"] for port in controller["ports"]}
    env = literal_env(controller)
    probes = [controller[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")]
    # The settings as the controller reads them: valid together (the health port differs from
    # the others) and on the ports the container declares.
    config = Config.load(None, env)

    assert (config.port, config.health_port, config.metrics_port) == (
        ports["grpc"],
        ports["health"],
        ports["metrics"],
    )
    # TLS on the gRPC port, which the kubelet's plaintext probe could not pass.
    assert config.tls_cert_file and config.tls_key_file
    for probe in probes:
        assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"grpc"}
        assert probe["grpc"]["port"] == ports["health"]
        assert probe["grpc"]["service"] in ("", *SERVICES)


def _mounted_secret_files(doc: Doc, c: Doc) -> dict[str, tuple[str, Doc]]:
    """mount path -> (volume kind, volume source) of the container's secret/configMap mounts."""
    volumes = {volume["name"]: volume for volume in doc["spec"]["template"]["spec"]["volumes"]}
    found = {}
    for mount in c["volumeMounts"]:
        volume = volumes[mount["name"]]
        for kind in ("secret", "configMap"):
            if kind in volume:
                found[mount["mountPath"]] = (kind, volume[kind])
    return found


def test_tls_files_come_from_a_tls_secret_and_the_agent_trusts_its_ca() -> None:
    deployment = load("controller-deployment.yaml")
    controller = container(deployment, "controller")
    env = literal_env(controller)
    mounts = _mounted_secret_files(deployment, controller)
    daemonset = load("agent-daemonset.yaml")
    agent = container(daemonset, "agent")
    agent_mounts = _mounted_secret_files(daemonset, agent)

    for setting, key in [("A67_TLS_CERT_FILE", "tls.crt"), ("A67_TLS_KEY_FILE", "tls.key")]:
        path = Path(env[setting])
        kind, source = mounts[str(path.parent)]
        assert (kind, source["secretName"], path.name) == ("secret", "automator67-tls", key)
        assert {"key": key, "path": key} in source["items"]
    ca = Path(literal_env(agent)["A67_AGENT_TLS_CA_FILE"])
    kind, source = agent_mounts[str(ca.parent)]
    assert (kind, source["name"]) == ("configMap", "automator67-ca")
    assert {"key": "ca.crt", "path": ca.name} in source["items"]


def test_the_scrape_annotations_name_the_metrics_port() -> None:
    deployment = load("controller-deployment.yaml")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    controller = container(deployment, "controller")
    ports = {port["name"]: port["containerPort"] for port in controller["ports"]}

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert int(env_values(controller)["A67_METRICS_PORT"]["value"]) == ports["metrics"]


def test_the_service_and_the_budget_select_the_controller_pods() -> None:
    labels = load("controller-deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    service = load("controller-service.yaml")
    budget = load("controller-pdb.yaml")

    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["grpc"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_requests_and_limits_are_set_and_the_grace_outlasts_the_shutdown() -> None:
    deployment = load("controller-deployment.yaml")
    controller = container(deployment, "controller")
    grace_s = float(env_values(controller)["A67_SHUTDOWN_GRACE_S"]["value"])

    for manifest, name in [
        ("controller-deployment.yaml", "controller"),
        ("agent-daemonset.yaml", "agent"),
    ]:
        resources = container(load(manifest), name)["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace_s


def test_the_agent_keeps_its_state_on_the_host_and_its_token_in_a_secret() -> None:
    daemonset = load("agent-daemonset.yaml")
    agent = container(daemonset, "agent")
    env = env_values(agent)
    host_paths = {
        mount["mountPath"]
        for mount in agent["volumeMounts"]
        for volume in daemonset["spec"]["template"]["spec"]["volumes"]
        if volume["name"] == mount["name"] and "hostPath" in volume
    }
    service = load("controller-service.yaml")

    assert str(Path(env["A67_AGENT_STATE_FILE"]["value"]).parent) in host_paths
    assert env["A67_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "automator67-agent-token"
    host, port = env["A67_AGENT_CONTROLLER"]["value"].split(":")
    assert host.split(".")[:2] == [service["metadata"]["name"], service["metadata"]["namespace"]]
    assert int(port) == service["spec"]["ports"][0]["port"]


def test_the_agents_token_is_documented_as_the_narrow_bootstrap_role() -> None:
    # The DaemonSet's Secret holds a token of the role its header names: one that exists, may
    # register nodes, and may neither read nor delete them nor touch deployments.
    header = (MANIFESTS / "agent-daemonset.yaml").read_text()
    (named,) = set(re.findall(r"token create --role ([a-z-]+)", header))
    role = Principal("agents", Role(named))

    assert allowed(role, rule_for("/automator67.v1.NodeService/RegisterNode"))
    for method in (
        "/automator67.v1.NodeService/GetNode",
        "/automator67.v1.NodeService/ListNodes",
        "/automator67.v1.NodeService/DeleteNode",
        "/automator67.v1.AgentService/Heartbeat",
        "/automator67.v1.DeploymentService/CreateDeployment",
    ):
        assert not allowed(role, rule_for(method)), method
