"""A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's binaries): initdb + pg_ctl in a temp dir.

As root, the server runs as the ``postgres`` user (initdb refuses root).

    python -m tests.pgcluster start DIR   # prints the URL; writes DIR/url (DIR's parent must be
                                          # reachable by the postgres user: /tmp/... is)
    python -m tests.pgcluster stop DIR
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER = "bridge"


def bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None
        command = _as_owner([str(self.bin / args[0]), *args[1:]])
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # the server's user must reach the folder: make it under a world-traversable
            # parent (such as /tmp), e.g. with new_root()
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o755)
        (self.root / "port").write_text(str(_free_port()))
        if os.geteuid() == 0:
            shutil.chown(self.root / "port", "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log.read_text()}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0


def new_root() -> Path:
    """A fresh folder the server's user can reach, also when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    root.chmod(0o755)
    return root / "cluster"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    cluster = Cluster(Path(argv[2]))
    if argv[1] == "start":
        if not cluster.data.exists():
            cluster.init()
        cluster.start()
        (cluster.root / "url").write_text(cluster.url)
        print(cluster.url)
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
