"""The agent registry (features §9.2, §4.10): ``agents list|get|register`` as the reference's CLI,
and the daemon keeping each agent's status around its turns: busy while the fake gateway holds
the turn, idle after it (whichever way it ends), offline when the gateway does not know the
agent, never left busy by a daemon that died."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from conftest import add_job, query, runs_of, wait_until
from fakegateway import CHAT, FakeGateway, RecordedRequest, Reply


def agent_spec(**overrides: Any) -> str:
    return json.dumps({"name": "writer job", "session_target": "isolated", "agent_id": "writer",
                       "payload_message": "write it", "run_timeout_ms": 30000,
                       "delivery_mode": "none", "delivery_opt_out_reason": "test",
                       "origin": "system", "schedule_cron": "0 0 1 1 *", **overrides})


def agent(db_path, agent_id: str) -> dict[str, Any] | None:
    rows = query(db_path, "SELECT * FROM agents WHERE id = ?", (agent_id,))
    return rows[0] if rows else None


def status_of(db_path, agent_id: str) -> tuple[Any, Any]:
    row = agent(db_path, agent_id)
    return (None, None) if row is None else (row["status"], row["session_key"])


class HeldTurns:
    """Chat requests the fake gateway holds until released; what the registry said meanwhile."""

    def __init__(self, gateway: FakeGateway, db_path: Any, agent_id: str) -> None:
        self.release = threading.Event()
        self.seen: list[tuple[Any, Any]] = []
        self._db_path, self._agent_id = db_path, agent_id
        gateway.on(CHAT, self._hold)

    def _hold(self, request: RecordedRequest) -> Reply | None:
        self.seen.append(status_of(self._db_path, self._agent_id))
        self.release.wait(30)
        return None  # the default reply


def ended(db, job_id: str) -> list[dict[str, Any]]:
    return [r for r in runs_of(db, job_id) if r["status"] != "running"]


# -- the CLI ------------------------------------------------------------------------------------------


def test_register_list_and_get_in_the_references_shapes(cli) -> None:
    code, out, _, _ = cli("agents", "register", "coder", "Code Bot", "--capabilities", '["code"]')
    assert code == 0 and out["ok"] is True
    registered = out["agent"]
    assert {k: registered[k] for k in ("id", "name", "status", "session_key", "capabilities")} == {
        "id": "coder", "name": "Code Bot", "status": "idle", "session_key": None,
        "capabilities": ["code"]}
    code, out, _, _ = cli("agents", "register", "ava")
    assert code == 0 and out["agent"]["name"] == "ava"  # the name defaults to the id
    code, listed, _, _ = cli("agents", "list")
    assert code == 0 and [a["id"] for a in listed] == ["ava", "coder"]
    assert listed[1] == registered
    code, got, _, _ = cli("agents", "get", "coder")
    assert code == 0 and got == registered

    code, _, stdout, _ = cli("agents", "list", json_mode=False)
    header, _, *lines = stdout.splitlines()
    assert header.split() == ["id", "name", "status", "lastSeen", "sessionKey"]
    assert lines[1].split()[:4] == ["coder", "Code", "Bot", "idle"]
    code, _, stdout, _ = cli("agents", "register", "ava", "Ava Two", json_mode=False)
    assert code == 0 and stdout.startswith("Registered: {") and '"name": "Ava Two"' in stdout


def test_bad_input_is_one_line_and_writes_nothing(cli, db_path) -> None:
    for args, exit_code, message in (
        (("agents", "get", "ghost"), 1, "Agent not found: ghost"),
        (("agents", "register"), 2, "usage: openclaw-scheduler agents register"),
        (("agents", "register", "@outbound"), 1, "must not start with '@'"),
        (("agents", "register", "a b"), 1, "must not start with '@' or hold spaces"),
        (("agents", "register", "x", "--capabilities", '{"no": 1}'), 1, "must be a JSON array"),
        (("agents", "register", "x", "name", "extra"), 2, "unexpected argument"),
        (("agents", "get"), 2, "usage: openclaw-scheduler agents get"),
    ):
        code, out, stdout, stderr = cli(*args)
        assert code == exit_code, (args, stdout, stderr)
        assert out["ok"] is False and message in out["error"], (args, out)
        code, _, stdout, stderr = cli(*args, json_mode=False)
        assert code == exit_code and stdout == ""
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert query(db_path, "SELECT * FROM agents") == []


def test_status_lists_agents_with_unread_counts(cli) -> None:
    assert cli("agents", "register", "coder")[0] == 0
    assert cli("msg", "send", "planner", "coder", "rebase first")[0] == 0
    code, out, _, _ = cli("status")
    assert code == 0 and out["agents"] == [{"id": "coder", "status": "idle", "unread": 1}]
    code, _, stdout, _ = cli("status", json_mode=False)
    assert "Agents:   1\n  coder: idle (1 unread)\n" in stdout


# -- the daemon ---------------------------------------------------------------------------------------


def test_the_daemon_registers_main_at_start_and_keeps_an_operators_name(cli, daemon, db_path) -> None:
    d = daemon()
    main = agent(db_path, "main")
    assert main is not None and (main["name"], main["status"]) == ("Main Agent", "idle")
    assert json.loads(main["capabilities"]) == ["*"]
    d.stop()
    assert cli("agents", "register", "main", "Boss")[0] == 0
    daemon()
    assert agent(db_path, "main")["name"] == "Boss"  # type: ignore[index]


def test_an_agent_is_busy_while_its_turn_is_held_and_idle_after(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    held = HeldTurns(fake_gateway, db_path, "writer")
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, agent_spec())
    assert agent(db_path, "writer") is None  # never registered: its first turn registers it
    assert cli("jobs", "run", job["id"])[0] == 0
    fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    session = f"agent:writer:scheduler:{job['id']}"
    assert wait_until(lambda: held.seen) == [("busy", session)]
    code, out, _, _ = cli("agents", "get", "writer")
    assert code == 0 and (out["status"], out["session_key"], out["name"]) == ("busy", session, "writer")
    busy_seen_at = out["last_seen_at"]
    held.release.set()
    (run,) = wait_until(lambda: ended(db, job["id"]), timeout=20)
    assert run["status"] == "ok"
    wait_until(lambda: status_of(db_path, "writer") == ("idle", None), timeout=10)
    assert agent(db_path, "writer")["last_seen_at"] >= busy_seen_at  # type: ignore[index]


def test_overlapping_turns_of_one_agent_keep_it_busy_until_the_last_ends(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    releases = {"first": threading.Event(), "second": threading.Event()}

    def hold(request: RecordedRequest) -> Reply | None:
        prompt = request.body["messages"][0]["content"]
        releases["first" if prompt.endswith("first") else "second"].wait(30)
        return None

    fake_gateway.on(CHAT, hold)
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    one = add_job(cli, agent_spec(name="one", payload_message="first"))
    two = add_job(cli, agent_spec(name="two", payload_message="second"))
    assert cli("jobs", "run", one["id"])[0] == 0
    fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    assert cli("jobs", "run", two["id"])[0] == 0
    fake_gateway.wait_for_requests(CHAT, 2, timeout=20)
    wait_until(lambda: status_of(db_path, "writer") == ("busy", f"agent:writer:scheduler:{two['id']}"))
    releases["first"].set()
    wait_until(lambda: ended(db, one["id"]), timeout=20)
    # The other turn is still in flight: still busy, now with the session of that turn.
    wait_until(lambda: status_of(db_path, "writer") == ("busy", f"agent:writer:scheduler:{two['id']}"))
    releases["second"].set()
    wait_until(lambda: ended(db, two["id"]), timeout=20)
    wait_until(lambda: status_of(db_path, "writer") == ("idle", None), timeout=10)


def test_a_turn_ended_by_a_stopping_daemon_leaves_the_agent_idle(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    held = HeldTurns(fake_gateway, db_path, "writer")
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, "SCHEDULER_SHUTDOWN_GRACE_MS": "500"})
    job = add_job(cli, agent_spec())
    assert cli("jobs", "run", job["id"])[0] == 0
    fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    assert status_of(db_path, "writer")[0] == "busy"
    assert d.stop(signal.SIGTERM, timeout=30) == 0
    held.release.set()
    (run,) = ended(db, job["id"])
    assert run["status"] == "cancelled"
    assert status_of(db_path, "writer") == ("idle", None)


def test_an_agent_left_busy_by_a_killed_daemon_is_released_at_the_next_start(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    held = HeldTurns(fake_gateway, db_path, "writer")
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, agent_spec())
    assert cli("jobs", "run", job["id"])[0] == 0
    fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    d.kill()
    held.release.set()
    assert status_of(db_path, "writer")[0] == "busy"  # nobody could say otherwise
    again = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    event = again.wait_for_event("agent.released", timeout=10)
    assert event["agent_ids"] == ["writer"]
    assert status_of(db_path, "writer") == ("idle", None)
    assert runs_of(db, job["id"])[0]["status"] == "crashed"


def test_an_agent_the_gateway_does_not_know_is_offline_until_a_turn_succeeds(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    fake_gateway.agents = {"main"}  # the real gateway: 400 "Unknown agent 'writer'."
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, agent_spec())
    assert cli("jobs", "run", job["id"])[0] == 0
    (run,) = wait_until(lambda: ended(db, job["id"]), timeout=20)
    assert run["status"] == "error" and "Unknown agent 'writer'" in run["error_message"]
    wait_until(lambda: status_of(db_path, "writer") == ("offline", None), timeout=10)
    event = d.wait_for_event("agent.offline", timeout=10)
    assert (event["agent_id"], event["run_id"]) == ("writer", run["id"])
    code, out, _, _ = cli("agents", "get", "writer")
    assert code == 0 and out["status"] == "offline"

    fake_gateway.agents = {"main", "writer"}  # configured now
    assert cli("jobs", "run", job["id"])[0] == 0
    wait_until(lambda: len(ended(db, job["id"])) == 2, timeout=20)
    assert ended(db, job["id"])[1]["status"] == "ok"
    wait_until(lambda: status_of(db_path, "writer") == ("idle", None), timeout=10)


def test_other_refusals_do_not_make_an_agent_offline(cli, daemon, db_path, db, fake_gateway) -> None:
    fake_gateway.script(CHAT, Reply.error(400, "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`."))
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, agent_spec())
    assert cli("jobs", "run", job["id"])[0] == 0
    (run,) = wait_until(lambda: ended(db, job["id"]), timeout=20)
    assert run["status"] == "error"
    wait_until(lambda: status_of(db_path, "writer") == ("idle", None), timeout=10)
