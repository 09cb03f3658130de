"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary directory, the server
on a free loopback port, one fresh database per test.

``initdb`` and the server refuse to run as root, so under root they run as an unprivileged
account (``SCHEDULER_TEST_PG_USER``, default ``nobody``) through ``setpriv``; the data directory
belongs to that account. Clients connect over TCP as the cluster's superuser ``scheduler`` with
``trust`` authentication, which only loopback can reach.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_SEARCH = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
           "/usr/lib/postgresql/17/bin")
SUPERUSER = "scheduler"


def server_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    found = shutil.which("initdb")
    candidates = ([str(Path(found).parent)] if found else []) + list(_SEARCH)
    for directory in candidates:
        folder = Path(directory)
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="scheduler-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._databases = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(os.environ.get("SCHEDULER_TEST_PG_USER", "nobody"))
            self._as_user = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                             "--clear-groups", "--"]
            os.chmod(self.root, 0o755)
            self.data.mkdir(mode=0o700)
            os.chown(self.data, account.pw_uid, account.pw_gid)

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=120,
                              cwd="/")
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60",
                  "-l", str(self.data / "server.log"), "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
