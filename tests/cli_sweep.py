"""Run many argument lists through the CLI, each in a forked child process, and report each result.

``python tests/cli_sweep.py`` reads a JSON list of argument lists on stdin and writes a JSON list
of results (``argv``, ``json_mode``, ``code``, ``stdout``, ``stderr``, ``changed``) on stdout.

Each case runs ``scheduler.cli.main.run`` in a fork of this process, with its own stdout and
stderr files: a real process with real file descriptors, its own exit status, and the database
named by ``SCHEDULER_DB``, at a few milliseconds a case instead of an interpreter start. What a
fork skips is the decoding of ``sys.argv``; arguments arrive as Python decodes them
(``surrogateescape`` for bytes that are not UTF-8), and tests/test_cli.py also runs such arguments
through a real ``python -m scheduler``. ``changed`` says whether any table's content differed
after the case; the caller decides when a change is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import traceback
from typing import Any

# What the handlers import lazily, imported once here rather than in every child.
import scheduler.cli.capabilities
import scheduler.cli.commands
import scheduler.cli.companions
import scheduler.cli.dispatch
import scheduler.cli.service
import scheduler.cron
import scheduler.dispatching.control
import scheduler.dispatching.done
import scheduler.dispatching.enqueue
import scheduler.dispatching.importing
import scheduler.dispatching.inspection
import scheduler.engine.lock
import scheduler.gateway.rpc
import scheduler.models.job
import scheduler.models.schemas
import scheduler.models.validation
import scheduler.paths
import scheduler.service
import scheduler.servicefiles
import scheduler.store.sqlite.idempotency
import scheduler.store.sqlite.jobs
import scheduler.store.sqlite.messages
import scheduler.store.sqlite.migrations
import scheduler.store.sqlite.runs
import scheduler.store.sqlite.status  # noqa: F401
from scheduler.cli.main import run

TABLES = ("jobs", "runs", "job_dispatch_queue", "delivery_aliases", "idempotency_ledger", "messages",
          "dispatch_labels", "instances")
CRASHED = 99  # the exit status of a child whose run() raised


class Digest:
    """A hash of every row of the tables a command could write, recomputed only when a file of
    the database changed (no commit leaves the main file and the WAL both untouched)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.files: tuple[tuple[int, ...], ...] | None = None
        self.value = ""

    def __call__(self) -> str:
        files = tuple(
            (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            for st in (os.stat(p) for p in (self.db_path, self.db_path + "-wal") if os.path.exists(p))
        )
        if files != self.files:
            self.files, self.value = files, rows_digest(self.db_path)
        return self.value


def rows_digest(db_path: str) -> str:
    if not os.path.exists(db_path):
        return ""
    conn = sqlite3.connect(db_path)
    try:
        h = hashlib.sha256()
        for table in TABLES:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                h.update(repr(row).encode("utf-8", "backslashreplace"))
        return h.hexdigest()
    finally:
        conn.close()


def _child(argv: list[str], out_fd: int, err_fd: int) -> None:
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    try:
        code = run(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = CRASHED
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc(file=sys.__stderr__)
        code = CRASHED
    os._exit(code)


def run_case(argv: list[str], json_mode: bool, digest: Digest, before: str) -> dict[str, Any]:
    """One case; ``before`` is the database's digest before it (the previous case's after)."""
    full = [*argv, "--json"] if json_mode else list(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(full, out.fileno(), err.fileno())
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "backslashreplace")
        stderr = err.read().decode("utf-8", "backslashreplace")
    code = os.waitstatus_to_exitcode(status)
    after = digest()
    return {"argv": argv, "json_mode": json_mode, "code": code, "stdout": stdout, "stderr": stderr,
            "changed": after != before, "digest": after}


def main() -> int:
    cases = json.load(sys.stdin)
    digest = Digest(os.environ["SCHEDULER_DB"])
    results: list[dict[str, Any]] = []
    before = digest()
    for argv in cases:
        for json_mode in (True, False):
            results.append(run_case(argv, json_mode, digest, before))
            before = results[-1].pop("digest")
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
