"""The metrics and health endpoint (SCHEDULER_HTTP_ADDR) of the real daemon, on a free port.

/metrics is parsed with the Prometheus parser; /healthz and /readyz are read as a probe would;
bad requests are sent on raw sockets, and the daemon must go on serving.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from conftest import shell_job, wait_until

NEVER_SOON = "0 0 1 1 *"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    status, body = get(port, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def stored(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def add(cli, **fields: Any) -> str:
    code, out, stdout, stderr = cli("jobs", "add", shell_job(**fields))
    assert code == 0, stdout + stderr
    return str(out["job"]["id"])


def endpoint_env(port: int, **extra: str) -> dict[str, str]:
    return {"SCHEDULER_HTTP_ADDR": f"127.0.0.1:{port}", **extra}


def serving(daemon, env: dict[str, str]) -> Any:
    """A daemon whose endpoint listens (it starts right after ``daemon.started``)."""
    d = daemon(env=env)
    d.wait_for_event("http.serving", timeout=15)
    return d


def test_metrics_count_runs_lateness_and_skips(cli, daemon, db) -> None:
    port = free_port()
    now = datetime.now(UTC)
    ok = add(cli, name="ok", schedule_cron=NEVER_SOON, payload_message="true")
    failing = add(cli, name="failing", schedule_cron=NEVER_SOON, payload_message="exit 3")
    # An occurrence 20 s late within its grace runs late; one an hour late beyond it is skipped.
    late = add(cli, name="late", schedule_cron=NEVER_SOON, misfire_grace_s=3600,
               next_run_at=stored(now - timedelta(seconds=20)))
    add(cli, name="missed", schedule_cron=NEVER_SOON, misfire_grace_s=60,
        next_run_at=stored(now - timedelta(hours=1)))
    d = serving(daemon, endpoint_env(port))
    for job_id in (ok, failing):
        assert cli("jobs", "run", job_id)[0] == 0
    wait_until(lambda: len(db("SELECT 1 FROM runs WHERE status IN ('ok', 'error')")) == 3, timeout=20)

    found: dict[Any, float] = {}

    def counted() -> bool:
        found.clear()
        found.update(samples(port))
        return value(found, "scheduler_runs_finished_total", target="shell", status="ok") == 2

    wait_until(counted, timeout=20)
    assert value(found, "scheduler_runs_finished_total", target="shell", status="error") == 1
    assert value(found, "scheduler_runs_started_total", target="shell", source="manual") == 2
    assert value(found, "scheduler_runs_started_total", target="shell", source="cron") == 1
    assert value(found, "scheduler_occurrences_skipped_total", reason="misfire") == 1
    # The late start: one observation, in no bucket below 10 s, in the 30 s one.
    assert value(found, "scheduler_start_lateness_seconds_count", source="cron") == 1
    assert value(found, "scheduler_start_lateness_seconds_bucket", source="cron", le="10.0") == 0
    assert value(found, "scheduler_start_lateness_seconds_bucket", source="cron", le="30.0") == 1
    assert value(found, "scheduler_runs_running", target="shell") == 0
    assert value(found, "scheduler_gateway_up") == 0  # port 9: no gateway
    assert value(found, "scheduler_store_read_ok") == 1
    assert value(found, "scheduler_dispatch_backlog", state="due") == 0
    tick = value(found, "scheduler_loop_last_tick_timestamp_seconds")
    assert tick is not None and abs(tick - datetime.now(UTC).timestamp()) < 60
    assert late in {r["job_id"] for r in db("SELECT job_id FROM runs WHERE status = 'ok'")}
    assert d.stop() == 0


def test_database_gauges_show_running_runs_and_waiting_work(cli, daemon) -> None:
    port = free_port()
    sleeper = add(cli, name="sleeper", schedule_cron=NEVER_SOON, payload_message="sleep 30",
                  resource_pool="one")
    blocked = add(cli, name="blocked", schedule_cron=NEVER_SOON, resource_pool="one")
    d = serving(daemon, endpoint_env(port))
    assert cli("jobs", "run", sleeper)[0] == 0
    wait_until(lambda: value(samples(port), "scheduler_runs_running", target="shell") == 1, timeout=20)
    assert cli("jobs", "run", blocked)[0] == 0  # waits for the pool's one place
    wait_until(lambda: value(samples(port), "scheduler_dispatch_backlog", state="due") == 1,
               timeout=20, interval=0.5)
    assert d.stop() == 0


def test_healthz_and_readyz_name_the_gateway(cli, daemon, fake_gateway) -> None:
    port = free_port()
    serving(daemon, endpoint_env(port, OPENCLAW_GATEWAY_URL=fake_gateway.url))
    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=20)
    wait_until(lambda: value(samples(port), "scheduler_gateway_up") == 1, timeout=20)
    fake_gateway.down()

    def not_ready() -> dict[str, Any] | None:
        status, body = get(port, "/readyz")
        return json.loads(body) if status == 503 else None

    answer = wait_until(not_ready, timeout=20)
    assert set(answer["failing"]) == {"gateway"}
    assert fake_gateway.url in answer["failing"]["gateway"]
    assert get(port, "/healthz")[0] == 200  # alive: only the gateway is missing
    # The failed probe told the daemon too: agent work waits at once.
    wait_until(lambda: value(samples(port), "scheduler_gateway_up") == 0, timeout=20)
    assert get(port, "/readyz", method="HEAD") == (503, b"")


def raw(port: int, data: bytes, *, close_write: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_bad_requests_get_an_error_and_the_daemon_serves_on(cli, daemon) -> None:
    port = free_port()
    d = serving(daemon, endpoint_env(port))
    assert raw(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(port, b"GET /metrics SPDY/9\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert raw(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw(port, b"GET /nowhere HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw(port, b"DELETE /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw(port, b"\xff\xfe\x00\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(port, b"GET /healthz HTTP/1.1\r\n") == b""  # cut short: closed, no answer
    # Many idle connections that never send a request: the endpoint still answers a probe
    # (beyond the bound, with 503), and everything works once they go.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(40)]
    try:
        status, _ = get(port, "/healthz")
        assert status in (200, 503)
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=20)
    job = add(cli, name="after", schedule_cron=NEVER_SOON)
    assert cli("jobs", "run", job)[0] == 0
    wait_until(lambda: value(samples(port), "scheduler_runs_finished_total",
                             target="shell", status="ok") == 1, timeout=20)
    assert not d.events("daemon.task_failed") and not d.events("http.handler_failed")
    assert d.stop() == 0


def test_the_endpoint_is_off_unless_asked_for(cli, daemon) -> None:
    port = free_port()
    d = daemon()
    assert not d.events("http.serving")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        connected = True
    except OSError:
        connected = False
    assert not connected
    assert d.stop() == 0


def test_without_the_endpoint_prometheus_client_is_not_even_imported(tmp_path) -> None:
    """Off means free: no registry, no import (a tenth of a second of start-up, and memory)."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from scheduler.config import load_settings\n"
             "from scheduler.engine.daemon import Daemon\n"
             "Daemon(load_settings({'SCHEDULER_DB': sys.argv[1]}))\n"
             "print('prometheus_client' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "x.db")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_remote_address_is_refused_without_the_opt_in(cli, daemon) -> None:
    d = daemon(env={"SCHEDULER_HTTP_ADDR": "0.0.0.0:9464"}, wait=False)
    assert d.proc.wait(15) != 0
    d.kill()
    assert any("SCHEDULER_HTTP_ADDR" in line and "loopback" in line for line in d.lines)
    assert not any("Traceback" in line for line in d.lines)


def test_a_port_in_use_stops_the_start_in_one_line(cli, daemon) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = daemon(env=endpoint_env(port), wait=False)
        assert d.proc.wait(15) != 0
        d.kill()
    assert any(f"SCHEDULER_HTTP_ADDR 127.0.0.1:{port}: cannot listen" in line for line in d.lines)
    assert not any("Traceback" in line for line in d.lines)


def test_the_address_setting_is_checked_without_showing_secrets() -> None:
    import pytest

    from scheduler.config import load_settings
    from scheduler.errors import ConfigError

    assert load_settings({"SCHEDULER_HTTP_ADDR": "[::1]:9464"}).http_addr == "[::1]:9464"
    assert load_settings({}).http_addr is None  # off by default
    for bad in ("9464", "127.0.0.1:", "127.0.0.1:70000", "host name:1"):
        with pytest.raises(ConfigError, match="SCHEDULER_HTTP_ADDR"):
            load_settings({"SCHEDULER_HTTP_ADDR": bad})
    secret = {"OPENCLAW_GATEWAY_TOKEN": "s3cret-token"}
    with pytest.raises(ConfigError, match="loopback") as refused:
        load_settings({"SCHEDULER_HTTP_ADDR": "192.0.2.1:9464", **secret})
    assert "s3cret" not in str(refused.value)
    allowed = {"SCHEDULER_HTTP_ADDR": "0.0.0.0:9464", "SCHEDULER_HTTP_ALLOW_REMOTE": "1"}
    assert load_settings(allowed).http_addr == "0.0.0.0:9464"


def test_skip_messages_map_to_few_reasons() -> None:
    from scheduler.engine.metrics import skip_reason

    assert skip_reason("previous run still active (overlap_policy skip)") == "overlap"
    assert skip_reason("missed: fire time 2026-01-01 00:00:00 UTC was 3600s ago, beyond "
                       "misfire_grace_s 60") == "misfire"
    assert skip_reason("missed: queued retry run due x UTC waited 9s for resource pool gpu "
                       "(1/1 busy), beyond misfire_grace_s 5") == "pool"
    assert skip_reason("fire time x UTC already claimed (key k)") == "already_claimed"
    assert skip_reason("job disabled; queued retry run cancelled") == "disabled"
    assert skip_reason("chained run not started: 3 queued runs already wait "
                       "(max_queued_dispatches); triggered by run r of p") == "queue_full"
    assert skip_reason(None) == "other"


async def test_healthz_fails_naming_the_loop_once_it_stops_going_round() -> None:
    import time

    from scheduler.engine.health import LiveState, Probes
    from scheduler.engine.metrics import Metrics
    from scheduler.gateway.client import GatewayClient
    from scheduler.store.thread import StoreThread

    ticked = [time.monotonic()]
    gateway = GatewayClient("http://127.0.0.1:9", None)
    probes = Probes(StoreThread(), gateway, Metrics(), tick_s=1.0,
                    live=lambda: LiveState({}, False, ticked[0], False), on_gateway_down=lambda: None)
    try:
        assert (await probes.healthz()).status == 200
        ticked[0] -= probes.loop_bound_s + 1  # the loop's last round, as long ago as that
        answer = await probes.healthz()
        assert answer.status == 503 and "loop" in json.loads(answer.body)["failing"]
    finally:
        await gateway.aclose()
