"""A Docker engine of the test's own, and the image built from the project's Dockerfile.

No image registry is reachable here, so the base image is made locally: `debootstrap
--variant=minbase` of Debian from the machine's package mirror, with python3 and its venv,
imported as `a67-local-base:bookworm`. The engine keeps its images and build cache in
`/var/lib/a67-docker`, which the machine keeps between runs, so only the first run pays for
debootstrap (~50 s); later builds reuse the cache.

`DockerEngine.start()` runs `dockerd` on a socket in a temporary folder (never the system's
`/var/run/docker.sock`), with no bridge network and no iptables rules: every container runs with
`--network host` and binds 127.0.0.1. `stop()` ends it by its pid. One engine at a time may use
the data root (a lock file; two dockerd on one data root corrupt it).

What is missing is installed from Debian's packages (`docker.io`, `debootstrap`) when the test
runs as root with apt-get; `unavailable_reason()` says why it cannot be, for the skip.

The build uses BuildKit (the Dockerfile mounts the host's CA bundle as a build secret so that pip
trusts a TLS-intercepting proxy; it is in no layer) with the engine's own CLI: Debian's docker.io
ships one of the same version, which has BuildKit built in; a newer CLI needs the buildx plugin.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

DATA_ROOT = Path("/var/lib/a67-docker")
LOCK_FILE = Path("/var/lib/a67-docker.lock")
PID_FILE = Path("/var/lib/a67-docker.pid")
BASE_IMAGE = "a67-local-base:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PACKAGES = ("docker.io", "debootstrap")  # Debian's: dockerd with its own CLI, and debootstrap
LEFTOVER_PREFIX = "a67-e2e-"  # what the tests name their containers and volumes

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 900.0  # another run on this machine holds the engine: wait for it
APT_TIMEOUT_S = 600.0
DEBOOTSTRAP_TIMEOUT_S = 600.0
BUILD_TIMEOUT_S = 600.0
# The build cache kept between runs; older entries are pruned after each build.
BUILD_CACHE_KEEP = "2gb"


class EngineError(RuntimeError):
    """The engine could not be installed, started or used; the message says which step."""


def unavailable_reason() -> str | None:
    """Why no Docker engine can run here (the tests then skip with it), or None."""
    if not Path("/proc/self").exists():
        return "the Docker engine needs Linux"
    if os.geteuid() != 0:
        return "starting dockerd needs root, and the tests do not run as root"
    if not _have("dockerd", "debootstrap") and shutil.which("apt-get") is None:
        return "dockerd or debootstrap is missing and apt-get is not there to install them"
    return None


def ensure_installed(log_dir: Path) -> None:
    """Installs Debian's docker.io and debootstrap when dockerd or debootstrap is missing."""
    if _have("dockerd", "debootstrap"):
        return
    log = log_dir / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        # Waits for another apt run's lock instead of failing at once.
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *PACKAGES],
    ):
        with log.open("a") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=APT_TIMEOUT_S
            )
        if done.returncode != 0:
            raise EngineError(f"{' '.join(command)} failed:\n{_tail(log)}")
    if not _have("dockerd", "debootstrap"):
        raise EngineError(f"docker.io and debootstrap installed, still missing:\n{_tail(log)}")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (the base image comes from the same one)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE)
        if match and "security" not in match.group(1):
            return match.group(1)
    lists = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]
    for path in lists:
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if parts[:1] == ["deb"] and "security" not in line:
                    return next(part for part in parts[1:] if "://" in part)
    return DEFAULT_MIRROR


class DockerEngine:
    """One dockerd, started by `start()` and ended by `stop()` (by its pid)."""

    def __init__(self) -> None:
        # A short path: the socket (and containerd's, under exec-root) must fit in 108 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="a67d-", dir="/tmp"))
        self.socket = self.workdir / "docker.sock"
        self.log_path = self.workdir / "dockerd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    @property
    def cli(self) -> str:
        """Debian's docker.io CLI (the engine's version, BuildKit built in) once installed; a
        newer CLI (Docker 23+) builds with BuildKit only through the buildx plugin."""
        return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.workdir / "cli-config"),
        }

    def start(self) -> DockerEngine:
        ensure_installed(self.workdir)
        self._take_lock()
        _stop_stale_daemon()
        DATA_ROOT.mkdir(mode=0o700, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    _which("dockerd"),
                    f"--host=unix://{self.socket}",
                    f"--data-root={DATA_ROOT}",
                    f"--exec-root={self.workdir / 'exec'}",
                    f"--pidfile={PID_FILE}",
                    "--bridge=none",  # no network of Docker's: containers use the host's
                    "--iptables=false",
                    "--ip-masq=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"dockerd did not answer:\n{_tail(self.log_path)}")
            _pause_until(self._process, 0.2)
        self._remove_leftovers()
        return self

    def _remove_leftovers(self) -> None:
        """Containers and volumes of a run that was killed before its teardown (the data root
        is this engine's alone, and the tests name theirs `a67-e2e-...`)."""
        filters = ("--filter", f"name={LEFTOVER_PREFIX}")
        containers = self.docker("ps", "--all", "--quiet", *filters).stdout.split()
        if containers:
            self.docker("rm", "--force", "--volumes", *containers, check=False)
        volumes = self.docker("volume", "ls", "--quiet", *filters).stdout.split()
        if volumes:
            self.docker("volume", "rm", "--force", *volumes, check=False)

    def stop(self) -> None:
        """Ends dockerd (SIGTERM, by its pid; it stops the containerd it started)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the docker CLI against this engine; with `check`, a failure raises with its
        output."""
        done = subprocess.run(
            [self.cli, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def ensure_base_image(self) -> str:
        """The local Debian base image (made by debootstrap the first time)."""
        if self.has_image(BASE_IMAGE):
            return BASE_IMAGE
        rootfs = self.workdir / "rootfs"
        log = self.workdir / "debootstrap.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [
                    _which("debootstrap"),
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
            )
        if done.returncode != 0:
            raise EngineError(f"debootstrap failed:\n{_tail(log)}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                [self.cli, "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
                env=self.env,
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
            )
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(DEBOOTSTRAP_TIMEOUT_S)
        shutil.rmtree(rootfs, ignore_errors=True)
        if imported.returncode != 0:
            raise EngineError(f"docker import failed: {imported.stderr}")
        return BASE_IMAGE

    def build(self, context: Path, tag: str, build_args: dict[str, str]) -> str:
        """Builds `context`'s Dockerfile as it is, on the host's network, with the host's CA
        bundle as the `ca-bundle` build secret. Returns the build's output."""
        args = ["build", "--network", "host", "--progress", "plain", "--tag", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        if HOST_CA_BUNDLE.exists():
            args += ["--secret", f"id=ca-bundle,src={HOST_CA_BUNDLE}"]
        done = self.docker(*args, str(context), check=False, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise EngineError(f"docker build failed:\n{done.stderr[-6000:]}")
        # Keep the data root bounded across runs: replaced images and old cache go.
        self.docker("image", "prune", "--force", check=False)
        self.docker("builder", "prune", "--force", "--keep-storage", BUILD_CACHE_KEEP, check=False)
        return done.stderr

    def _take_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise EngineError(f"{LOCK_FILE} is held by another run") from None
                threading.Event().wait(0.5)  # the holder gives no signal but the lock itself
        self._lock = fd


@contextlib.contextmanager
def running_engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    try:
        yield engine.start()
    finally:
        engine.stop()


def _stop_stale_daemon() -> None:
    """A dockerd left on our data root by a run that was killed (its pidfile names it) would
    refuse the new one: end it, by that pid, if it is really ours."""
    try:
        pid = int(PID_FILE.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if (
        not cmdline
        or not cmdline[0].endswith(b"dockerd")
        or f"--data-root={DATA_ROOT}".encode() not in cmdline
    ):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        threading.Event().wait(0.2)


def _pause_until(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Waits `seconds`, or less if `process` exits meanwhile."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(seconds)


def _which(command: str) -> str:
    """The command's path; /usr/sbin too, which a non-login PATH may lack."""
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin") or command


def _have(*commands: str) -> bool:
    return all(_which(command) != command for command in commands)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


def container_exit(engine: DockerEngine, name: str) -> tuple[int, bool]:
    """The container's exit code, and whether it was killed for memory."""
    out = engine.docker(
        "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name
    ).stdout.split()
    return int(out[0]), out[1] == "true"


def run_args(*, env: dict[str, str], volumes: Sequence[str] = ()) -> list[str]:
    """`docker run` options every container of the tests gets: the host's network (never
    Docker's bridge), the env, and the volumes."""
    args = ["--network", "host"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    return args
