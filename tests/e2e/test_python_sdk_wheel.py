"""The Python SDK as a user installs it: its wheel (scripts/build_python_sdk.py) in a fresh
virtualenv that has nothing of the controller, used by an example script against a real
controller, and type-checked as a user's `mypy --strict` would.

The venv is made once per module; pip fetches grpcio, protobuf and googleapis-common-protos from
the package index through its usual cache. Without a reachable index the tests are skipped,
with the pip error as the reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import StartController
from .controller_process import ROOT

EXAMPLE = ROOT / "sdk" / "python" / "examples" / "quickstart.py"
REQUIREMENTS = {"grpcio", "protobuf", "googleapis-common-protos"}
SERVER_ONLY = ["psycopg", "cryptography", "jwt", "psutil", "prometheus_client", "controller"]
SERVER_DISTRIBUTIONS = {
    "automator67-controller",
    "psycopg",
    "psycopg-binary",
    "cryptography",
    "pyjwt",
    "psutil",
    "prometheus-client",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
}
NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "No matching distribution found",
)
pytestmark = pytest.mark.timeout(300)


def clean_env() -> dict[str, str]:
    """No PYTHONPATH or MYPYPATH: nothing but the venv's own packages may be found."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


class SdkVenv:
    def __init__(self, folder: Path, wheel: Path) -> None:
        self.folder = folder
        self.wheel = wheel
        self.python = folder / "venv" / "bin" / "python"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs this venv's python in a folder of its own (never the repository, whose
        `controller/` would be importable from the working directory)."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.folder,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkVenv]:
    folder = tmp_path_factory.mktemp("sdk-user")
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_python_sdk.py"), "--out", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    wheel = Path(built.stdout.strip().splitlines()[-1])
    venv.EnvBuilder(with_pip=True).create(folder / "venv")
    env = SdkVenv(folder, wheel)
    installed = env.run("-m", "pip", "install", "--quiet", str(wheel), timeout=240)
    if installed.returncode != 0:
        if any(marker in installed.stderr for marker in NETWORK_ERRORS):
            pytest.skip(f"the package index is unreachable: {installed.stderr.strip()[-300:]}")
        raise AssertionError(installed.stderr)
    yield env
    shutil.rmtree(folder / "venv", ignore_errors=True)


def test_the_wheel_requires_only_grpcio_protobuf_and_the_common_protos(sdk: SdkVenv) -> None:
    with zipfile.ZipFile(sdk.wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requires} == REQUIREMENTS
    assert "automator67/py.typed" in names
    assert "automator67/v1/node_pb2.pyi" in names and "automator67/v1/node_pb2.py" in names
    assert not any(n.startswith("controller/") for n in names)


def test_the_sdk_imports_without_any_of_the_servers_dependencies(sdk: SdkVenv) -> None:
    check = sdk.run(
        "-c",
        "import importlib.util, sys\n"
        "import automator67, automator67.aio, automator67.agent, automator67.v1.node_service_pb2\n"
        f"missing = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is None]\n"
        "print(automator67.__file__)\n"
        f"assert missing == {SERVER_ONLY!r}, missing\n",
    )
    assert check.returncode == 0, check.stderr
    assert str(sdk.folder / "venv") in check.stdout  # the installed copy, not the repository's
    listed = sdk.run("-m", "pip", "list", "--format=freeze")
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.split()}
    assert REQUIREMENTS | {"automator67"} <= installed
    assert not installed & SERVER_DISTRIBUTIONS, installed


def test_the_example_script_runs_against_a_real_controller(
    sdk: SdkVenv, start_controller: StartController
) -> None:
    controller = start_controller()
    script = sdk.folder / "quickstart.py"
    shutil.copy(EXAMPLE, script)
    env = {**clean_env(), "A67_TOKEN": controller.admin_token}
    ran = subprocess.run(
        [str(sdk.python), str(script), controller.address],
        cwd=sdk.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    lines = [line.split() for line in ran.stdout.splitlines()]
    assert lines[0][0] == "registered" and lines[0][2] == "NODE_STATUS_PENDING"
    node_id = lines[0][1]
    assert lines[1:] == [
        ["listed", "1", "True"],
        ["got", "quickstart-host"],
        ["created", "quickstart-web", "DEPLOYMENT_STATUS_PENDING"],
        ["deleting", "DEPLOYMENT_STATUS_STOPPING"],
        ["not", "found", "NODE_NOT_FOUND", "00000000-0000-4000-8000-000000000000"],
    ]
    assert node_id


def test_a_users_mypy_strict_passes_on_the_example(sdk: SdkVenv) -> None:
    """The project's mypy, told to import from the fresh venv only: what a user who installed
    the wheel (and no stub packages) sees."""
    script = sdk.folder / "typed_example.py"
    shutil.copy(EXAMPLE, script)
    config = sdk.folder / "mypy.ini"
    config.write_text("[mypy]\n")
    mypy = Path(sys.executable).with_name("mypy")
    checked = subprocess.run(
        [
            str(mypy),
            "--strict",
            "--config-file",
            str(config),
            "--cache-dir",
            str(sdk.folder / ".mypy_cache"),
            "--python-executable",
            str(sdk.python),
            str(script),
        ],
        cwd=sdk.folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The SDK's types were really used (a missing py.typed would make everything Any). Without
    # types-protobuf a message class derives from Any, so the probe is a field's type.
    probe = sdk.folder / "probe.py"
    probe.write_text(
        "from automator67 import Client\n"
        "def f(c: Client) -> None:\n"
        "    n: int = c.get_node('x').endpoint\n"
    )
    wrong = subprocess.run(
        [str(mypy), "--strict", "--config-file", str(config), "--cache-dir",
         str(sdk.folder / ".mypy_cache"), "--python-executable", str(sdk.python), str(probe)],
        cwd=sdk.folder, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 1, wrong.stdout
    assert 'expression has type "str", variable has type "int"' in wrong.stdout
