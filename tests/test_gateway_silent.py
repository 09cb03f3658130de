"""A gateway that accepts connections and never answers holds up nothing but agent jobs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from conftest import shell_job, wait_until


@pytest.fixture
def silent_gateway() -> Iterator[str]:
    """A loopback port whose kernel backlog accepts connections; nothing ever reads or replies."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_the_daemon_serves_before_a_silent_gateway_is_given_up(cli, daemon, db, silent_gateway) -> None:
    code, out, stdout, stderr = cli("jobs", "add", shell_job(name="local", delete_after_run=0), "--in", "1s")
    assert code == 0, stdout + stderr
    d = daemon(env={"OPENCLAW_GATEWAY_URL": silent_gateway})
    down = d.wait_for_event("gateway.down", timeout=20)
    (started,) = d.events("daemon.started")
    assert d.lines.index(next(line for line in d.lines if '"daemon.started"' in line)) < d.lines.index(
        next(line for line in d.lines if '"gateway.down"' in line)), (started, down)
    wait_until(lambda: db("SELECT 1 FROM runs WHERE job_id = ? AND status = 'ok'", (out["job"]["id"],)),
               timeout=15, message="the shell job ran while the gateway stayed silent")
    assert d.stop() == 0
