"""The single-instance lock a daemon holds beside its database.

An OS advisory lock (``flock``) on ``<db>.lock``: the kernel drops it when the process dies, even
by SIGKILL, so there is no stale lock to clean up. The file's content (pid, start time, version)
is informational, for ``status``; whether a daemon runs is decided by trying the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.errors import DaemonLockedError, StoreError
from scheduler.paths import lock_path


@dataclass
class DaemonLock:
    path: Path
    fd: int

    def update(self, info: dict[str, Any]) -> None:
        """Rewrite what ``status`` reads about this daemon (its state changed)."""
        payload = json.dumps(info).encode()
        with contextlib.suppress(OSError):  # informational only: a full disk must not stop us here
            os.pwrite(self.fd, payload.ljust(max(len(payload), os.fstat(self.fd).st_size)), 0)

    def identity(self) -> tuple[int, int]:
        info = os.fstat(self.fd)
        return info.st_dev, info.st_ino

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def acquire(database: Path, info: dict[str, Any]) -> DaemonLock:
    path = lock_path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot create the daemon lock {path}: {exc.strerror or exc}; "
            "check that the database directory exists and is writable"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_info(fd)
        os.close(fd)
        pid = holder.get("pid", "unknown")
        raise DaemonLockedError(
            f"another scheduler daemon (pid {pid}) already serves {database}; "
            "stop it first, or point SCHEDULER_DB at another database"
        ) from None
    payload = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, payload, 0)
    return DaemonLock(path=path, fd=fd)


def _read_info(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        data = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe(database: Path) -> dict[str, Any]:
    """``{"running": bool, "pid", "since", "version"}`` for whichever daemon holds the lock."""
    path = lock_path(database)
    result: dict[str, Any] = {"running": False, "pid": None, "since": None, "version": None,
                              "instance": None, "state": None}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return result
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            result.update(
                running=True,
                pid=info.get("pid"),
                since=info.get("since"),
                version=info.get("version"),
                instance=info.get("instance"),
                state=info.get("state"),
            )
            if info.get("error"):
                result["error"] = info["error"]
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return result
