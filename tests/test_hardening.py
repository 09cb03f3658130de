"""engine/hardening.py: which variables leave the daemon, and what /proc shows afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.engine.hardening import clear_secret_variables, secret_variable_names

TOKEN = "tok-5b4a39-hardening"


def test_the_cleared_names_are_what_shell_jobs_would_not_get() -> None:
    environ = {"OPENCLAW_GATEWAY_TOKEN": TOKEN, "GITHUB_TOKEN": "g", "AWS_SECRET_ACCESS_KEY": "a",
               "DB_PASSWORD": "p", "PATH": "/usr/bin", "HOME": "/root", "LANG": "C"}
    # An allowed name stays (jobs receive it); the gateway token goes whatever the list says.
    allow = ["GITHUB_TOKEN", "OPENCLAW_GATEWAY_TOKEN"]
    assert secret_variable_names(environ, allow) == ["AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                                                     "OPENCLAW_GATEWAY_TOKEN"]
    cleared = clear_secret_variables(environ, allow)
    assert cleared == ["AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "OPENCLAW_GATEWAY_TOKEN"]
    assert environ == {"GITHUB_TOKEN": "g", "PATH": "/usr/bin", "HOME": "/root", "LANG": "C"}


_CHILD = """
import ctypes, json, os, sys
from scheduler.engine.hardening import harden_process
done = harden_process(["KEPT_TOKEN"])
libc = ctypes.CDLL(None)
print(json.dumps({"cleared": list(done.cleared), "wiped": done.environ_block_wiped,
                  "dumpable": libc.prctl(3, 0, 0, 0, 0),
                  "environ": sorted(k for k in os.environ if k.endswith(("TOKEN", "SECRET"))),
                  "self": open("/proc/self/environ", "rb").read().decode(errors="replace")}), flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and prctl are Linux")
def test_secrets_leave_the_environment_and_proc_and_the_process_is_not_dumpable() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENCLAW_GATEWAY_TOKEN": TOKEN,
           "SOME_SECRET": "s3cr3t-value-77",
           "KEPT_TOKEN": "kept-value-88"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        seen = json.loads(child.stdout.readline())
        from_outside = Path(f"/proc/{child.pid}/environ").read_bytes() if os.geteuid() == 0 else b""
    finally:
        child.communicate("\n", timeout=30)
    assert seen["cleared"] == ["OPENCLAW_GATEWAY_TOKEN", "SOME_SECRET"]
    assert seen["wiped"] is True and seen["dumpable"] == 0
    assert seen["environ"] == ["KEPT_TOKEN"]
    for view in (seen["self"].encode(), from_outside):
        assert TOKEN.encode() not in view and b"s3cr3t-value-77" not in view
    assert "KEPT_TOKEN=kept-value-88" in seen["self"]
    if from_outside:
        assert b"KEPT_TOKEN=kept-value-88" in from_outside
