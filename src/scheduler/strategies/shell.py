"""Run one shell job's command as a child process group, and end every process it started.

Differences from the reference (``dispatcher-shell.js``), on purpose:

* the child runs in its own session / process group, with ``SCHEDULER_RUN_ID`` in its environment;
  every exit path (normal exit, timeout, cancellation) ends with SIGKILL to that group and to
  every process still carrying the run id or descending from the run (:mod:`process_tree`), so
  no grandchild outlives the run, not even one that left the group with ``setsid`` (§17 #34);
* a timeout sends ``SIGTERM`` to the whole group, waits ``kill_grace_s``, then kills everything;
* memory holds at most ``capture_limit_bytes`` of each stream; with an :class:`ArtifactSpec` the
  rest goes to the run's artifact file as it arrives (:mod:`shell_capture`), otherwise it is
  counted and discarded; the child is never killed for writing too much;
* the environment is built by the caller, normally from :func:`scrubbed_environment`, so the
  gateway bearer token and other secrets are not inherited (§17 #32);
* stdin is ``/dev/null`` unless the caller gives bytes to write to it (a chained run gets its
  parent's output), written without blocking and never waited for.

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
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from scheduler.strategies.network_isolation import isolated_argv
from scheduler.strategies.process_tree import (
    RUN_ID_VARIABLE,
    DeferredSweeper,
    Known,
    current_members,
    end_processes,
    log_leftovers_killed,
)
from scheduler.strategies.shell_capture import ArtifactSpec, StoredArtifact, StreamCapture
from scheduler.strategies.shell_env import (
    GATEWAY_TOKEN_VAR,
    SECRET_NAME_PARTS,
    is_secret_name,
    scrubbed_environment,
)

logger = logging.getLogger(__name__)

DEFAULT_CAPTURE_LIMIT = 64 * 1024 * 1024
_STDOUT_FD = 1
_STDERR_FD = 2
# After the group is dead, how long to keep waiting for the pipes to reach EOF. Only a process that
# left the group (setsid) and kept the pipes open can make this wait run out.
_MIN_PIPE_DRAIN_S = 1.0
# A shell that exited cleanly closes its pipes at the same instant; if they are still open this
# much later, something outside the group holds them and is hunted down at once.
_PIPE_CHECK_S = 0.25
# The process hunt at a timeout or a cancellation; at a forced stop, less.
_SWEEP_S = 2.0
_FORCED_SWEEP_S = 0.5

# Cleanups that outlived a second cancellation; kept referenced until they finish.
_background_cleanups: set[asyncio.Task[None]] = set()


def default_shell() -> str:
    """The reference's default shell: ``/bin/zsh`` on macOS, ``/bin/bash`` elsewhere."""
    return "/bin/zsh" if sys.platform == "darwin" else "/bin/bash"


@dataclass(frozen=True)
class ShellProcessResult:
    """What happened to one shell process.

    ``exit_code`` is set when the shell exited by itself (or after catching a signal);
    ``signal`` (e.g. ``"SIGTERM"``) when it was killed by a signal. ``stdout``/``stderr`` hold at
    most the capture limit (the head of each stream); ``*_total_bytes`` count everything the
    command wrote; ``*_artifact`` says what became of the stream's file when an
    :class:`ArtifactSpec` was given (``None`` otherwise). When the shell could not be started,
    ``spawn_error`` is set, ``exit_code`` is ``None`` and ``pid`` is 0.
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
    stdout_artifact: StoredArtifact | None = None
    stderr_artifact: StoredArtifact | None = None

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

    def artifact(self, label: str) -> StoredArtifact | None:
        return self.stdout_artifact if label == "stdout" else self.stderr_artifact


class _CaptureProtocol(asyncio.SubprocessProtocol):
    """Hands stdout and stderr to a :class:`StreamCapture` each; never applies back-pressure (so
    the child never blocks on a full pipe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, spec: ArtifactSpec | None) -> None:
        self.streams = {_STDOUT_FD: StreamCapture("stdout", limit, spec),
                        _STDERR_FD: StreamCapture("stderr", limit, spec)}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        stream = self.streams.get(fd)
        if stream is not None:
            stream.feed(data)

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


def _group_alive(pgid: int) -> bool:
    if pgid <= 0:  # 0 would ask about our own group
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _wait_done(future: asyncio.Future[None], timeout_s: float | None) -> bool:
    """Wait for ``future`` without cancelling it; True if it completed in time."""
    if future.done():
        return True
    done, _ = await asyncio.wait({future}, timeout=timeout_s)
    return future in done


@dataclass(frozen=True)
class _Run:
    """The handles for ending one run's processes."""

    pid: int  # the shell: its pid numbers the run's session and process group
    run_id: str
    protocol: _CaptureProtocol

    async def end_everything(self, when: str, known: Known | None = None) -> None:
        """SIGKILL the group and every process of the run (frozen first, see process_tree)."""
        killed = await asyncio.to_thread(end_processes, {self.run_id}, {self.pid: self.run_id},
                                         known=known, within_s=_SWEEP_S)
        _killpg(self.pid, signal.SIGKILL)  # where /proc is missing, the group is all we can reach
        killed.pop(self.pid, None)
        log_leftovers_killed(killed, when=when)

    def end_everything_now(self) -> None:
        """The same, blocking and with a shorter bound: for a second cancellation."""
        _killpg(self.pid, signal.SIGKILL)
        killed = end_processes({self.run_id}, {self.pid: self.run_id}, within_s=_FORCED_SWEEP_S)
        killed.pop(self.pid, None)
        log_leftovers_killed(killed, when="forced stop")

    async def terminate(self, grace_s: float, when: str) -> None:
        """SIGTERM the group, give the shell ``grace_s`` to exit, end everything, reap the shell.
        The run's processes are noted first: once the shell dies, its children lose their parent
        link, and one that also left the session and cleared its environment would be lost."""
        known: Known | None = None
        if not self.protocol.exited.done():
            known = await asyncio.to_thread(current_members, {self.run_id}, {self.pid: self.run_id})
            _killpg(self.pid, signal.SIGTERM)
            await _wait_done(self.protocol.exited, max(0.0, grace_s))
        await self.end_everything(when, known)
        await _wait_done(self.protocol.exited, None)

    async def end_after_exit(self, sweeper: DeferredSweeper | None) -> None:
        """The shell exited by itself. Anything left in its group, or holding its pipes, is hunted
        at once; otherwise the run is queued for the sweeper's next pass (a ``/proc`` pass per
        run would cost more than a short run itself)."""
        if _group_alive(self.pid) or not await _wait_done(self.protocol.finished, _PIPE_CHECK_S):
            await self.end_everything("exit")
        elif sweeper is not None:
            sweeper.add(self.run_id)
        else:
            await self.end_everything("exit")


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


def _spawn_failure(shell: str, cwd: str | None, exc: BaseException, started: float) -> ShellProcessResult:
    return not_started(_spawn_error_text(shell, cwd, exc), started)


def not_started(reason: str, started: float | None = None) -> ShellProcessResult:
    """The result of a command that was never started, for ``reason``."""
    started = time.monotonic() if started is None else started
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
        spawn_error=reason,
        started_monotonic=started,
        finished_monotonic=time.monotonic(),
    )


def _check_arguments(timeout_s: float, heartbeat_interval_s: float, capture_limit_bytes: int) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if not heartbeat_interval_s > 0:
        raise ValueError(f"heartbeat_interval_s must be positive, got {heartbeat_interval_s!r}")
    if capture_limit_bytes < 0:
        raise ValueError(f"capture_limit_bytes must not be negative, got {capture_limit_bytes!r}")


async def run_shell_command(
    command: str,
    *,
    shell: str,
    timeout_s: float,
    env: Mapping[str, str],
    cwd: str | None = None,
    capture_limit_bytes: int = DEFAULT_CAPTURE_LIMIT,
    artifacts: ArtifactSpec | None = None,
    run_id: str | None = None,
    sweeper: DeferredSweeper | None = None,
    kill_grace_s: float = 2.0,
    on_spawn: Callable[[int], None] | None = None,
    heartbeat: Callable[[], Awaitable[None]] | None = None,
    heartbeat_interval_s: float = 15.0,
    stdin_data: bytes | None = None,
    no_network: bool = False,
) -> ShellProcessResult:
    """Run ``shell -c command`` in a new session and wait for it, its processes and its pipes.

    ``run_id`` (else ``SCHEDULER_RUN_ID`` from ``env``, else a fresh UUID) goes into the child's
    environment as ``SCHEDULER_RUN_ID``; it is how the run's processes are found when it ends.
    After a clean exit, a ``sweeper`` lets the hunt for escaped processes be batched with other
    runs'. With ``artifacts``, each stream goes to its file as it arrives (:mod:`shell_capture`).
    ``stdin_data`` is written to the child's stdin, which is then closed (without it, stdin is
    ``/dev/null``); the caller bounds its size, since it is held in memory until written.
    Spawn failures are returned as ``spawn_error``; a cancellation of the calling task kills
    everything (TERM, ``kill_grace_s``, KILL), reaps the shell and re-raises ``CancelledError``.
    Raises ``ValueError`` for a non-positive ``timeout_s`` or ``heartbeat_interval_s`` or a
    negative ``capture_limit_bytes``. With ``no_network`` the shell is started in a network
    namespace of its own (:mod:`network_isolation`); the caller checks the result for a refusal.
    """
    _check_arguments(timeout_s, heartbeat_interval_s, capture_limit_bytes)
    run_id = run_id or env.get(RUN_ID_VARIABLE) or str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    argv = isolated_argv(shell, command, env) if no_network else [shell, "-c", command]
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _CaptureProtocol(loop, capture_limit_bytes, artifacts),
            *argv,
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, RUN_ID_VARIABLE: run_id},
            cwd=cwd,
            start_new_session=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _spawn_failure(shell, cwd, exc, started)

    run = _Run(pid=transport.get_pid(), run_id=run_id, protocol=protocol)
    if stdin_data is not None:
        _feed_stdin(transport, stdin_data)
    if on_spawn is not None:
        try:
            on_spawn(run.pid)
        except Exception:
            logger.exception("shell run on_spawn callback failed; the run continues")

    beat: asyncio.Task[None] | None = None
    if heartbeat is not None:
        beat = asyncio.create_task(_heartbeat_loop(heartbeat, heartbeat_interval_s))
    try:
        timed_out = await _see_through(run, timeout_s, kill_grace_s, sweeper)
    except BaseException:
        for stream in protocol.streams.values():  # cancelled: nothing will record the files
            stream.discard()
        raise
    finally:
        # Closes the pipes (a process that escaped every search may still hold them) and, should
        # the shell somehow still be running, kills it.
        transport.close()
        if beat is not None:
            beat.cancel()
            await asyncio.wait({beat})
    return _result(run, transport.get_returncode(), timed_out, started)


def _feed_stdin(transport: asyncio.SubprocessTransport, data: bytes) -> None:
    """Hand ``data`` to the child's stdin and close it once written. The pipe transport writes
    what the pipe takes and keeps the rest until the child reads it, so the loop never blocks; a
    child that exits (or closes stdin) without reading breaks the pipe, which only drops the
    rest: nothing waits for the child to read."""
    pipe = transport.get_pipe_transport(0)
    if not isinstance(pipe, asyncio.WriteTransport):
        return
    if data:
        pipe.write(data)
    pipe.close()  # after the buffered data is written (or the pipe breaks)


async def _see_through(run: _Run, timeout_s: float, kill_grace_s: float,
                       sweeper: DeferredSweeper | None) -> bool:
    """Wait for the shell (up to ``timeout_s``), end every process of the run, let the pipes
    drain. Returns whether it timed out."""
    timed_out = False
    try:
        if await _wait_done(run.protocol.exited, timeout_s):
            await run.end_after_exit(sweeper)
        else:
            timed_out = True
            await run.terminate(kill_grace_s, "timeout")
        await _wait_done(run.protocol.finished, max(kill_grace_s, _MIN_PIPE_DRAIN_S))
    except asyncio.CancelledError:
        await _cancel(run, kill_grace_s)
        raise
    return timed_out


def _result(run: _Run, returncode: int | None, timed_out: bool, started: float) -> ShellProcessResult:
    exit_code: int | None = None
    signal_name: str | None = None
    if returncode is not None:
        if returncode < 0:
            signal_name = _signal_name(-returncode)
        else:
            exit_code = returncode
    out, err = run.protocol.streams[_STDOUT_FD], run.protocol.streams[_STDERR_FD]
    stdout_artifact, stderr_artifact = out.close(), err.close()
    return ShellProcessResult(
        exit_code=exit_code,
        signal=signal_name,
        timed_out=timed_out,
        cancelled=False,
        stdout=bytes(out.head),
        stderr=bytes(err.head),
        stdout_total_bytes=out.total,
        stderr_total_bytes=err.total,
        pid=run.pid,
        spawn_error=None,
        started_monotonic=started,
        finished_monotonic=time.monotonic(),
        stdout_artifact=stdout_artifact,
        stderr_artifact=stderr_artifact,
    )


async def _cancel(run: _Run, grace_s: float) -> None:
    """End everything of a cancelled run, even if the caller cancels again meanwhile."""
    cleanup = asyncio.ensure_future(run.terminate(grace_s, "cancel"))
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        # Cancelled again while cleaning up: no more grace.
        run.end_everything_now()
        if not cleanup.done():
            _background_cleanups.add(cleanup)
            cleanup.add_done_callback(_background_cleanups.discard)
        raise


__all__ = [
    "DEFAULT_CAPTURE_LIMIT",
    "GATEWAY_TOKEN_VAR",
    "SECRET_NAME_PARTS",
    "ArtifactSpec",
    "ShellProcessResult",
    "StoredArtifact",
    "default_shell",
    "is_secret_name",
    "not_started",
    "run_shell_command",
    "scrubbed_environment",
]
