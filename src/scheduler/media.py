"""Image attachments of outbound deliveries: ``[IMAGE:/path]`` markers, and which files may go.

A shell job's stdout or an agent's reply names an image by a line of its own,
``[IMAGE:/absolute/path]`` (the reference's marker, features §4.5). :func:`extract_markers`
takes those lines out of the text and returns the paths in order. :class:`MediaPolicy` decides,
when the run ends and again just before sending, whether a path may be sent: a shell command can
name any file the daemon can read, so only these go out:

* the real path (symlinks resolved) lies under one of the allowed directories (by default the
  system temp directory and the scheduler's artifacts directory; ``SCHEDULER_MEDIA_DIRS``
  replaces them);
* it is not the gateway token file, nor the database or one of its side files (by path, and by
  inode, so a hard link to one is refused too);
* it is a regular file of 1 to :data:`MAX_MEDIA_BYTES` bytes;
* its content starts like a PNG, JPEG, GIF, WebP or PDF file (the type sent is read from the
  content, never from the name, so a secret renamed ``x.png`` stays at home).

At most :data:`MAX_ATTACHMENTS` paths of at most :data:`MAX_PATH_LENGTH` characters are taken
per message. Standard library only: strategies, the engine and the store's callers import it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# A whole line, with its line break; spaces or tabs around it and a CR before the LF are allowed.
MARKER: Final = re.compile(r"^[ \t]*\[IMAGE:(/[^\]\n]+)\][ \t]*\r?(?:\n|\Z)", re.MULTILINE)
MAX_ATTACHMENTS: Final = 10
MAX_PATH_LENGTH: Final = 1024
# The gateway reads at most 2 MiB of a /tools/invoke body (openclaw 2026.9.6, fixed); the file
# travels base64-encoded (4/3 larger) with a few hundred bytes of JSON around it.
MAX_MEDIA_BYTES: Final = 1_500_000
_SNIFF_BYTES: Final = 16
_BLANK_RUNS: Final = re.compile(r"\n{3,}")
# SQLite's side files next to the database.
_DB_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")


class MediaRefused(Exception):
    """A path that may not be sent; the message says why (it names the path, never the content)."""


@dataclass(frozen=True)
class Extracted:
    """Text without its marker lines, and the paths they named (in order, duplicates dropped)."""

    text: str
    paths: tuple[str, ...]


def extract_markers(text: str) -> Extracted:
    """Take the ``[IMAGE:/path]`` lines out of ``text``.

    As in the reference, a marker is a whole line naming an absolute path; when there were any,
    runs of 3+ newlines become one blank line and the text is trimmed. Unlike the reference, the
    marker's line break goes with it (no blank line left in its place). Text without markers is
    returned unchanged."""
    paths = [match.group(1) for match in MARKER.finditer(text)]
    if not paths:
        return Extracted(text, ())
    stripped = _BLANK_RUNS.sub("\n\n", MARKER.sub("", text)).strip()
    return Extracted(stripped, tuple(dict.fromkeys(paths)))


def media_type(head: bytes) -> str | None:
    """The MIME type of a file starting with ``head``, if it is one of the types sent."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


@dataclass(frozen=True)
class Attachment:
    """A file read for sending."""

    path: str
    filename: str
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class Accepted:
    """What :meth:`MediaPolicy.accept` decided for a message's paths."""

    paths: tuple[str, ...]  # real paths, in the markers' order
    notes: tuple[str, ...]  # one line per path refused (or dropped past the count limit)

    def text_with_notes(self, text: str) -> str:
        """``text`` followed by the notes, after a blank line."""
        if not self.notes:
            return text
        notes = "\n".join(self.notes)
        return f"{text.rstrip()}\n\n{notes}" if text.strip() else notes


def _real_dir(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


class MediaPolicy:
    """Which files may be attached. ``allowed_dirs`` empty: nothing may."""

    def __init__(self, allowed_dirs: Iterable[Path], forbidden_files: Iterable[Path],
                 *, max_bytes: int = MAX_MEDIA_BYTES) -> None:
        self.allowed_dirs = tuple(dict.fromkeys(_real_dir(d) for d in allowed_dirs))
        self.forbidden = frozenset(os.path.realpath(p.expanduser()) for p in forbidden_files)
        self.max_bytes = max_bytes

    @classmethod
    def for_scheduler(cls, *, media_dirs: Sequence[Path], artifacts_dir: Path, db_path: Path,
                      token_path: Path) -> MediaPolicy:
        """The daemon's policy: ``media_dirs`` (SCHEDULER_MEDIA_DIRS) or, when empty, the temp
        and artifacts directories; never the token file or the database files."""
        allowed = tuple(media_dirs) or (Path(tempfile.gettempdir()), artifacts_dir)
        database = db_path.expanduser()
        forbidden = [token_path, *(database.with_name(database.name + s) for s in _DB_SUFFIXES)]
        return cls(allowed, forbidden)

    def accept(self, paths: Sequence[str]) -> Accepted:
        """Check each path now (at the run's end); refused ones become notes for the text."""
        accepted: list[str] = []
        notes: list[str] = []
        for index, path in enumerate(paths):
            if index >= MAX_ATTACHMENTS:
                notes.append(f"[{len(paths) - MAX_ATTACHMENTS} more image(s) not sent: at most "
                             f"{MAX_ATTACHMENTS} per message]")
                break
            try:
                real = self.inspect(path)
            except MediaRefused as exc:
                notes.append(f"[image not sent: {exc}]")
                continue
            if real not in accepted:
                accepted.append(real)
        return Accepted(tuple(accepted), tuple(notes))

    def check(self, path: str) -> str:
        """The real path of ``path`` if it may be sent; raises MediaRefused otherwise."""
        shown = _shown(path)
        if len(path) > MAX_PATH_LENGTH:
            raise MediaRefused(f"{shown}: the path is longer than {MAX_PATH_LENGTH} characters")
        if not os.path.isabs(path):
            raise MediaRefused(f"{shown}: not an absolute path")
        real = os.path.realpath(path)
        self._check_place(shown, real)
        try:
            info = os.stat(real)
        except FileNotFoundError:
            raise MediaRefused(f"{shown}: no such file") from None
        except OSError as exc:
            raise MediaRefused(f"{shown}: {exc.strerror or type(exc).__name__}") from None
        self._check_file(shown, info)
        return real

    def inspect(self, path: str) -> str:
        """:meth:`check`, and the file opens and starts like a type that is sent (its first bytes
        only are read). Returns the real path."""
        real = self.check(path)
        try:
            with open(real, "rb", opener=_nonblocking) as handle:
                head = handle.read(_SNIFF_BYTES)
        except OSError as exc:
            raise MediaRefused(f"{_shown(path)}: {exc.strerror or type(exc).__name__}") from None
        if media_type(head) is None:
            raise MediaRefused(f"{_shown(path)}: not a PNG, JPEG, GIF, WebP or PDF file")
        return real

    def read(self, path: str) -> Attachment:
        """Open and read ``path`` for sending, checking everything again on the opened file
        (it may have changed since the run ended). Raises MediaRefused."""
        shown = _shown(path)
        real = self.check(path)
        try:
            # O_NONBLOCK: a FIFO put in the file's place must not hang the sender.
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise MediaRefused(f"{shown}: {exc.strerror or type(exc).__name__}") from None
        with os.fdopen(fd, "rb") as handle:
            self._check_place(shown, _opened_path(fd, real))
            self._check_file(shown, os.fstat(fd))
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise MediaRefused(f"{shown}: larger than {self.max_bytes} bytes")
        mime = media_type(data[:_SNIFF_BYTES])
        if mime is None:
            raise MediaRefused(f"{shown}: not a PNG, JPEG, GIF, WebP or PDF file")
        return Attachment(path=real, filename=os.path.basename(real), mime_type=mime, data=data)

    def _forbidden_identities(self) -> set[tuple[int, int]]:
        """(device, inode) of the forbidden files that exist now (the WAL comes and goes)."""
        found: set[tuple[int, int]] = set()
        for path in self.forbidden:
            with contextlib.suppress(OSError):
                info = os.stat(path)
                found.add((info.st_dev, info.st_ino))
        return found

    def _check_place(self, shown: str, real: str) -> None:
        if real in self.forbidden:
            raise MediaRefused(f"{shown}: the scheduler's own files (gateway token, database) "
                               "are never sent")
        if not any(_inside(directory, real) for directory in self.allowed_dirs):
            raise MediaRefused(f"{shown}: not under an allowed directory (SCHEDULER_MEDIA_DIRS)")

    def _check_file(self, shown: str, info: os.stat_result) -> None:
        if (info.st_dev, info.st_ino) in self._forbidden_identities():
            # A hard link to the token file or the database has a path of its own.
            raise MediaRefused(f"{shown}: the scheduler's own files (gateway token, database) "
                               "are never sent")
        if not stat.S_ISREG(info.st_mode):
            raise MediaRefused(f"{shown}: not a regular file")
        if info.st_size == 0:
            raise MediaRefused(f"{shown}: the file is empty")
        if info.st_size > self.max_bytes:
            raise MediaRefused(f"{shown}: larger than {self.max_bytes} bytes "
                               f"({info.st_size} bytes)")


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW)


def _opened_path(fd: int, fallback: str) -> str:
    """Where the opened file really is (Linux: /proc/self/fd), so a path swapped between the
    check and the open is caught; elsewhere the checked path."""
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")
    return fallback


def _inside(directory: Path, real: str) -> bool:
    try:
        Path(real).relative_to(directory)
    except ValueError:
        return False
    return True


def _shown(path: str) -> str:
    """The path as a note shows it: one line, cut if very long."""
    flat = path.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= 200 else flat[:197] + "..."


__all__ = [
    "MARKER",
    "MAX_ATTACHMENTS",
    "MAX_MEDIA_BYTES",
    "MAX_PATH_LENGTH",
    "Accepted",
    "Attachment",
    "Extracted",
    "MediaPolicy",
    "MediaRefused",
    "extract_markers",
    "media_type",
]
