"""Chains with the real daemon: triggered children fire once, at the end of the parent's work, and
receive its output (environment and stdin for shell children, the trigger context for agents);
the rules underneath (conditions, the tree, the runtime guards) beside them.

``SCHEDULER_RETRY_BASE_MS=500`` makes the retry ladder 0.5 s, 1 s, … so a whole ladder fits.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import add_job, runs_of, shell_job, wait_until
from fakegateway import FakeGateway
from scheduler.models.chains import condition_matches, job_tree
from scheduler.strategies.shell import run_shell_command

NEVER_SOON = "0 0 1 1 *"  # a valid cron that will not fire during a test
FAST_RETRIES = {"SCHEDULER_RETRY_BASE_MS": "500"}
TERMINAL = {"ok", "error", "timeout", "cancelled", "crashed", "skipped"}


def manual(cli: Any, **fields: Any) -> dict[str, Any]:
    """A shell root job that runs only when asked (``run_now``): its schedule is a year away."""
    return add_job(cli, shell_job(schedule_cron=NEVER_SOON, **fields))


def run_now(cli: Any, job: dict[str, Any]) -> None:
    """``jobs run``: once the children are in place."""
    code, _, stdout, stderr = cli("jobs", "run", job["id"])
    assert code == 0, stdout + stderr


def child(cli: Any, parent: dict[str, Any], trigger_on: str, **fields: Any) -> dict[str, Any]:
    return add_job(cli, shell_job(parent_id=parent["id"], trigger_on=trigger_on, **fields))


def ended(db: Any, job_id: str, count: int = 1) -> list[dict[str, Any]] | None:
    runs = [r for r in runs_of(db, job_id) if r["status"] in TERMINAL]
    return runs if len(runs) >= count else None


def quiet(db: Any) -> bool:
    """Nothing running, nothing queued."""
    return not db("SELECT 1 FROM runs WHERE status = 'running'") and not db(
        "SELECT 1 FROM job_dispatch_queue WHERE status IN ('pending', 'claimed')")


# -- the worked example: build -> deploy | notify-failure -----------------------------------------


def test_a_successful_build_triggers_deploy_with_its_output_and_not_notify(
    cli, daemon, db, tmp_path: Path
) -> None:
    env_out, stdin_out, notified = tmp_path / "env.txt", tmp_path / "stdin.txt", tmp_path / "notified"
    d = daemon()
    build = manual(cli, name="build", payload_message="echo 'BUILD OK 1.2.3'; echo 'artifacts: 3'")
    deploy = child(cli, build, "success", name="deploy", trigger_condition="regex:^BUILD OK",
                   payload_message=(
                       'printf "%s|%s|%s|%s\\n" "$SCHEDULER_PARENT_RUN_ID" "$SCHEDULER_PARENT_STATUS" '
                       f'"$SCHEDULER_PARENT_JOB_NAME" "$SCHEDULER_PARENT_OUTPUT" > {env_out}; '
                       f'cat > {stdin_out}'))
    notify = child(cli, build, "failure", name="notify-failure", payload_message=f"touch {notified}")
    unmatched = child(cli, build, "success", name="release", trigger_condition="contains:RELEASE",
                      payload_message="true")
    run_now(cli, build)
    (deployed,) = wait_until(lambda: ended(db, deploy["id"]), timeout=20, message="deploy ran")
    wait_until(lambda: quiet(db), timeout=10)
    assert d.stop() == 0

    (built,) = runs_of(db, build["id"])
    assert built["status"] == "ok" and deployed["status"] == "ok"
    assert deployed["triggered_by_run"] == built["id"]
    (row,) = db("SELECT * FROM job_dispatch_queue WHERE job_id = ?", (deploy["id"],))
    assert (row["dispatch_kind"], row["source_run_id"], row["status"]) == ("chain", built["id"], "done")
    assert env_out.read_text() == f"{built['id']}|ok|build|BUILD OK 1.2.3\nartifacts: 3\n"
    assert stdin_out.read_text() == "BUILD OK 1.2.3\nartifacts: 3\n"
    assert runs_of(db, notify["id"]) == [] and not notified.exists()
    assert runs_of(db, unmatched["id"]) == []  # its condition did not match: not a run
    (miss,) = d.events("chain.condition_not_met")
    assert miss["parent_run_id"] == built["id"] and miss["job_ids"] == [unmatched["id"]]
    (fired,) = d.events("chain.triggered")
    assert (fired["job_id"], fired["parent_run_id"]) == (deploy["id"], built["id"])


def test_failure_children_fire_once_after_the_retries_are_exhausted(cli, daemon, db, tmp_path) -> None:
    env_out = tmp_path / "env.txt"
    d = daemon(FAST_RETRIES)
    build = manual(cli, name="build", payload_message="echo compiling; exit 3", max_retries=2)
    notify = child(cli, build, "failure", name="notify-failure", payload_message=(
        f'echo "$SCHEDULER_PARENT_STATUS $SCHEDULER_PARENT_EXIT_CODE $SCHEDULER_PARENT_ERROR" >> {env_out}'))
    always = child(cli, build, "complete", name="log", payload_message="true")
    deploy = child(cli, build, "success", name="deploy", payload_message="true")
    run_now(cli, build)
    wait_until(lambda: ended(db, notify["id"]) and ended(db, always["id"]) and quiet(db)
               and ended(db, build["id"], 3), timeout=30, message="the ladder and its children ended")
    time.sleep(1.0)  # room for a (wrong) further firing
    assert d.stop() == 0

    builds = runs_of(db, build["id"])
    assert [r["status"] for r in builds] == ["error", "error", "error"]
    (notified,) = runs_of(db, notify["id"])
    (logged,) = runs_of(db, always["id"])
    assert notified["triggered_by_run"] == logged["triggered_by_run"] == builds[-1]["id"]
    assert runs_of(db, deploy["id"]) == []
    assert env_out.read_text() == "error 3 Shell exited with code 3\n"


def test_a_timed_out_parent_counts_as_a_failure(cli, daemon, db, tmp_path) -> None:
    seen = tmp_path / "status.txt"
    d = daemon()
    build = manual(cli, name="slow build", payload_message="sleep 30", run_timeout_ms=1000)
    notify = child(cli, build, "failure", payload_message=f'echo "$SCHEDULER_PARENT_STATUS" > {seen}')
    run_now(cli, build)
    (run,) = wait_until(lambda: ended(db, notify["id"]), timeout=20, message="notify ran")
    assert d.stop() == 0
    assert run["status"] == "ok" and seen.read_text() == "timeout\n"


def test_a_trigger_delay_holds_the_child_back(cli, daemon, db) -> None:
    d = daemon()
    build = manual(cli, name="build", payload_message="true")
    later = child(cli, build, "success", name="later", trigger_delay_s=2, payload_message="true")
    run_now(cli, build)
    (run,) = wait_until(lambda: ended(db, later["id"]), timeout=20, message="the delayed child ran")
    assert d.stop() == 0
    (built,) = runs_of(db, build["id"])
    (row,) = db("SELECT scheduled_for FROM job_dispatch_queue WHERE job_id = ?", (later["id"],))
    finished = time.strptime(built["finished_at"], "%Y-%m-%d %H:%M:%S")
    due = time.strptime(row["scheduled_for"], "%Y-%m-%d %H:%M:%S")
    assert time.mktime(due) - time.mktime(finished) == 2
    assert run["started_at"] >= row["scheduled_for"]


def test_a_one_shot_parent_is_kept_disabled_for_its_children(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "out.txt"
    build = add_job(cli, shell_job(name="once", payload_message="echo from the one-shot"), "--in", "1s")
    assert build["delete_after_run"] == 1
    reader = child(cli, build, "success", payload_message=f"cat > {out}")
    d = daemon()
    wait_until(lambda: ended(db, reader["id"]), timeout=20, message="the child ran")
    assert d.stop() == 0
    assert out.read_text() == "from the one-shot\n"
    (kept,) = db("SELECT enabled FROM jobs WHERE id = ?", (build["id"],))
    assert kept["enabled"] == 0


# -- what a shell child receives ------------------------------------------------------------------


def test_a_large_parent_output_reaches_stdin_from_its_file_and_the_environment_in_part(
    cli, daemon, db, tmp_path
) -> None:
    count, env_out = tmp_path / "count.txt", tmp_path / "env.txt"
    d = daemon()
    build = manual(cli, name="big", payload_message="head -c 200000 /dev/zero | tr '\\0' x; echo")
    reader = child(cli, build, "success", payload_message=(
        f'wc -c > {count}; echo "${{#SCHEDULER_PARENT_OUTPUT}} $SCHEDULER_PARENT_OUTPUT_TRUNCATED '
        f'$SCHEDULER_PARENT_STDOUT_PATH" > {env_out}'))
    run_now(cli, build)
    wait_until(lambda: ended(db, reader["id"]), timeout=20, message="the reader ran")
    assert d.stop() == 0
    (built,) = runs_of(db, build["id"])
    assert built["shell_stdout_path"]  # offloaded: the stored column holds only an excerpt
    assert count.read_text().strip() == "200001"
    length, truncated, path = env_out.read_text().split()
    assert (int(length), truncated, path) == (16 * 1024, "1", built["shell_stdout_path"])


def test_children_that_do_not_read_stdin_are_not_held_up(cli, daemon, db, tmp_path) -> None:
    count = tmp_path / "count.txt"
    d = daemon()
    build = manual(cli, name="huge", payload_message="head -c 9000000 /dev/zero | tr '\\0' y")
    ignores = child(cli, build, "success", name="ignores", payload_message="echo ignored")
    closes = child(cli, build, "success", name="closes", payload_message="exec 0<&-; sleep 0.5; echo closed")
    partial = child(cli, build, "success", name="partial", payload_message="head -c 10 >/dev/null")
    reads = child(cli, build, "success", name="reads", payload_message=f"wc -c > {count}")
    run_now(cli, build)
    for job in (ignores, closes, partial, reads):
        wait_until(lambda job=job: ended(db, job["id"]), timeout=30, message=f"{job['name']} ended")
    assert d.stop() == 0
    for job in (ignores, closes, partial, reads):
        (run,) = runs_of(db, job["id"])
        assert (run["status"], run["shell_timed_out"]) == ("ok", 0), run
    assert count.read_text().strip() == str(8 * 1024 * 1024)  # the stdin bound


async def _shell(command: str, data: bytes | None, timeout_s: float = 20) -> Any:
    return await run_shell_command(command, shell="/bin/sh", timeout_s=timeout_s,
                                   env={"PATH": "/usr/bin:/bin"}, stdin_data=data)


def test_stdin_data_is_written_without_waiting_for_the_child() -> None:
    echoed = asyncio.run(_shell("cat", b"line one\nline two\n"))
    assert echoed.stdout == b"line one\nline two\n" and echoed.exit_code == 0
    unread = asyncio.run(_shell("echo done", b"z" * (4 * 1024 * 1024)))
    assert (unread.exit_code, unread.timed_out, unread.stdout) == (0, False, b"done\n")
    assert asyncio.run(_shell("wc -c", None)).stdout.strip() == b"0"  # no data: /dev/null


# -- what an agent child receives -------------------------------------------------------------------


def agent_spec(**fields: Any) -> str:
    return json.dumps({"session_target": "isolated", "run_timeout_ms": 30000, "delivery_mode": "none",
                       "delivery_opt_out_reason": "test", "origin": "system", **fields})


def test_an_agent_child_sees_its_agent_parents_reply_and_a_shell_child_gets_it_too(
    cli, daemon, db, fake_gateway: FakeGateway, tmp_path
) -> None:
    stdin_out = tmp_path / "stdin.txt"
    fake_gateway.reply_content = lambda request: (
        "PARENT-REPLY: all systems go" if "Write the report" in json.dumps(request.body) else "child done")
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    parent = add_job(cli, agent_spec(name="reporter", payload_message="Write the report",
                                     schedule_cron=NEVER_SOON))
    reader = add_job(cli, agent_spec(name="reader", payload_message="Act on it", parent_id=parent["id"],
                                     trigger_on="success"))
    shell_reader = child(cli, parent, "success", name="shell reader", payload_message=f"cat > {stdin_out}")
    run_now(cli, parent)
    wait_until(lambda: ended(db, reader["id"]) and ended(db, shell_reader["id"]), timeout=30)
    assert d.stop() == 0
    (parent_run,) = runs_of(db, parent["id"])
    prompts = [c.body["messages"][0]["content"] for c in fake_gateway.chats]
    (child_prompt,) = [p for p in prompts if "Act on it" in p]
    assert ("\n--- Trigger Context ---\nTriggered by: reporter\nParent run status: ok\n"
            "Parent run output:\nPARENT-REPLY: all systems go\n---\n") in child_prompt
    (child_run,) = runs_of(db, reader["id"])
    meta = json.loads(child_run["context_summary"])
    assert meta["triggered_by_run"] == parent_run["id"] and meta["parent_job_name"] == "reporter"
    assert stdin_out.read_text() == "PARENT-REPLY: all systems go\n"


def test_an_agent_child_sees_a_shell_parents_output(cli, daemon, db, fake_gateway: FakeGateway) -> None:
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    build = manual(cli, name="build", payload_message="echo 'compiled 42 files'; exit 2")
    reviewer = add_job(cli, agent_spec(name="reviewer", payload_message="Explain the failure",
                                       parent_id=build["id"], trigger_on="failure"))
    run_now(cli, build)
    wait_until(lambda: ended(db, reviewer["id"]), timeout=30, message="the reviewer ran")
    assert d.stop() == 0
    (chat,) = [c for c in fake_gateway.chats if "Explain the failure" in c.body["messages"][0]["content"]]
    prompt = chat.body["messages"][0]["content"]
    assert ("--- Trigger Context ---\nTriggered by: build\nParent run status: error\n"
            "Parent shell result:\nExit code: 2\nError: Shell exited with code 2\n"
            "stdout:\ncompiled 42 files\n---") in prompt


# -- the command line ---------------------------------------------------------------------------------


def test_jobs_tree_as_text_and_json(cli) -> None:
    build = add_job(cli, shell_job(name="build", schedule_cron=NEVER_SOON))
    deploy = add_job(cli, shell_job(name="deploy", parent_id=build["id"], trigger_on="success",
                                    trigger_delay_s=30, agent_id="ops"))
    add_job(cli, shell_job(name="smoke", parent_id=deploy["id"], trigger_on="complete"))
    add_job(cli, shell_job(name="notify", parent_id=build["id"], trigger_on="failure", enabled=False))
    code, _, text, stderr = cli("jobs", "tree", json_mode=False)
    assert code == 0, stderr
    assert text.splitlines() == [
        "[on] build (main)",
        "  |- [on] deploy (ops) [on:success] (+30s)",
        "  |-   |- [on] smoke (main) [on:complete]",
        "  |- [ ] notify (main) [on:failure]",
    ]
    code, tree, _, _ = cli("jobs", "tree")
    assert code == 0
    (node,) = tree
    assert node == {"id": build["id"], "name": "build", "enabled": True, "agent_id": "main",
                    "trigger_on": None, "trigger_delay_s": 0, "children": node["children"]}
    assert [(c["name"], c["trigger_on"], c["trigger_delay_s"], c["agent_id"]) for c in node["children"]] == [
        ("deploy", "success", 30, "ops"), ("notify", "failure", 0, "main")]
    assert [c["name"] for c in node["children"][0]["children"]] == ["smoke"]


def test_chain_mistakes_are_one_line_errors(cli) -> None:
    build = add_job(cli, shell_job(name="build", schedule_cron=NEVER_SOON))
    deploy = add_job(cli, shell_job(name="deploy", parent_id=build["id"], trigger_on="success"))
    chain = [deploy]
    for depth in range(2, 11):
        chain.append(add_job(cli, shell_job(name=f"d{depth}", parent_id=chain[-1]["id"],
                                            trigger_on="success")))
    cases = [
        (("jobs", "add", shell_job(name="x", parent_id="no-such-job", trigger_on="success")),
         "parent job does not exist: no-such-job"),
        (("jobs", "add", shell_job(name="x", parent_id="no-such-job", trigger_on="success"), "--dry-run"),
         "parent job does not exist: no-such-job"),
        (("jobs", "update", build["id"], json.dumps({"parent_id": deploy["id"], "trigger_on": "success"})),
         f"Cycle detected: job {build['id']} -> {deploy['id']} would create a loop"),
        (("jobs", "update", build["id"], json.dumps({"parent_id": deploy["id"], "trigger_on": "success"}),
          "--dry-run"), "Cycle detected"),
        (("jobs", "add", shell_job(name="d11", parent_id=chain[-1]["id"], trigger_on="success")),
         "Max chain depth (10) exceeded. Chain would be 11 deep."),
        (("jobs", "add", shell_job(name="x", parent_id=build["id"], trigger_on="success",
                                   trigger_condition="regex:(?<name>x)")),
         "Invalid trigger_condition regex"),
        (("jobs", "add", shell_job(name="x", parent_id=build["id"], trigger_on="success",
                                   trigger_condition="glob:*")),
         'trigger_condition must start with "contains:" or "regex:"'),
    ]
    for args, message in cases:
        code, _, stdout, stderr = cli(*args, json_mode=False)
        assert code != 0 and stdout == "", args
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, stderr
        code, out, _, _ = cli(*args)
        assert code != 0 and out["ok"] is False and message in out["error"], args
    code, jobs, _, _ = cli("jobs", "list")
    assert len(jobs) == 11  # nothing was written


# -- the rules underneath -------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "content", "matches"), [
    (None, "anything", True),
    ("contains:OK", "BUILD OK", True),
    ("contains:ok", "BUILD OK", False),  # case-sensitive
    ("regex:^BUILD OK", "BUILD OK 1.2", True),
    ("regex:^BUILD OK", "stdout:\nBUILD OK", False),  # ^ is the start of the text, not of a line
    ("regex:(?m)^BUILD OK", "stdout:\nBUILD OK", True),
    ("regex:OK$", "BUILD OK\n", True),  # Python: $ also before a final newline (JavaScript: no)
    ("regex:OK\\Z", "BUILD OK\n", False),
    ("regex:\\d+ files", "٣ files", True),  # Python: \d is any Unicode digit (JavaScript: 0-9)
])
def test_trigger_conditions(condition: str | None, content: str, matches: bool) -> None:
    assert condition_matches(condition, content) is matches


def test_the_tree_shows_orphans_and_survives_cycles() -> None:
    rows = [{"id": "a", "name": "a", "enabled": 1, "parent_id": "b"},
            {"id": "b", "name": "b", "enabled": 1, "parent_id": "a"},
            {"id": "c", "name": "c", "enabled": 0, "parent_id": "gone"}]
    tree = job_tree(rows)
    assert [line for node in tree for line in node.lines()] == [
        "[ ] c (main)", "[on] a (main)", "  |- [on] b (main)"]


def _write_directly(db_path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """What another program (an older scheduler, a hand-made fix) could write."""
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        conn.close()


def test_children_of_a_cycle_or_of_a_too_deep_chain_are_refused_when_they_fire(
    cli, daemon, db, db_path
) -> None:
    """§17 #26: the limits hold at fire time too, whatever the database says."""
    loop_a = manual(cli, name="loop a")
    loop_b = add_job(cli, shell_job(name="loop b", parent_id=loop_a["id"], trigger_on="complete"))
    chain = [manual(cli, name="deep 0")]
    for depth in range(1, 11):
        chain.append(add_job(cli, shell_job(name=f"deep {depth:02}", parent_id=chain[-1]["id"],
                                            trigger_on="success")))
    too_deep = add_job(cli, shell_job(name="deep 11", parent_id=chain[0]["id"], trigger_on="success"))
    _write_directly(db_path,
                    ("UPDATE jobs SET parent_id = ?, trigger_on = 'complete' WHERE id = ?",
                     (loop_b["id"], loop_a["id"])),  # a <-> b
                    ("UPDATE jobs SET parent_id = ? WHERE id = ?", (chain[-1]["id"], too_deep["id"])))
    run_now(cli, loop_a)
    run_now(cli, chain[0])
    d = daemon()
    (refused_deep,) = wait_until(lambda: ended(db, too_deep["id"]), timeout=30, message="deep 11 refused")
    wait_until(lambda: ended(db, loop_b["id"]) and quiet(db), timeout=10)
    time.sleep(0.5)  # room for a (wrong) further firing
    assert d.stop() == 0
    assert refused_deep["status"] == "skipped" and "deeper than 10" in refused_deep["error_message"]
    assert [r["status"] for r in runs_of(db, chain[10]["id"])] == ["ok"]  # depth 10 still runs
    # b hangs below a loop (a -> b -> a): the manual run of a runs, b is refused.
    assert [r["status"] for r in runs_of(db, loop_a["id"])] == ["ok"]
    (refused_loop,) = runs_of(db, loop_b["id"])
    assert refused_loop["status"] == "skipped" and "loops back" in refused_loop["error_message"]


def test_a_condition_another_program_stored_is_refused_with_the_reason(cli, daemon, db, db_path) -> None:
    build = manual(cli, name="build", payload_message="echo x")
    odd = add_job(cli, shell_job(name="odd", parent_id=build["id"], trigger_on="success"))
    _write_directly(db_path,
                    ("UPDATE jobs SET trigger_condition = 'regex:(?<v>x)' WHERE id = ?", (odd["id"],)))
    run_now(cli, build)
    d = daemon()
    (run,) = wait_until(lambda: ended(db, odd["id"]), timeout=20, message="odd recorded")
    assert d.stop() == 0
    assert run["status"] == "skipped" and "cannot be evaluated" in run["error_message"]


# -- a crash between the parent's end and its children --------------------------------------------


def _stall_chain_inserts(db_path: Path) -> None:
    """Make the daemon's transaction that records a parent's end hang right after it wrote the
    first child's queue row (a trigger that counts 300^4 rows): the parent's end and the child
    are written, neither committed, when the test kills the daemon."""
    _write_directly(db_path, ("CREATE TABLE stall_rows (x)", ()),
                    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
                     "INSERT INTO stall_rows SELECT x FROM c", ()),
                    ("CREATE TRIGGER stall_chain AFTER INSERT ON job_dispatch_queue "
                     "WHEN NEW.dispatch_kind = 'chain' BEGIN SELECT count(*) FROM stall_rows a, "
                     "stall_rows b, stall_rows c, stall_rows d; END", ()))


def _unstall(db_path: Path) -> None:
    _write_directly(db_path, ("DROP TRIGGER stall_chain", ()), ("DROP TABLE stall_rows", ()))


def _write_lock_held(db_path: Path, for_s: float) -> bool:
    """Whether another connection holds the write lock throughout ``for_s`` seconds."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        conn = sqlite3.connect(db_path, timeout=0.05, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            time.sleep(0.1)
        finally:
            conn.close()
    return True


def _executions(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["at-most-once", "at-least-once"])
def test_a_kill_between_the_parents_end_and_its_child_neither_loses_nor_doubles_the_child(
    cli, daemon, db, db_path, tmp_path, guarantee: str
) -> None:
    parent_out, child_out = tmp_path / "parent.txt", tmp_path / "child.txt"
    d = daemon()
    build = manual(cli, name="build", payload_message=f"echo $$ >> {parent_out}; echo BUILD OK",
                   delivery_guarantee=guarantee)
    always = child(cli, build, "complete", name="always", payload_message=f"echo $$ >> {child_out}")
    deploy = child(cli, build, "success", name="deploy", payload_message="true")
    _stall_chain_inserts(db_path)
    run_now(cli, build)
    wait_until(lambda: _executions(parent_out) == 1, timeout=15, message="the parent ran")
    assert wait_until(lambda: _write_lock_held(db_path, 1.5), timeout=15,
                      message="the daemon stalled inside the parent's end")
    d.stop(9)  # SIGKILL: the parent's end and the child's queue row die uncommitted, together
    _unstall(db_path)
    (lost,) = runs_of(db, build["id"])
    assert lost["status"] == "running" and db("SELECT * FROM job_dispatch_queue WHERE dispatch_kind = "
                                               "'chain'") == []

    d = daemon()
    wait_until(lambda: ended(db, always["id"]) and quiet(db), timeout=20, message="the chain settled")
    time.sleep(1.0)  # room for a (wrong) second firing
    assert d.stop() == 0
    builds = runs_of(db, build["id"])
    (child_run,) = runs_of(db, always["id"])  # exactly one
    assert child_run["status"] == "ok" and _executions(child_out) == 1
    if guarantee == "at-most-once":  # the crash ends its work: complete fires, success does not
        assert [r["status"] for r in builds] == ["crashed"]
        assert child_run["triggered_by_run"] == builds[0]["id"]
        assert runs_of(db, deploy["id"]) == []
    else:  # the crash is replayed; the replay's end fires both
        assert [r["status"] for r in builds] == ["crashed", "ok"] and _executions(parent_out) == 2
        assert child_run["triggered_by_run"] == builds[1]["id"]
        assert [r["status"] for r in runs_of(db, deploy["id"])] == ["ok"]


@pytest.mark.slow
def test_a_kill_right_after_the_parents_end_still_runs_the_child_once(cli, daemon, db, tmp_path) -> None:
    child_out = tmp_path / "child.txt"
    d = daemon()
    build = manual(cli, name="build", payload_message="true")
    always = child(cli, build, "complete", name="always",
                   payload_message=f"echo $$ >> {child_out}; sleep 0.3")
    run_now(cli, build)
    d.wait_for_event("run.finished", lambda e: e["job_id"] == build["id"], timeout=15)
    d.stop(9)
    d = daemon()
    wait_until(lambda: ended(db, always["id"]) and quiet(db), timeout=20, message="the child ended")
    time.sleep(1.0)
    assert d.stop() == 0
    (built,) = runs_of(db, build["id"])
    (child_run,) = runs_of(db, always["id"])  # queued with the parent's end: once, whatever the kill hit
    assert built["status"] == "ok" and child_run["triggered_by_run"] == built["id"]
    assert child_run["status"] in ("ok", "crashed") and _executions(child_out) <= 1
