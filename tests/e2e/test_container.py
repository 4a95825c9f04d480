"""The container image, for real: the project's Dockerfile, unchanged, built on a Docker engine
this test starts (tests/e2e/docker_engine.py), with a local Debian base image since no registry
is reachable; then one controller container configured as the Kubernetes Deployment configures
it (its env, its key files mounted read-only, a read-only root, no capabilities), checked from
the host:

- health is SERVING, and each probe of deploy/kubernetes answers SERVING when called the way
  the kubelet calls it (plaintext Health/Check, the probe's port and service, its timeout, no
  token), while every other RPC needs a token;
- the metrics port named by the scrape annotations serves Prometheus text;
- a node registered survives the container's replacement by a new one on the same data volume;
- SIGTERM (`docker stop`) exits 0 well within the pod's termination grace, also with an agent
  streaming;
- the same image's agent entry point registers its node and turns READY, and keeps its node
  across a restart through its state file.

Every container uses the host's network (never Docker's bridge) and binds 127.0.0.1. The
manifest's own ports (50051, 9464) are used, as the kubelet would use them; the test fails at
once, saying so, if something else on this machine holds them."""

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

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
IMAGE = "automator67:e2e"
IMAGE_UID = 10001
KEYS_DIR = "/etc/automator67/keys"  # where the Deployment mounts the keys Secret
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


def assert_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: a connection of the last run in TIME_WAIT does not hold it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"127.0.0.1:{port} (the manifest's port) is in use on this machine")


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


class ControllerContainer(Container):
    """`automator67 serve` with the Deployment's env (and `env` over it), the keys mounted
    where the Deployment mounts its Secret, and `volume` (if any) as the data dir."""

    def __init__(
        self,
        engine: DockerEngine,
        keys: Path,
        *,
        volume: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        settings = {**manifest_env(), **(env or {})}
        volumes = [f"{keys}:{KEYS_DIR}:ro"]
        if volume is not None:
            volumes.append(f"{volume}:/var/lib/automator67")
        super().__init__(
            engine,
            [*run_args(env=settings, volumes=volumes), *hardening()],
            [],  # the image's command: serve
        )
        self.address = f"127.0.0.1:{settings['PORT']}"

    def wait_serving(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT_S, wait_for_ready=True
                )
            except grpc.RpcError as error:
                pytest.fail(f"the controller container did not serve: {error}\n{self.logs()}")
        assert response.status == SERVING

    def admin_token(self) -> str:
        """Made inside the container, with the key the Deployment mounts: as an operator would
        (`kubectl exec deploy/automator67-controller -- automator67 token create ...`)."""
        done = self.engine.docker(
            "exec", self.name, "automator67", "token", "create", "--role", "admin"
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
def data_volume(engine: DockerEngine) -> Iterator[str]:
    name = f"a67-e2e-data-{uuid.uuid4().hex[:10]}"
    engine.docker("volume", "create", name)
    yield name
    engine.docker("volume", "rm", "--force", name, check=False)


class Controllers:
    """The module's controller container; `replace()` swaps it for a new one on the same
    volume, as a rescheduled pod would be."""

    def __init__(self, engine: DockerEngine, volume: str, keys: Path) -> None:
        self.engine, self.volume, self.keys = engine, volume, keys
        self.containers: list[ControllerContainer] = []
        self.token = ""

    @property
    def current(self) -> ControllerContainer:
        return self.containers[-1]

    def start(self) -> ControllerContainer:
        container = ControllerContainer(self.engine, self.keys, volume=self.volume)
        self.containers.append(container)
        container.wait_serving()
        self.token = self.token or container.admin_token()
        return container

    def remove_all(self) -> None:
        for container in self.containers:
            container.remove()


@pytest.fixture(scope="module")
def controllers(
    engine: DockerEngine, image: str, keys: Path, data_volume: str
) -> Iterator[Controllers]:
    env = manifest_env()
    for port in (env["PORT"], env["A67_METRICS_PORT"]):
        assert_port_free(int(port))
    controllers = Controllers(engine, data_volume, keys)
    try:
        controllers.start()
        yield controllers
    finally:
        controllers.remove_all()


def channel_to(controller: ControllerContainer) -> grpc.Channel:
    return grpc.insecure_channel(controller.address)


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


def test_health_is_serving_from_the_host_and_other_rpcs_need_a_token(
    controllers: Controllers,
) -> None:
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

    assert set(statuses.values()) == {SERVING}
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list(listed.nodes) == []


@pytest.mark.parametrize("kind", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_each_probe_of_the_deployment_answers_serving_as_the_kubelet_calls_it(
    controllers: Controllers, kind: str
) -> None:
    probe = _controller_spec()[kind]
    # The kubelet's prober: plaintext, its own user agent, no metadata, the probe's service,
    # timeoutSeconds as the deadline; SERVING is success, anything else a failure.
    options = [("grpc.primary_user_agent", "kube-probe/1.37")]
    with grpc.insecure_channel(f"127.0.0.1:{probe['grpc']['port']}", options=options) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
            timeout=float(probe.get("timeoutSeconds", 1)),
        )

    assert response.status == SERVING


def test_the_annotated_metrics_port_serves_prometheus_metrics(controllers: Controllers) -> None:
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
    url = f"http://127.0.0.1:{annotations['prometheus.io/port']}{annotations['prometheus.io/path']}"

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


def agent_args(controllers: Controllers, endpoint: str, host_dir: Path) -> list[str]:
    """The DaemonSet's agent container as docker options: its literal env, with what the
    cluster would provide (the Service's address, the node's name, the token Secret) filled
    in, and `host_dir` as its hostPath."""
    pod = _daemonset_pod()
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    env = {e["name"]: str(e["value"]) for e in agent["env"] if "value" in e}
    env["A67_AGENT_CONTROLLER"] = controllers.current.address
    env["A67_AGENT_ENDPOINT"] = endpoint  # fieldRef spec.nodeName
    env["A67_AGENT_TOKEN"] = controllers.token  # secretKeyRef automator67-agent-token
    host_paths = {v["name"] for v in pod["volumes"] if "hostPath" in v}
    mount = next(m for m in agent["volumeMounts"] if m["name"] in host_paths)
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    return [
        *run_args(env=env, volumes=[f"{host_dir}:{mount['mountPath']}"]),
        "--user",
        user,
        *hardening(),
    ]


def test_the_agent_entry_point_registers_and_becomes_ready_and_keeps_its_node(
    engine: DockerEngine, image: str, controllers: Controllers, tmp_path: Path
) -> None:
    endpoint = f"e2e-agent-{uuid.uuid4().hex[:8]}"
    host_dir = tmp_path / "var-lib-automator67-agent"
    host_dir.mkdir(mode=0o755)
    prepare_host_path(engine, image, host_dir)
    args = agent_args(controllers, endpoint, host_dir)
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
    engine: DockerEngine, image: str, keys: Path, postgres_url: str
) -> None:
    # What differs between the Deployment's pods: the replica id (the pod's name) and, on the
    # host's network here, the ports; the store URL is what the automator67-store Secret holds.
    replicas: list[ControllerContainer] = []
    try:
        for name in ("controller-a", "controller-b", "controller-c"):
            env = {
                "A67_STORE_URL": postgres_url,
                "A67_REPLICA_ID": name,
                "PORT": str(free_port()),
                "A67_METRICS_PORT": str(free_port()),
            }
            replicas.append(ControllerContainer(engine, keys, env=env))
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
