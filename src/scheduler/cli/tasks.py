"""``tasks ...`` (task groups, the dead-man switch), ``team ...`` (the team adapter) and
``msg team-inbox``, with the reference's arguments, JSON shapes and texts (its cli.js).

The checks and writes of ``tasks`` are service/tasks.py's (shared with the Python API).
Unlike the reference, an unknown group, label, status or team message is an error (the
reference often printed nothing or null), and nothing is written when a command fails.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from scheduler.cli.commands import _parse_json, _positive_int
from scheduler.cli.context import Context, Handler, UsageError
from scheduler.cli.output import dumps, printable_lines, table
from scheduler.errors import NotFoundError
from scheduler.models.tasks import (
    DEFAULT_TIMEOUT_S,
    MAX_CHANNEL_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_TARGET_LENGTH,
    MAX_TIMEOUT_S,
    NewTaskGroup,
    check_labels,
    check_reported_state,
    gate_name,
)
from scheduler.timeutil import sqlite_now, utcnow

MAX_LIMIT: Final = 10000
CREATE_USAGE: Final = "tasks create '{\"name\":\"...\",\"expected_agents\":[\"a\",\"b\"]}'"
HEARTBEAT_USAGE: Final = "tasks heartbeat <trackerId> <agentLabel> running|completed|failed [message]"
SESSION_USAGE: Final = "tasks register-session <trackerId> <agentLabel> <sessionKey>"
GATE_USAGE: Final = ("team gate <team-id> <task-id> <members-json> [timeout-s] "
                     "[--delivery-channel <channel>] [--delivery-to <target>]")


# service.tasks is imported where it is used: every CLI call imports this module.


def _word(value: str, name: str, limit: int = MAX_LABEL_LENGTH) -> str:
    from scheduler.service.tasks import check_word

    return check_word(value, name, limit)


def _limit(ctx: Context, index: int, default: int) -> int:
    if len(ctx.args) <= index:
        return default
    return _positive_int(ctx.args[index], "limit", maximum=MAX_LIMIT)


# -- tasks ------------------------------------------------------------------------------------------

def tasks_list(ctx: Context) -> int:
    from scheduler.service import tasks

    ctx.no_extra(0, "tasks list")
    groups = ctx.store.active_task_groups()
    now = utcnow()
    if not groups:
        ctx.out.emit([], "No active task groups")
        return 0

    def human() -> None:
        rows = []
        for g in groups:
            full = ctx.store.task_group(g["id"])
            agents = full["agents"] if full is not None else []
            done = sum(1 for a in agents if a["status"] == "completed")
            rows.append({"id": g["id"][:8] + "..", "name": g["name"], "agents": f"{done}/{len(agents)}",
                         "status": g["status"], "elapsed": f"{tasks.elapsed_s(g['created_at'], now)}s",
                         "timeout": f"{g['timeout_s']}s"})
        table(rows, list(rows[0]))

    ctx.out.emit(groups, human)
    return 0


def tasks_status(ctx: Context) -> int:
    from scheduler.service import tasks

    tracker_id = ctx.positional(0, "tasks status <id>")
    ctx.no_extra(1, "tasks status <id>")
    status = tasks.status(ctx.store, tracker_id, utcnow())

    def human() -> None:
        icons = {"completed": "[ok]", "failed": "[FAIL]", "dead": "[DEAD]", "running": "[..]"}
        lines = [f"Task Group: {status['name']}", f"Status:     {status['status']}",
                 f"Elapsed:    {status['elapsed']}s / "
                 f"{status['remaining_timeout'] + status['elapsed']}s timeout", "", "Agents:"]
        for a in status["agents"]:
            duration = f" ({a['duration']}s)" if a["duration"] is not None else ""
            detail = a.get("exit_message") or a.get("error") or ""
            lines.append(f"  {icons.get(a['status'], '[ ]')} {a['label']}: {a['status']}{duration}"
                         + (f" -- {detail}" if detail else ""))
        if status.get("summary"):
            lines += ["", "Summary:", status["summary"]]
        notice = status["notice"]
        lines += ["", "Notice:     " + (notice if isinstance(notice, str) else
                                       f"{notice['status']} (message {notice['message_id']})")]
        sys.stdout.write(printable_lines("\n".join(lines)) + "\n")

    ctx.out.emit(status, human)
    return 0


def tasks_create(ctx: Context) -> int:
    from scheduler.service import tasks

    if not ctx.args:
        raise UsageError(f"usage: openclaw-scheduler {CREATE_USAGE}")
    text = ctx.args[0]
    ctx.no_extra(1, CREATE_USAGE)
    group = tasks.create(ctx.store, _parse_json(text, CREATE_USAGE), utcnow())
    ctx.out.emit({"ok": True, "group": group}, f"Created: {dumps(group)}")
    return 0


def tasks_history(ctx: Context) -> int:
    from scheduler.service import tasks

    limit = _limit(ctx, 0, 10)
    ctx.no_extra(1, "tasks history [limit]")
    groups = tasks.history(ctx.store, limit)
    if not groups:
        ctx.out.emit([], "No completed task groups")
        return 0
    rows = [{"id": g["id"][:8] + "..", "name": g["name"], "status": g["status"],
             "completed": g["completed_at"], "created_by": g["created_by"]} for g in groups]
    ctx.out.emit(groups, lambda: table(rows, list(rows[0])))
    return 0


def tasks_heartbeat(ctx: Context) -> int:
    from scheduler.service import tasks

    if len(ctx.args) < 3:
        raise UsageError(f"Usage: {HEARTBEAT_USAGE}")
    tracker_id, label, state_text, *words = ctx.args
    state = check_reported_state(state_text)
    message = tasks.check_note(words, "message")
    finished = tasks.report(ctx.store, tracker_id, label, state_text, message, utcnow())
    out: dict[str, Any] = {"ok": True, "tracker_id": tracker_id, "agent": label, "status": state.value}
    if state != "running" and message is not None:
        out["message"] = message
    line = f"Heartbeat recorded: {label} -> {state.value}"
    if state != "running" and message:
        line += f" ({message})"
    if finished is not None:
        out["group_status"] = finished.group["status"]
        line += f"; task group {finished.group['status']}"
    ctx.out.emit(out, line)
    return 0


def tasks_register_session(ctx: Context) -> int:
    from scheduler.service import tasks

    if len(ctx.args) < 3:
        raise UsageError(f"Usage: {SESSION_USAGE}")
    ctx.no_extra(3, SESSION_USAGE)
    tracker_id, label, key = ctx.args
    tasks.register_session(ctx.store, tracker_id, label, key, utcnow())
    ctx.out.emit({"ok": True, "tracker_id": tracker_id, "agent": label, "session_key": key},
                 f"Session registered: {label} -> {key}")
    return 0


# -- team -------------------------------------------------------------------------------------------

def team_map(ctx: Context) -> int:
    limit = _limit(ctx, 0, 200)
    ctx.no_extra(1, "team map [limit]")
    mapped = ctx.store.map_team_messages(limit, sqlite_now())
    ctx.out.emit({"ok": True, "mapped": mapped}, f"Mapped {mapped} team message(s)")
    return 0


def team_tasks(ctx: Context) -> int:
    usage = "team tasks <team-id> [limit]"
    team = _word(ctx.positional(0, usage), "team-id")
    limit = _limit(ctx, 1, 50)
    ctx.no_extra(2, usage)
    found = ctx.store.team_tasks(team, limit)
    if not found:
        ctx.out.emit([], "No team tasks")
        return 0
    rows = [{"team": t["team_id"], "task": t["id"], "member": t["member_id"] or "-",
             "status": t["status"],
             "gateTracker": t["gate_tracker_id"][:8] + ".." if t["gate_tracker_id"] else "-",
             "gateStatus": t["gate_status"] or "-", "updated": t["updated_at"],
             "completed": t["completed_at"] or "-"} for t in found]
    ctx.out.emit(found, lambda: table(rows, list(rows[0])))
    return 0


def team_events(ctx: Context) -> int:
    usage = "team events <team-id> [limit] [task-id]"
    team = _word(ctx.positional(0, usage), "team-id")
    limit = _limit(ctx, 1, 50)
    task = _word(ctx.args[2], "task-id") if len(ctx.args) > 2 else None
    ctx.no_extra(3, usage)
    found = ctx.store.team_events(team, limit, task)
    if not found:
        ctx.out.emit([], "No team events")
        return 0
    rows = [{"id": e["id"][:8], "team": e["team_id"], "member": e["member_id"] or "-",
             "task": e["task_id"] or "-", "message": (e["message_id"] or "-")[:8],
             "type": e["event_type"], "at": e["created_at"]} for e in found]
    ctx.out.emit(found, lambda: table(rows, list(rows[0])))
    return 0


def team_gate(ctx: Context) -> int:
    channel = ctx.option("--delivery-channel")
    target = ctx.option("--delivery-to")
    if len(ctx.args) < 3:
        raise UsageError(f"Usage: {GATE_USAGE} (example: team gate core-team deploy-001 "
                         "'[\"writer\",\"reviewer\"]' 900)")
    ctx.no_extra(4, GATE_USAGE)
    team, task = _word(ctx.args[0], "team-id"), _word(ctx.args[1], "task-id")
    members = _parse_json(ctx.args[2], "team gate <team-id> <task-id> '[\"writer\",\"reviewer\"]'")
    timeout = (_positive_int(ctx.args[3], "timeout-s", maximum=MAX_TIMEOUT_S)
               if len(ctx.args) > 3 else DEFAULT_TIMEOUT_S)
    group = NewTaskGroup(
        name=gate_name(team, task), expected_agents=check_labels(members, "members"),
        timeout_s=timeout,
        delivery_channel=None if channel is None else _word(channel, "--delivery-channel",
                                                            MAX_CHANNEL_LENGTH),
        delivery_to=None if target is None else _word(target, "--delivery-to", MAX_TARGET_LENGTH),
    )
    gate = ctx.store.open_team_gate(team, task, group, sqlite_now())
    ctx.out.emit({"ok": True, "gate": gate}, f"Gate opened: {dumps(gate)}")
    return 0


def team_check_gates(ctx: Context) -> int:
    limit = _limit(ctx, 0, 100)
    ctx.no_extra(1, "team check-gates [limit]")
    result = ctx.store.check_team_gates(limit, sqlite_now())
    ctx.out.emit({"passed": result.passed, "failed": result.failed, "pending": result.pending})
    return 0


def team_ack(ctx: Context) -> int:
    from scheduler.service import tasks

    if not ctx.args:
        raise UsageError("Usage: team ack <message-id> [actor] [note]")
    message_id = _word(ctx.args[0], "message-id")
    actor = _word(ctx.args[1], "actor") if len(ctx.args) > 1 else "team-member"
    note = tasks.check_note(ctx.args[2:], "note")
    message = ctx.store.ack_team_message(message_id, actor, note, sqlite_now())
    if message is None:
        raise NotFoundError(f"Team message not found: {message_id}")
    answer = {"id": message["id"], "status": message["status"], "ack_at": message["ack_at"]}
    ctx.out.emit({"ok": True, **answer}, f"Team ACK: {dumps(answer)}")
    return 0


def msg_team_inbox(ctx: Context) -> int:
    usage = "msg team-inbox <team-id> [limit] [member-id] [task-id]"
    team = _word(ctx.positional(0, usage), "team-id")
    limit = _limit(ctx, 1, 20)
    member = _word(ctx.args[2], "member-id") if len(ctx.args) > 2 else None
    task = _word(ctx.args[3], "task-id") if len(ctx.args) > 3 else None
    ctx.no_extra(4, usage)
    found = ctx.store.team_inbox(team, limit, member, task)
    if not found:
        ctx.out.emit([], "Team inbox empty")
        return 0
    rows = [{"id": m["id"][:8], "from": m["from_agent"], "to": m["to_agent"],
             "member": m["member_id"] or "-", "task": m["task_id"] or "-", "kind": m["kind"],
             "status": m["status"], "ackRequired": bool(m["ack_required"]),
             "ackAt": m["ack_at"] or "-", "attempts": m["delivery_attempts"] or 0,
             "lastError": m["last_error"] or "-", "created": m["created_at"]} for m in found]
    ctx.out.emit(found, lambda: table(rows, list(rows[0])))
    return 0


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("tasks", "list"): tasks_list,
    ("tasks", "status"): tasks_status,
    ("tasks", "create"): tasks_create,
    ("tasks", "history"): tasks_history,
    ("tasks", "heartbeat"): tasks_heartbeat,
    ("tasks", "register-session"): tasks_register_session,
    ("team", "map"): team_map,
    ("team", "tasks"): team_tasks,
    ("team", "events"): team_events,
    ("team", "gate"): team_gate,
    ("team", "check-gates"): team_check_gates,
    ("team", "ack"): team_ack,
    ("msg", "team-inbox"): msg_team_inbox,
}
