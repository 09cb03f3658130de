"""``contract_network: "none"`` for shell jobs: the command runs in a network namespace of its own.

The shell is started through :mod:`scheduler.strategies.netns_exec`, which enters the namespace and
then ``exec``s the shell (same pid, session and process group). When the namespace cannot be made
(not Linux, no privilege and no unprivileged user namespaces, or the operator turned isolation
off with ``SCHEDULER_NETWORK_ISOLATION=off``), the run fails with :data:`REFUSAL_MESSAGE` and the
command is not started: fail closed, never with the host's network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from scheduler.strategies import netns_exec

# The one value of contract_network with a defined meaning: no network at all but the
# namespace's own loopback. Other values are stored, validated as text, and not enforced.
NETWORK_NONE = "none"
ISOLATION_VARIABLE = "SCHEDULER_NETWORK_ISOLATION"
ISOLATION_MODES = ("auto", "off")
REFUSAL_MESSAGE = ("contract_network 'none' refused: no network namespace is available here ({reason}); "
                   "the command was not run")
_HELPER = Path(netns_exec.__file__)
_PROBE_TIMEOUT_S = 10.0


def wants_no_network(contract_network: object) -> bool:
    return isinstance(contract_network, str) and contract_network.strip().lower() == NETWORK_NONE


def isolation_mode(environ: Mapping[str, str] | None = None) -> str:
    """``auto`` (try a namespace) or ``off`` (refuse every ``contract_network: none`` run)."""
    value = (os.environ if environ is None else environ).get(ISOLATION_VARIABLE, "").strip().lower()
    return value or "auto"


def refusal(reason: str) -> str:
    return REFUSAL_MESSAGE.format(reason=reason)


def isolated_argv(shell: str, command: str, env: Mapping[str, str]) -> list[str]:
    """The argv that runs ``shell -c command`` inside a fresh network namespace."""
    argv = [sys.executable, "-I", "-S", str(_HELPER)]
    if "LC_CTYPE" not in env:
        argv.append("--unset-lc-ctype")
    return [*argv, shell, "-c", command]


def refusal_reason(exit_code: int | None, stderr: bytes) -> str | None:
    """The helper's reason when it refused (the command did not run), else None."""
    if exit_code != netns_exec.REFUSED_EXIT:
        return None
    first = stderr.decode("utf-8", "replace").split("\n", 1)[0]
    if not first.startswith(netns_exec.REFUSAL_PREFIX):
        return None
    return first[len(netns_exec.REFUSAL_PREFIX):].strip() or "unknown reason"


def probe(environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether a shell job with ``contract_network: none`` can run here: (available, detail)."""
    if isolation_mode(environ) == "off":
        return False, f"{ISOLATION_VARIABLE}=off"
    try:
        done = subprocess.run([sys.executable, "-I", "-S", str(_HELPER), "--probe"],
                              capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"probe failed: {exc}"
    if done.returncode == 0:
        return True, "network namespace"
    return False, refusal_reason(done.returncode, done.stderr) or f"probe exited {done.returncode}"
