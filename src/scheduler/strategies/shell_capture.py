"""One stream of a shell run as it arrives: a bounded head in memory, the stream in a file.

Memory per stream never exceeds ``head_limit`` bytes (what the stored columns and the preview
need), whatever the command writes. Given an :class:`ArtifactSpec`, a stream that outgrows both
the head and the offload threshold is written to ``<artifacts>/runs/<run id>/<label>.txt`` as it
arrives (directories 0700, the file 0600, opened with ``O_NOFOLLOW``), up to ``max_bytes``.
Beyond that the bytes are counted and dropped, and the file ends with a note saying so. A file
whose stream stayed at or under the threshold (or held only whitespace) is removed at the end, as
the reference never writes one. A write error (a full disk) never fails the run: the file is
removed, the head is kept, and the error is reported for ``error_message``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))


def capture_note(label: str, kept_bytes: int, total_bytes: int) -> str:
    return f"[{label} capture limit reached: kept {kept_bytes} of {total_bytes} bytes]"


def safe_run_id(run_id: str) -> bool:
    return bool(run_id) and run_id not in (".", "..") and not any(c in run_id for c in "/\\\x00")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (existing directories are left alone)."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise


def open_private_file(path: Path) -> int:
    """Create or truncate ``path`` with mode 0600, refusing a symlink in its place."""
    return os.open(path, _OPEN_FLAGS, FILE_MODE)


def write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass(frozen=True)
class ArtifactSpec:
    """Where a run's output files go, and how much of a stream they may hold."""

    artifacts_dir: Path
    run_id: str
    offload_threshold: int
    max_bytes: int

    def path_for(self, label: str) -> Path:
        return Path(os.path.abspath(self.artifacts_dir)) / "runs" / self.run_id / f"{label}.txt"


@dataclass(frozen=True)
class StoredArtifact:
    """What became of a stream's file. ``path`` is set when the stream is kept in it (it went past
    the offload threshold), holding the first ``kept_bytes`` bytes of the output; ``error`` when
    it had to be kept but could not be written."""

    path: str | None
    kept_bytes: int
    error: str | None


class StreamCapture:
    """Receives one stream's bytes (never blocks, never raises) and keeps what is needed."""

    def __init__(self, label: str, head_limit: int, spec: ArtifactSpec | None = None) -> None:
        self.label = label
        self.head_limit = head_limit
        self.head = bytearray()
        self.total = 0
        self._spec = spec
        self._spool_after = min(spec.offload_threshold, head_limit) if spec is not None else 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._kept = 0
        self._blank = True  # nothing but whitespace so far
        self._error: str | None = None

    def feed(self, data: bytes) -> None:
        before = self.total
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
        if self._blank and data.strip():
            self._blank = False
        if self._spec is None or self._error is not None:
            return
        if self._fd is None:
            if self.total <= self._spool_after or not self._open(self._spec):
                return
            # Spooling starts at the first chunk past min(threshold, head): all before it is in head.
            self._write(self.head[:before])
        self._write(data)

    def _open(self, spec: ArtifactSpec) -> bool:
        if not safe_run_id(spec.run_id):
            self._fail(f"run id {spec.run_id!r} cannot name a directory")
            return False
        path = spec.path_for(self.label)
        try:
            ensure_private_dir(path.parent)
            self._fd = open_private_file(path)
        except OSError as exc:
            self._fail(str(exc))
            return False
        self._path = path
        return True

    def _write(self, data: bytes | bytearray) -> None:
        assert self._spec is not None and self._fd is not None
        room = self._spec.max_bytes - self._kept
        piece = data if len(data) <= room else data[:room]
        if not piece:
            return
        try:
            write_all(self._fd, piece)
        except OSError as exc:
            self._fail(str(exc))
            return
        self._kept += len(piece)

    def _fail(self, reason: str) -> None:
        """Stop writing and drop the partial file: it would mislead ``runs output``."""
        self._error = f"{self.label} offload failed: {reason}"
        self._drop_file()

    def _drop_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            with contextlib.suppress(OSError):
                os.rmdir(self._path.parent)  # only if empty: the other stream may have a file
            self._path = None

    def discard(self) -> None:
        """The run was cancelled: nothing will point at the file."""
        self._drop_file()

    def close(self) -> StoredArtifact | None:
        """Finish the file; ``None`` when no spec was given."""
        spec = self._spec
        if spec is None:
            return None
        needed = self.total > spec.offload_threshold and not self._blank
        if self._fd is None or not needed:
            self._drop_file()
            return StoredArtifact(None, 0, self._error if needed else None)
        if self._kept < self.total:
            with contextlib.suppress(OSError):  # the data is there; only the note would be lost
                write_all(self._fd, f"\n{capture_note(self.label, self._kept, self.total)}\n".encode())
        try:
            os.close(self._fd)
        except OSError as exc:  # a network file system may report a failed write only here
            self._fd = None
            self._fail(str(exc))
            return StoredArtifact(None, 0, self._error)
        self._fd = None
        return StoredArtifact(str(self._path), self._kept, None)
