"""The container image, for real: the project's Dockerfile, unchanged, built on a Docker engine
this test starts (tests/e2e/docker_engine.py), with a local Debian base image since no registry
is reachable; then one controller container configured as the Kubernetes Deployment configures
it (its env, its key files mounted read-only, a read-only root, no capabilities), checked from
the host:

- gRPC is TLS only (with the certificate the Deployment mounts from its TLS Secret): health is
  SERVING over TLS, plaintext is refused, every other RPC needs a token; each probe of
  deploy/kubernetes answers SERVING when called the way the kubelet calls it (plaintext
  Health/Check, the probe's port and service, its timeout, no token) on the plaintext health
  port the probe names;
- the metrics port named by the scrape annotations serves Prometheus text;
- a node registered survives the container's replacement by a new one on the same data volume;
- SIGTERM (`docker stop`) exits 0 well within the pod's termination grace, also with an agent
  streaming;
- the same image's agent entry point, as the DaemonSet runs it (an agent-bootstrap token, TLS
  with the CA), registers its node and turns READY, and keeps its node across a restart through
  its state file.

Every container uses the host's network (never Docker's bridge) and binds 127.0.0.1, each on
free ports the test picks (a developer's controller on 50051 is left alone): the Deployment's
port settings are overridden, and every port the manifest names (a probe's, the scrape
annotation's) is mapped through the container port of that number to its name, then to the port
this container was given for that name."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from automator67.v1 import node_pb2, node_service_pb2, node_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..contract import postgres_server
from .docker_engine import DockerEngine, container_exit, run_args, unavailable_reason
from .seed import seed_node
from .test_tls import Pki

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
IMAGE = "automator67:e2e"
IMAGE_UID = 10001
KEYS_DIR = "/etc/automator67/keys"  # where the Deployment mounts the keys Secret
# The settings that set the controller's ports (controller/config.py).
PORT_SETTINGS = ("PORT", "A67_HEALTH_PORT", "A67_METRICS_PORT", "A67_HTTP_PORT")
SERVING = health_pb2.HealthCheckResponse.SERVING
READY = node_pb2.NODE_STATUS_READY
START_TIMEOUT_S = 60.0
WAIT_S = 60.0

_REASON = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    # The first run on a machine installs the engine and debootstraps the base image.
    pytest.mark.timeout(1800),
]


def _deployment() -> dict[str, Any]:
    doc = yaml.safe_load((MANIFESTS / "controller-deployment.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _controller_spec() -> dict[str, Any]:
    pod = _deployment()["spec"]["template"]["spec"]
    spec: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == "controller")
    return spec


def manifest_env() -> dict[str, str]:
    """The controller's env as the Deployment sets it, literal values only (the store URL comes
    from a Secret: here the embedded store on the data volume stands in for PostgreSQL), and
    bound to 127.0.0.1 since the container shares the host's network."""
    env = {e["name"]: str(e["value"]) for e in _controller_spec()["env"] if "value" in e}
    env["A67_HOST"] = "127.0.0.1"
    return env


def port_settings() -> dict[str, str]:
    """Each container port the Deployment declares, by name -> the setting that opens it there
    (the env var whose value is that port number)."""
    env = manifest_env()
    found = {}
    for port in _controller_spec()["ports"]:
        settings = [name for name in PORT_SETTINGS if env.get(name) == str(port["containerPort"])]
        assert len(settings) == 1, f"no setting opens the {port['name']} port: {settings}"
        found[port["name"]] = settings[0]
    return found


def port_name(number: int) -> str:
    """The name of the Deployment's container port `number` (as a probe or an annotation names
    it); fails if the container declares no such port."""
    names = [p["name"] for p in _controller_spec()["ports"] if p["containerPort"] == number]
    assert names, f"the manifest names port {number}, which the container does not declare"
    return str(names[0])


def tls_mount() -> str:
    """Where the Deployment mounts its TLS Secret (the folder of A67_TLS_CERT_FILE)."""
    return str(Path(manifest_env()["A67_TLS_CERT_FILE"]).parent)


def termination_grace_s() -> float:
    return float(_deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def hardening() -> list[str]:
    """The Deployment's securityContext, as docker options."""
    return [
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    try:
        yield engine.start()
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def image(engine: DockerEngine) -> str:
    base = engine.ensure_base_image()
    engine.build(ROOT, IMAGE, {"BASE_IMAGE": base})
    return IMAGE


class Container:
    """One `docker run -d` of the image; removed (with its anonymous volumes) at teardown."""

    def __init__(self, engine: DockerEngine, args: list[str], command: list[str]) -> None:
        self.engine = engine
        self.name = f"a67-e2e-{uuid.uuid4().hex[:10]}"
        self.engine.docker("run", "--detach", "--name", self.name, *args, IMAGE, *command)

    def stop(self, timeout_s: float) -> tuple[int, float]:
        """`docker stop` (SIGTERM, SIGKILL after `timeout_s`): the exit code and the time."""
        started = time.monotonic()
        self.engine.docker("stop", "--time", str(int(timeout_s)), self.name, timeout=timeout_s + 30)
        elapsed = time.monotonic() - started
        code, oom_killed = container_exit(self.engine, self.name)
        assert not oom_killed
        return code, elapsed

    def logs(self) -> str:
        done = self.engine.docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        self.engine.docker("rm", "--force", "--volumes", self.name, check=False)


class Tls:
    """The certificate the `automator67-tls` Secret holds (for 127.0.0.1 here, the Service's
    name in a cluster) and the CA the agents trust (the `automator67-ca` ConfigMap), in host
    folders that stand in for them."""

    def __init__(self, folder: Path) -> None:
        pki = Pki.make()
        self.ca = pki.ca.cert
        self.secret = folder / "automator67-tls"
        self.config_map = folder / "automator67-ca"
        for path, data in [
            (self.secret / "tls.crt", pki.server.cert),
            (self.secret / "tls.key", pki.server.key),
            (self.config_map / "ca.crt", pki.ca.cert),
        ]:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            os.chown(path, IMAGE_UID, IMAGE_UID)
        for path in self.secret.iterdir():
            path.chmod(0o400)  # the Secret volume's defaultMode

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca)


class ControllerContainer(Container):
    """`automator67 serve` with the Deployment's env (and `env` over it), each of its ports
    moved to a free one, the keys and the TLS files mounted where the Deployment mounts its
    Secrets, and `volume` (if any) as the data dir."""

    def __init__(
        self,
        engine: DockerEngine,
        keys: Path,
        tls: Tls,
        *,
        volume: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        # Port name -> the host port this container listens on for it.
        self.ports = {name: free_port() for name in port_settings()}
        moved = {setting: str(self.ports[name]) for name, setting in port_settings().items()}
        settings = {**manifest_env(), **moved, **(env or {})}
        volumes = [f"{keys}:{KEYS_DIR}:ro", f"{tls.secret}:{tls_mount()}:ro"]
        if volume is not None:
            volumes.append(f"{volume}:/var/lib/automator67")
        super().__init__(
            engine,
            [*run_args(env=settings, volumes=volumes), *hardening()],
            [],  # the image's command: serve
        )
        self.tls = tls
        self.address = f"127.0.0.1:{self.ports['grpc']}"

    def host_port(self, manifest_port: int) -> int:
        """The port this container listens on for the manifest's port `manifest_port`."""
        return self.ports[port_name(manifest_port)]

    def wait_serving(self) -> None:
        with grpc.secure_channel(self.address, self.tls.credentials()) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT_S, wait_for_ready=True
                )
            except grpc.RpcError as error:
                pytest.fail(f"the controller container did not serve: {error}\n{self.logs()}")
        assert response.status == SERVING

    def admin_token(self) -> str:
        return self.token("admin")

    def token(self, role: str) -> str:
        """Made inside the container, with the key the Deployment mounts: as an operator would
        (`kubectl exec deploy/automator67-controller -- automator67 token create ...`)."""
        done = self.engine.docker(
            "exec", self.name, "automator67", "token", "create", "--role", role
        )
        return done.stdout.strip()


@pytest.fixture(scope="module")
def keys(engine: DockerEngine, image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The key files, made by the image's `keys init` as the README says, in a host folder
    that stands in for the `automator67-keys` Secret."""
    folder = tmp_path_factory.mktemp("keys")
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    engine.docker(
        "run", "--rm", *run_args(env={}, volumes=[f"{folder}:/keys"]), image,
        "keys", "init", "--data-dir", "/keys",
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def data_volume(engine: DockerEngine) -> Iterator[str]:
    name = f"a67-e2e-data-{uuid.uuid4().hex[:10]}"
    engine.docker("volume", "create", name)
    yield name
    engine.docker("volume", "rm", "--force", name, check=False)


class Controllers:
    """The module's controller container; `replace()` swaps it for a new one on the same
    volume, as a rescheduled pod would be."""

    def __init__(self, engine: DockerEngine, volume: str, keys: Path, tls: Tls) -> None:
        self.engine, self.volume, self.keys, self.tls = engine, volume, keys, tls
        self.containers: list[ControllerContainer] = []
        self.token = ""

    @property
    def current(self) -> ControllerContainer:
        return self.containers[-1]

    def start(self) -> ControllerContainer:
        container = ControllerContainer(self.engine, self.keys, self.tls, volume=self.volume)
        self.containers.append(container)
        container.wait_serving()
        self.token = self.token or container.admin_token()
        return container

    def remove_all(self) -> None:
        for container in self.containers:
            container.remove()


@pytest.fixture(scope="module")
def controllers(
    engine: DockerEngine, image: str, keys: Path, tls: Tls, data_volume: str
) -> Iterator[Controllers]:
    controllers = Controllers(engine, data_volume, keys, tls)
    try:
        controllers.start()
        yield controllers
    finally:
        controllers.remove_all()


def channel_to(controller: ControllerContainer) -> grpc.Channel:
    """A TLS channel to the controller's gRPC port, trusting the CA agents trust."""
    return grpc.secure_channel(controller.address, controller.tls.credentials())


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_the_image_runs_a_non_root_user_with_its_data_dir_as_a_volume(
    engine: DockerEngine, image: str
) -> None:
    config = yaml.safe_load(
        engine.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout
    )

    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["Volumes"]) == {"/var/lib/automator67"}
    assert set(config["ExposedPorts"]) == {"50051/tcp", "9464/tcp"}
    assert config["Entrypoint"] == ["automator67"]
    assert config["Cmd"] == ["serve"]
    assert "A67_AUTH=off" not in config["Env"]


def test_health_is_serving_over_tls_plaintext_is_refused_and_other_rpcs_need_a_token(
    controllers: Controllers,
) -> None:
    with (
        grpc.insecure_channel(controllers.current.address) as plaintext,
        pytest.raises(grpc.RpcError) as no_tls,
    ):
        health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=5)
    with channel_to(controllers.current) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            service: health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            for service in ("", "automator67.v1.NodeService", "automator67.v1.AgentService")
        }
        nodes = node_service_pb2_grpc.NodeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            nodes.ListNodes(node_service_pb2.ListNodesRequest(), timeout=10)
        listed = nodes.ListNodes(
            node_service_pb2.ListNodesRequest(), timeout=10, metadata=bearer(controllers.token)
        )

    assert no_tls.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert set(statuses.values()) == {SERVING}
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list(listed.nodes) == []


@pytest.mark.parametrize("kind", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_each_probe_of_the_deployment_answers_serving_as_the_kubelet_calls_it(
    controllers: Controllers, kind: str
) -> None:
    probe = _controller_spec()[kind]
    # The probe's port number, through the container port of that number, is this container's
    # port of that name: the plaintext health port (gRPC itself is TLS only).
    assert port_name(probe["grpc"]["port"]) == "health"
    port = controllers.current.host_port(probe["grpc"]["port"])
    # The kubelet's prober: plaintext, its own user agent, no metadata, the probe's service,
    # timeoutSeconds as the deadline; SERVING is success, anything else a failure.
    options = [("grpc.primary_user_agent", "kube-probe/1.37")]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
            timeout=float(probe.get("timeoutSeconds", 1)),
        )

    assert response.status == SERVING


def test_the_annotated_metrics_port_serves_prometheus_metrics(controllers: Controllers) -> None:
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
    port = controllers.current.host_port(int(annotations["prometheus.io/port"]))
    url = f"http://127.0.0.1:{port}{annotations['prometheus.io/path']}"

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()

    assert "# TYPE automator67_rpcs_total counter" in text
    assert "automator67_nodes{" in text


def test_a_registered_node_survives_a_new_container_on_the_same_volume(
    controllers: Controllers,
) -> None:
    with channel_to(controllers.current) as channel:
        registered = node_service_pb2_grpc.NodeServiceStub(channel).RegisterNode(
            node_service_pb2.RegisterNodeRequest(node=seed_node(region="eu-west-1")),
            timeout=10,
            metadata=bearer(controllers.token),
        )
    first = controllers.current

    code, elapsed = first.stop(termination_grace_s())
    first.remove()
    second = controllers.start()
    with channel_to(second) as channel:
        found = (
            node_service_pb2_grpc.NodeServiceStub(channel)
            .GetNode(
                node_service_pb2.GetNodeRequest(node_id=registered.node.id),
                timeout=10,
                metadata=bearer(controllers.token),
            )
            .node
        )

    assert code == 0, first.logs()
    assert elapsed < termination_grace_s()
    assert found.id == registered.node.id
    assert found.region == "eu-west-1"
    assert found.has_credentials


def _wait_for_node(
    controller: ControllerContainer, token: str, matches: Callable[[node_pb2.Node], bool]
) -> node_pb2.Node:
    """The first node `matches` accepts, in the controller's current state or as it changes
    (watched, not polled)."""
    with channel_to(controller) as channel:
        events = node_service_pb2_grpc.NodeServiceStub(channel).WatchNodes(
            node_service_pb2.WatchNodesRequest(), timeout=WAIT_S, metadata=bearer(token)
        )
        try:
            for event in events:
                if event.HasField("node") and matches(event.node):
                    return event.node  # closing the channel ends the watch
        except grpc.RpcError as error:
            pytest.fail(f"no such node on {controller.address} within {WAIT_S} s: {error}")
    pytest.fail("the watch ended")


def _wait_for_ready(controller: ControllerContainer, token: str, endpoint: str) -> str:
    """The id of the node with this endpoint once it is READY."""
    node = _wait_for_node(
        controller, token, lambda node: node.endpoint == endpoint and node.status == READY
    )
    return node.id


def _daemonset_pod() -> dict[str, Any]:
    doc = yaml.safe_load((MANIFESTS / "agent-daemonset.yaml").read_text())
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


def prepare_host_path(engine: DockerEngine, image: str, host_dir: Path) -> None:
    """Runs the DaemonSet's init container, as it is written there, on `host_dir` (the
    kubelet creates a hostPath DirectoryOrCreate as root, 0755)."""
    init = _daemonset_pod()["initContainers"][0]
    context = init["securityContext"]
    engine.docker(
        "run", "--rm", "--network", "host", "--read-only", "--security-opt", "no-new-privileges",
        "--user", str(context["runAsUser"]), "--cap-drop", "ALL",
        *(arg for cap in context["capabilities"]["add"] for arg in ("--cap-add", cap)),
        "--volume", f"{host_dir}:{init['volumeMounts'][0]['mountPath']}",
        "--entrypoint", init["command"][0], image, *init["command"][1:],
    )  # fmt: skip


def agent_args(
    controllers: Controllers, endpoint: str, host_dir: Path, token: str, tls: Tls
) -> list[str]:
    """The DaemonSet's agent container as docker options: its literal env, with what the
    cluster would provide (the Service's address, the node's name, the token Secret) filled
    in, `host_dir` as its hostPath and the CA's folder as its ConfigMap."""
    pod = _daemonset_pod()
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    env = {e["name"]: str(e["value"]) for e in agent["env"] if "value" in e}
    env["A67_AGENT_CONTROLLER"] = controllers.current.address
    env["A67_AGENT_ENDPOINT"] = endpoint  # fieldRef spec.nodeName
    env["A67_AGENT_TOKEN"] = token  # secretKeyRef automator67-agent-token
    host_paths = {v["name"] for v in pod["volumes"] if "hostPath" in v}
    mount = next(m for m in agent["volumeMounts"] if m["name"] in host_paths)
    config_maps = {v["name"] for v in pod["volumes"] if "configMap" in v}
    (ca_mount,) = [m for m in agent["volumeMounts"] if m["name"] in config_maps]
    assert str(Path(env["A67_AGENT_TLS_CA_FILE"]).parent) == ca_mount["mountPath"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    volumes = [f"{host_dir}:{mount['mountPath']}", f"{tls.config_map}:{ca_mount['mountPath']}:ro"]
    return [
        *run_args(env=env, volumes=volumes),
        "--user",
        user,
        *hardening(),
    ]


def test_the_agent_entry_point_registers_and_becomes_ready_and_keeps_its_node(
    engine: DockerEngine, image: str, controllers: Controllers, tls: Tls, tmp_path: Path
) -> None:
    endpoint = f"e2e-agent-{uuid.uuid4().hex[:8]}"
    host_dir = tmp_path / "var-lib-automator67-agent"
    host_dir.mkdir(mode=0o755)
    prepare_host_path(engine, image, host_dir)
    # The Secret's token, made as the DaemonSet's header says: it may only register.
    bootstrap = controllers.current.token("agent-bootstrap")
    args = agent_args(controllers, endpoint, host_dir, bootstrap, tls)
    agents: list[Container] = []
    try:
        agents.append(Container(engine, args, ["agent"]))
        first_id = _wait_for_ready(controllers.current, controllers.token, endpoint)
        code, _ = agents[0].stop(termination_grace_s())
        assert code == 0, agents[0].logs()

        agents.append(Container(engine, args, ["agent"]))  # a new pod on the same node
        second_id = _wait_for_ready(controllers.current, controllers.token, endpoint)

        # SIGTERM with an agent streaming: it is told to reconnect, the controller exits 0.
        controller = controllers.current
        code, elapsed = controller.stop(termination_grace_s())
        assert code == 0, controller.logs()
        assert elapsed < termination_grace_s()
        assert json.loads(controller.logs().splitlines()[-1])["msg"] == "stopped"
    finally:
        for agent in agents:
            agent.remove()

    assert second_id == first_id
    # The state file is on the host, the agent's own, and private.
    (state,) = host_dir.iterdir()
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (IMAGE_UID, 0o600)
    assert first_id in state.read_text()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new database on a real PostgreSQL on 127.0.0.1 (tests/contract/postgres_server.py)."""
    try:
        yield postgres_server.database_url()
    finally:
        postgres_server.stop()


def _stats(replica: ControllerContainer, token: str) -> node_service_pb2.GetNodeStatsResponse:
    with channel_to(replica) as channel:
        return node_service_pb2_grpc.NodeServiceStub(channel).GetNodeStats(
            node_service_pb2.GetNodeStatsRequest(), timeout=10, metadata=bearer(token)
        )


def test_three_replicas_configured_as_the_deployment_share_postgresql(
    engine: DockerEngine, image: str, keys: Path, tls: Tls, postgres_url: str
) -> None:
    # What differs between the Deployment's pods: the replica id (the pod's name) and, on the
    # host's network here, the ports (each container has its own); the store URL is what the
    # automator67-store Secret holds.
    replicas: list[ControllerContainer] = []
    try:
        for name in ("controller-a", "controller-b", "controller-c"):
            env = {"A67_STORE_URL": postgres_url, "A67_REPLICA_ID": name}
            replicas.append(ControllerContainer(engine, keys, tls, env=env))
        for replica in replicas:
            replica.wait_serving()
        token = replicas[0].admin_token()  # the key is shared: valid on every replica

        with channel_to(replicas[0]) as channel:
            registered = node_service_pb2_grpc.NodeServiceStub(channel).RegisterNode(
                node_service_pb2.RegisterNodeRequest(node=seed_node()),
                timeout=10,
                metadata=bearer(token),
            )
        # Another replica learns of it through the store's change feed (NOTIFY), soon after.
        found = _wait_for_node(replicas[2], token, lambda node: node.id == registered.node.id)
        # Each replica reads the leader lease on its own schedule: wait until all have.
        deadline = time.monotonic() + WAIT_S
        leaders = {""}
        while "" in leaders and time.monotonic() < deadline:
            leaders = {_stats(replica, token).leader_id for replica in replicas}
            if "" in leaders:
                threading.Event().wait(0.2)
        answered = [_stats(replica, token).replica_id for replica in replicas]

        codes = [replica.stop(termination_grace_s())[0] for replica in replicas]
    finally:
        for replica in replicas:
            replica.remove()

    assert found.id == registered.node.id
    assert answered == ["controller-a", "controller-b", "controller-c"]
    assert len(leaders) == 1 and leaders <= set(answered), leaders
    assert codes == [0, 0, 0]
