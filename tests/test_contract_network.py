"""``contract_network: "none"`` on shell jobs: the command runs without the host's network, or not at
all (docs/trust.md). Real daemon, real shell, a real TCP server on the host's loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import add_job, processes_with_environment, shell_job, wait_until
from peers import deny_unshare

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="network namespaces are Linux-only")

REFUSAL_START = "contract_network 'none' refused: no network namespace is available here ("
NOT_RUN_END = "; the command was not run"


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP server on the host's 127.0.0.1: (port, one entry per connection it accepted)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()
    thread.join(5)


def _connect_command(port: int, marker: Path) -> str:
    # bash's /dev/tcp: a connect from inside the job's shell, no other tool needed.
    return (f"echo started > {marker}; exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected "
            "|| { echo no-connection; exit 7; }")


def _run_now(cli: Any, db: Any, job_id: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "run", job_id)
    assert code == 0, stdout + stderr
    finished = "SELECT * FROM runs WHERE dispatch_queue_id = ? AND status != 'running'"
    rows = wait_until(lambda: db(finished, (out["dispatch_id"],)), timeout=30, message="run finished")
    run: dict[str, Any] = rows[0]
    return run


def test_a_no_network_job_cannot_reach_the_hosts_loopback(cli, daemon, db, tmp_path, host_server) -> None:
    port, accepted = host_server
    open_marker, closed_marker = tmp_path / "open.txt", tmp_path / "closed.txt"
    # Values other than "none" stay declarative: that job keeps the host's network.
    with_network = add_job(cli, shell_job(name="with network", schedule_cron="0 3 * * *",
                                          contract_network="restricted",
                                          payload_message=_connect_command(port, open_marker)))
    without = add_job(cli, shell_job(name="no network", schedule_cron="0 3 * * *",
                                     contract_network="none",
                                     payload_message=_connect_command(port, closed_marker)))
    daemon()

    run = _run_now(cli, db, with_network["id"])
    assert run["status"] == "ok", run
    assert "connected" in run["shell_stdout"]
    wait_until(lambda: accepted, timeout=10, message="the host server saw the connection")
    seen = len(accepted)

    run = _run_now(cli, db, without["id"])
    assert closed_marker.exists(), "the command ran"
    assert (run["status"], run["shell_exit_code"]) == ("error", 7), run
    assert "no-connection" in run["shell_stdout"]
    assert len(accepted) == seen


def test_a_no_network_job_keeps_its_own_loopback_and_user(cli, daemon, db) -> None:
    # Another network namespace than the daemon's (and the test's), lo up inside (a server and a
    # client of the same job can talk), and the uid unchanged.
    script = ("python3 -c \"import socket,os; s=socket.create_server(('127.0.0.1',0)); "
              "c=socket.create_connection(s.getsockname()); "
              "print('loopback-ok', os.getuid(), os.readlink('/proc/self/ns/net'))\"")
    job = add_job(cli, shell_job(schedule_cron="0 3 * * *", contract_network="none",
                                 payload_message=script))
    daemon()
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "ok", run
    word, uid, namespace = run["shell_stdout"].split()
    assert (word, uid) == ("loopback-ok", str(os.getuid()))
    assert namespace != os.readlink("/proc/self/ns/net")


def test_isolation_turned_off_refuses_and_does_not_run_the_command(cli, daemon, db, tmp_path) -> None:
    marker = tmp_path / "ran.txt"
    job = add_job(cli, shell_job(schedule_cron="0 3 * * *", contract_network="none",
                                 payload_message=f"touch {marker}"))
    daemon(env={"SCHEDULER_NETWORK_ISOLATION": "off"})
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "error"
    assert run["error_message"] == f"{REFUSAL_START}SCHEDULER_NETWORK_ISOLATION=off){NOT_RUN_END}"
    assert not marker.exists()


@pytest.mark.skipif(not deny_unshare.supported(), reason="the seccomp test filter knows x86-64 and aarch64")
def test_a_host_without_namespaces_refuses_and_does_not_run_the_command(cli, daemon, db, tmp_path) -> None:
    marker, plain_marker = tmp_path / "ran.txt", tmp_path / "plain.txt"
    job = add_job(cli, shell_job(name="isolated", schedule_cron="0 3 * * *", contract_network="none",
                                 payload_message=f"touch {marker}"))
    plain = add_job(cli, shell_job(name="plain", schedule_cron="0 3 * * *",
                                   payload_message=f"touch {plain_marker}"))
    # The daemon runs where unshare(2) fails with EPERM, as on a host without the privilege or
    # the user namespaces a network namespace needs.
    daemon(prefix=(sys.executable, deny_unshare.__file__))
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "error"
    assert run["error_message"].startswith(REFUSAL_START), run["error_message"]
    assert run["error_message"].endswith(NOT_RUN_END)
    assert "Operation not permitted" in run["error_message"]
    assert not marker.exists()
    assert _run_now(cli, db, plain["id"])["status"] == "ok"  # other shell jobs are unaffected
    assert plain_marker.exists()


AGENT_SPEC = {"name": "turn", "session_target": "isolated", "payload_message": "hi",
              "schedule_cron": "0 3 * * *", "run_timeout_ms": 30000, "origin": "system",
              "delivery_mode": "none", "delivery_opt_out_reason": "test"}


def test_validation_refuses_no_network_for_agent_jobs(cli, db) -> None:
    code, out, _, _ = cli("jobs", "add", json.dumps({**AGENT_SPEC, "contract_network": "none"}))
    assert code != 0
    assert out["error"].startswith('contract_network "none" is only enforced for session_target "shell"')
    assert db("SELECT id FROM jobs") == []
    shell = add_job(cli, shell_job(schedule_cron="0 3 * * *", contract_network="none"))
    code, out, _, _ = cli("jobs", "update", shell["id"], json.dumps({"session_target": "isolated",
                                                                    "payload_kind": "agentTurn",
                                                                    "delivery_opt_out_reason": "t"}))
    assert code != 0 and "only enforced" in out["error"]
    assert db("SELECT session_target FROM jobs")[0]["session_target"] == "shell"
    # Other values are text the reference stores; they stay accepted on any job.
    add_job(cli, json.dumps({**AGENT_SPEC, "contract_network": "restricted"}))


def test_a_stored_agent_job_with_no_network_fails_without_a_turn(cli, daemon, db, db_path,
                                                                  fake_gateway) -> None:
    job = add_job(cli, json.dumps(AGENT_SPEC))
    with sqlite3.connect(db_path) as conn:  # a row written before (or around) validation
        conn.execute("UPDATE jobs SET contract_network = 'none' WHERE id = ?", (job["id"],))
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "error"
    assert run["error_message"].endswith("; the turn was not started")
    assert fake_gateway.chats == []


def test_a_no_network_job_that_overruns_is_killed_with_everything_it_started(cli, daemon, db,
                                                                             tmp_path) -> None:
    # The helper exec's the shell, so the run's process group and process hunt are unchanged.
    namespace = tmp_path / "netns.txt"
    job = add_job(cli, shell_job(schedule_cron="0 3 * * *", contract_network="none",
                                 run_timeout_ms=1500,
                                 payload_message=f"readlink /proc/self/ns/net > {namespace}; "
                                                 "sleep 300 & sleep 300"))
    daemon()
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "timeout", run
    assert namespace.read_text().strip() != os.readlink("/proc/self/ns/net")
    wait_until(lambda: not processes_with_environment(f"SCHEDULER_RUN_ID={run['id']}"), timeout=15,
               message="every process of the run ended")


def _interpreter_for(uid: int) -> str | None:
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            done = subprocess.run([candidate, "-c", "pass"], user=uid, group=uid,
                                  capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_an_unprivileged_user_gets_the_namespace_as_itself() -> None:
    from scheduler.strategies import netns_exec

    nobody = 65534
    interpreter = _interpreter_for(nobody)
    if interpreter is None:
        pytest.skip("no Python interpreter the unprivileged user may run")
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o755)
        helper = Path(scratch, "netns_exec.py")
        shutil.copy(netns_exec.__file__, helper)
        os.chmod(helper, 0o644)
        done = subprocess.run(
            [interpreter, "-I", "-S", str(helper), "/bin/sh", "-c",
             "id -u; readlink /proc/self/ns/net; cat /proc/net/dev"],
            user=nobody, group=nobody, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode == netns_exec.REFUSED_EXIT:
        pytest.skip(f"this host has no unprivileged user namespaces: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    uid, namespace, *devices = done.stdout.split("\n")
    assert uid == str(nobody)
    assert namespace != os.readlink("/proc/self/ns/net")
    assert [line.split(":")[0].strip() for line in devices[2:] if line.strip()] == ["lo"]
