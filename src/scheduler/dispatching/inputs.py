"""Where a dispatch prompt comes from: a flag, a file, an environment variable or stdin.

Literal-safe: the text is taken byte for byte (decoded as UTF-8), never through a shell, so a
prompt full of ``$(...)``, quotes or backticks reaches the agent as written. Bounded: at most
:data:`MAX_MESSAGE_BYTES`; a longer source is refused, not cut. Only one source may be named.
Piped stdin is read when no source is named and stdin is a pipe or a regular file (never a
terminal, nor ``/dev/null`` or another device).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO, Final

from scheduler.dispatching.spec import BadArgument

MAX_MESSAGE_BYTES: Final = 256 * 1024
_SOURCES: Final = "--message, --message-file, --message-env, --message-stdin, or piped stdin"


@dataclass(frozen=True)
class MessageSources:
    """The flags as given (None: absent)."""

    message: str | None = None
    message_file: str | None = None
    message_env: str | None = None
    message_stdin: bool = False


def _decoded(raw: bytes, source: str) -> str:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadArgument(f"{source}: the message is larger than {MAX_MESSAGE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArgument(f"{source}: the message is not UTF-8 text") from None


def _read_stream(stream: BinaryIO, source: str) -> str:
    return _decoded(stream.read(MAX_MESSAGE_BYTES + 1), source)


def _read_file(path: str) -> str:
    """A regular file or a pipe, read bounded; a directory or device is refused unread.

    A pipe is opened blocking (a non-blocking open would read its end before any writer came);
    anything else non-blocking, so a device cannot hold the open."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
        blocking = 0 if fifo else os.O_NONBLOCK
        fd = os.open(path, os.O_RDONLY | blocking | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadArgument(f"--message-file: could not read {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        os.close(fd)
        raise BadArgument(f"--message-file: {path} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as stream:
        return _read_stream(stream, "--message-file")


def stdin_is_piped(stream: BinaryIO) -> bool:
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def resolve_message(sources: MessageSources, *, stdin: BinaryIO | None = None,
                    environ: Mapping[str, str] | None = None) -> str | None:
    """The prompt text, or None when no source was named and nothing is piped."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    env = os.environ if environ is None else environ
    named = [flag for flag, given in (
        ("--message", sources.message is not None), ("--message-file", sources.message_file is not None),
        ("--message-env", sources.message_env is not None), ("--message-stdin", sources.message_stdin),
    ) if given]
    if len(named) > 1:
        raise BadArgument(f"choose only one of {', '.join(named)} for the message")
    if sources.message is not None:
        if len(sources.message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
            raise BadArgument(f"--message is larger than {MAX_MESSAGE_BYTES // 1024} KiB")
        return sources.message
    if sources.message_file is not None:
        if sources.message_file == "-":
            return _piped(stream, "--message-file -")
        return _read_file(sources.message_file)
    if sources.message_env is not None:
        if sources.message_env not in env:
            raise BadArgument(f"--message-env: environment variable {sources.message_env} is not set")
        return _decoded(env[sources.message_env].encode("utf-8", "surrogateescape"), "--message-env")
    if sources.message_stdin:
        return _piped(stream, "--message-stdin")
    if stdin_is_piped(stream):
        text = _read_stream(stream, "stdin")
        return text or None
    return None


def _piped(stream: BinaryIO, source: str) -> str:
    if not stdin_is_piped(stream):
        raise BadArgument(f"{source} requires piped stdin")
    return _read_stream(stream, source)


def require_message(text: str | None) -> str:
    if text is None or not text.strip():
        raise BadArgument(f"{_SOURCES} is required")
    return text
