"""Keep the daemon's secrets from the jobs it runs and from other processes of its user.

Called once by the daemon's entry, after the settings are read (they hold the token from here on):

* **The environment.** Every variable a shell job would not receive (the gateway token, and the
  secret-looking names ``strategies/shell.py`` recognises, minus ``SCHEDULER_SHELL_ENV_ALLOW``)
  leaves ``os.environ``. Clearing ``os.environ`` does not change ``/proc/<pid>/environ``: that
  shows the block the kernel laid out at exec, which is still in the process's memory. So the
  bytes of those variables are also overwritten there (Linux). Jobs still get what they got
  before: they are given the scrubbed copy, and only what the scrub removes is cleared.
* **Non-dumpable** (Linux, ``prctl(PR_SET_DUMPABLE, 0)``): other processes of the same user can
  no longer open the daemon's ``/proc/<pid>/environ``, ``mem``, ``maps`` or ``fd``, attach a
  debugger (py-spy, gdb, strace) or get a core dump. An operator profiling the daemon uses
  ``sudo``. The flag is not inherited across exec, so the jobs themselves stay ordinary.

What remains is written down in docs/operating.md ("Secrets and the daemon's process"): root, or
anything with ``CAP_SYS_PTRACE``, can still read the daemon's memory, where the token lives as
long as the daemon talks to the gateway.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from scheduler.strategies.shell import scrubbed_environment

_PR_SET_DUMPABLE = 4
# Fields 50 and 51 of /proc/<pid>/stat (1-based): where the exec-time environment block lies.
_ENV_START_FIELD = 50


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden_process` did, for the start-up log line (names only, never values)."""

    cleared: tuple[str, ...]
    environ_block_wiped: bool
    dumpable: bool


def harden_process(env_allow: Iterable[str]) -> Hardening:
    """Clear the secrets jobs may not see from the environment, then make the process non-dumpable."""
    cleared = clear_secret_variables(os.environ, env_allow)
    wiped = wipe_exec_environment(cleared) if cleared else True
    return Hardening(cleared=tuple(cleared), environ_block_wiped=wiped, dumpable=not make_non_dumpable())


def secret_variable_names(environ: MutableMapping[str, str], env_allow: Iterable[str]) -> list[str]:
    """The variables no shell job receives: exactly what the shell scrub removes."""
    kept = scrubbed_environment(environ, env_allow)
    return sorted(name for name in environ if name not in kept)


def clear_secret_variables(environ: MutableMapping[str, str], env_allow: Iterable[str]) -> list[str]:
    """Remove them from ``environ`` (``os.environ`` also unsets them in the C environment)."""
    names = secret_variable_names(environ, env_allow)
    for name in names:
        del environ[name]
    return names


def wipe_exec_environment(names: Iterable[str]) -> bool:
    """Zero the ``NAME=value`` strings of ``names`` in the exec-time environment block.

    Safe only once they are unset: then nothing points at those bytes any more. False when the
    block cannot be found (not Linux, /proc unreadable).
    """
    span = _environment_block()
    if span is None:
        return False
    start, end = span
    block = ctypes.string_at(start, end - start)
    prefixes = tuple(os.fsencode(name) + b"=" for name in names)
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(prefixes):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
    return True


def _environment_block() -> tuple[int, int] | None:
    if sys.platform != "linux":
        return None
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which sits in parentheses and may hold spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    index = _ENV_START_FIELD - 3
    try:
        start, end = int(fields[index]), int(fields[index + 1])
    except (IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``; True when the process is now non-dumpable (Linux only)."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
