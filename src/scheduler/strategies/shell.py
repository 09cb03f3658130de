"""Run one shell job's command as a child process group.

Differences from the reference (``dispatcher-shell.js``), on purpose:

* the child runs in its own session / process group, and every exit path (normal exit, timeout,
  cancellation) ends with ``SIGKILL`` to that group, so no grandchild outlives the run (§17 #34);
* a timeout sends ``SIGTERM`` to the whole group, waits ``kill_grace_s``, then ``SIGKILL``;
* output beyond ``capture_limit_bytes`` is counted and discarded instead of killing the child;
* the environment is built by the caller, normally from :func:`scrubbed_environment`, so the
  gateway bearer token and other secrets are not inherited (§17 #32).

Output is collected by a :class:`asyncio.SubprocessProtocol` rather than stream readers: it needs
no reader tasks, and it learns that the shell exited even while a grandchild still holds the pipes
open (``asyncio.subprocess.Process.wait`` on Python 3.11 only returns once the pipes close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

GATEWAY_TOKEN_VAR = "OPENCLAW_GATEWAY_TOKEN"
SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "KEY")

_STDOUT_FD = 1
_STDERR_FD = 2
# After the group is dead, how long to keep waiting for the pipes to reach EOF. Only a process that
# left the group (setsid) and kept the pipes open can make this wait run out.
_MIN_PIPE_DRAIN_S = 1.0

# Cleanups that outlived a second cancellation; kept referenced until they finish.
_background_cleanups: set[asyncio.Task[None]] = set()


def default_shell() -> str:
    """The reference's default shell: ``/bin/zsh`` on macOS, ``/bin/bash`` elsewhere."""
    return "/bin/zsh" if sys.platform == "darwin" else "/bin/bash"


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return name == GATEWAY_TOKEN_VAR or any(part in upper for part in SECRET_NAME_PARTS)


def scrubbed_environment(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """Copy ``environ`` without the gateway token and secret-looking variables.

    A variable is dropped when it is ``OPENCLAW_GATEWAY_TOKEN`` or its upper-cased name contains
    one of :data:`SECRET_NAME_PARTS`. Names listed in ``allow`` (exact, case-sensitive) are kept
    whatever they look like, except the gateway token, which no allow-list passes on.
    """
    allowed = frozenset(allow) - {GATEWAY_TOKEN_VAR}
    return {name: value for name, value in environ.items() if name in allowed or not is_secret_name(name)}


@dataclass(frozen=True)
class ShellProcessResult:
    """What happened to one shell process.

    ``exit_code`` is set when the shell exited by itself (or after catching a signal);
    ``signal`` (e.g. ``"SIGTERM"``) when it was killed by a signal. ``stdout``/``stderr`` hold at
    most the capture limit; ``*_total_bytes`` count everything the command wrote. When the shell
    could not be started, ``spawn_error`` is set, ``exit_code`` is ``None`` and ``pid`` is 0.
    :func:`run_shell_command` never returns ``cancelled=True`` (it re-raises the cancellation);
    the field lets a caller record a run that was cancelled.
    """

    exit_code: int | None
    signal: str | None
    timed_out: bool
    cancelled: bool
    stdout: bytes
    stderr: bytes
    stdout_total_bytes: int
    stderr_total_bytes: int
    pid: int
    spawn_error: str | None
    started_monotonic: float
    finished_monotonic: float

    @property
    def stdout_capture_cut(self) -> bool:
        """True when stdout was longer than the capture limit and its tail was discarded."""
        return self.stdout_total_bytes > len(self.stdout)

    @property
    def stderr_capture_cut(self) -> bool:
        return self.stderr_total_bytes > len(self.stderr)

    @property
    def duration_s(self) -> float:
        return self.finished_monotonic - self.started_monotonic


class _CaptureProtocol(asyncio.SubprocessProtocol):
    """Keeps the first ``limit`` bytes of stdout and stderr, counts the rest, never applies
    back-pressure (so the child never blocks on a full pipe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._limit = limit
        self.buffers: dict[int, bytearray] = {_STDOUT_FD: bytearray(), _STDERR_FD: bytearray()}
        self.totals: dict[int, int] = {_STDOUT_FD: 0, _STDERR_FD: 0}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        size = len(data)
        self.totals[fd] = self.totals.get(fd, 0) + size
        buffer = self.buffers.get(fd)
        if buffer is None:
            return
        room = self._limit - len(buffer)
        if room >= size:
            buffer += data
        elif room > 0:
            buffer += data[:room]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the process has exited and every pipe is closed.
        if not self.exited.done():
            self.exited.set_result(None)
        if not self.finished.done():
            self.finished.set_result(None)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 0:  # never signal our own group (0) or every process (-1)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _wait_done(future: asyncio.Future[None], timeout_s: float | None) -> bool:
    """Wait for ``future`` without cancelling it; True if it completed in time."""
    if future.done():
        return True
    done, _ = await asyncio.wait({future}, timeout=timeout_s)
    return future in done


async def _terminate_group(pgid: int, exited: asyncio.Future[None], grace_s: float) -> None:
    """SIGTERM the group, give the shell ``grace_s`` to exit, SIGKILL the group, reap the shell."""
    if not exited.done():
        _killpg(pgid, signal.SIGTERM)
        await _wait_done(exited, max(0.0, grace_s))
    _killpg(pgid, signal.SIGKILL)
    await _wait_done(exited, None)


async def _heartbeat_loop(heartbeat: Callable[[], Awaitable[None]], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await heartbeat()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("shell run heartbeat failed; the run continues")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _spawn_error_text(shell: str, cwd: str | None, exc: BaseException) -> str:
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if cwd is not None and exc.filename == cwd:
            return f"Cannot start shell {shell}: working directory {cwd}: {reason}"
        return f"Cannot start shell {shell}: {reason}"
    return f"Cannot start shell {shell}: {exc}"


async def run_shell_command(
    command: str,
    *,
    shell: str,
    timeout_s: float,
    env: Mapping[str, str],
    cwd: str | None = None,
    capture_limit_bytes: int = 64 * 1024 * 1024,
    kill_grace_s: float = 2.0,
    on_spawn: Callable[[int], None] | None = None,
    heartbeat: Callable[[], Awaitable[None]] | None = None,
    heartbeat_interval_s: float = 15.0,
) -> ShellProcessResult:
    """Run ``shell -c command`` in a new session and wait for it, its group and its pipes.

    Spawn failures are returned as ``spawn_error``; a cancellation of the calling task kills the
    group (TERM, ``kill_grace_s``, KILL), reaps the shell and re-raises ``CancelledError``.
    Raises ``ValueError`` for a non-positive ``timeout_s`` or ``heartbeat_interval_s`` or a
    negative ``capture_limit_bytes``.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if not heartbeat_interval_s > 0:
        raise ValueError(f"heartbeat_interval_s must be positive, got {heartbeat_interval_s!r}")
    if capture_limit_bytes < 0:
        raise ValueError(f"capture_limit_bytes must not be negative, got {capture_limit_bytes!r}")

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _CaptureProtocol(loop, capture_limit_bytes),
            shell,
            "-c",
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return ShellProcessResult(
            exit_code=None,
            signal=None,
            timed_out=False,
            cancelled=False,
            stdout=b"",
            stderr=b"",
            stdout_total_bytes=0,
            stderr_total_bytes=0,
            pid=0,
            spawn_error=_spawn_error_text(shell, cwd, exc),
            started_monotonic=started,
            finished_monotonic=time.monotonic(),
        )

    pid = transport.get_pid()  # == process group id: start_new_session makes it a group leader
    if on_spawn is not None:
        try:
            on_spawn(pid)
        except Exception:
            logger.exception("shell run on_spawn callback failed; the run continues")

    beat: asyncio.Task[None] | None = None
    if heartbeat is not None:
        beat = asyncio.create_task(_heartbeat_loop(heartbeat, heartbeat_interval_s))

    timed_out = False
    try:
        try:
            if not await _wait_done(protocol.exited, timeout_s):
                timed_out = True
                await _terminate_group(pid, protocol.exited, kill_grace_s)
            # The shell is gone; anything left in its group (background jobs) goes with it.
            _killpg(pid, signal.SIGKILL)
            await _wait_done(protocol.finished, max(kill_grace_s, _MIN_PIPE_DRAIN_S))
        except asyncio.CancelledError:
            cleanup = asyncio.ensure_future(_terminate_group(pid, protocol.exited, kill_grace_s))
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                # Cancelled again while cleaning up: no more grace.
                _killpg(pid, signal.SIGKILL)
                if not cleanup.done():
                    _background_cleanups.add(cleanup)
                    cleanup.add_done_callback(_background_cleanups.discard)
                raise
            _killpg(pid, signal.SIGKILL)
            raise
    finally:
        # Closes the pipes (a process that escaped the group may still hold them) and, should the
        # shell somehow still be running, kills it.
        transport.close()
        if beat is not None:
            beat.cancel()
            await asyncio.wait({beat})

    returncode = transport.get_returncode()
    exit_code: int | None = None
    signal_name: str | None = None
    if returncode is not None:
        if returncode < 0:
            signal_name = _signal_name(-returncode)
        else:
            exit_code = returncode
    return ShellProcessResult(
        exit_code=exit_code,
        signal=signal_name,
        timed_out=timed_out,
        cancelled=False,
        stdout=bytes(protocol.buffers[_STDOUT_FD]),
        stderr=bytes(protocol.buffers[_STDERR_FD]),
        stdout_total_bytes=protocol.totals[_STDOUT_FD],
        stderr_total_bytes=protocol.totals[_STDERR_FD],
        pid=pid,
        spawn_error=None,
        started_monotonic=started,
        finished_monotonic=time.monotonic(),
    )
