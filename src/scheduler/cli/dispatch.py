"""``dispatch ...``: label-based sub-agent dispatch (features.md §15.1, docs/dispatch.md).

The reference's ``dispatch/index.mjs`` subcommands and flags; its output is JSON by default, so
ours is too (``--json`` changes only how errors and ``stuck``'s alert are written). Arguments are
parsed here; the operations are in the scheduler/dispatching/ package.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.commands import _positive_int
from scheduler.cli.context import Context, Handler, UsageError
from scheduler.timeutil import utcnow

if TYPE_CHECKING:
    from scheduler.dispatching.gateway import GatewayAccess

ENQUEUE_USAGE: Final = (
    "dispatch enqueue --label <l> [--message <m> | --message-file <path|-> | --message-env <VAR> "
    "| --message-stdin] [--deliver-to <id>] [--no-monitor] ...")
MESSAGE_FLAGS: Final = ("--message", "--message-file", "--message-env")
LABELS_PATH_ENV: Final = "DISPATCH_LABELS_PATH"
DEFAULT_LIST_LIMIT: Final = 20
MAX_LIST_LIMIT: Final = 10_000
MAX_THRESHOLD_MIN: Final = 7 * 24 * 60


def _warn(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(f"[dispatch] {line}\n")


def _gateway() -> GatewayAccess:
    """The gateway, with logging set up so no token can reach a log line."""
    from scheduler import logs
    from scheduler.dispatching.gateway import from_environment

    access = from_environment()
    logs.configure(secrets=[access.token] if access.token else [])
    return access


def _emit(ctx: Context, answer: dict[str, Any]) -> int:
    _warn(answer.pop("warnings", None) or [])
    ctx.out.emit(answer, None)
    return 0


def _option_or_bare(ctx: Context, name: str) -> tuple[bool, str | None]:
    """A flag that may carry a value (``--no-monitor "<reason>"``, as the reference's parser)."""
    for i, arg in enumerate(ctx.args):
        if arg == name:
            value = ctx.args[i + 1] if i + 1 < len(ctx.args) else None
            if value is not None and not value.startswith("--"):
                del ctx.args[i: i + 2]
                return True, value
            del ctx.args[i]
            return True, None
        if arg.startswith(name + "="):
            del ctx.args[i]
            return True, arg.split("=", 1)[1]
    return False, None


def _choice(value: str | None, flag: str, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _number(ctx: Context, flag: str, default: int, maximum: int) -> int:
    value = ctx.option(flag)
    return default if value is None else _positive_int(value, flag, maximum=maximum)


def _text(ctx: Context, flag: str, limit: int) -> str | None:
    from scheduler.dispatching import spec

    value = ctx.option(flag)
    return None if value is None else spec.check_text(value, flag, limit)


def _message(ctx: Context, required: bool = True) -> str | None:
    from scheduler.dispatching.inputs import MessageSources, require_message, resolve_message

    sources = MessageSources(message=ctx.option("--message"),
                             message_file=ctx.option("--message-file"),
                             message_env=ctx.option("--message-env"),
                             message_stdin=ctx.flag("--message-stdin"))
    text = resolve_message(sources)
    return require_message(text) if required else text


# -- enqueue ------------------------------------------------------------------------------------
def _enqueue_request(ctx: Context) -> tuple[Any, list[str]]:
    from scheduler.dispatching import spec
    from scheduler.dispatching.enqueue import EnqueueRequest
    from scheduler.models.enums import SubagentMode

    label = spec.check_label(ctx.option("--label"))
    warnings: list[str] = []
    timeout_given = any(a == "--timeout" or a.startswith("--timeout=") for a in ctx.args)
    if not timeout_given:
        warnings.append(f"WARNING: --timeout not specified, defaulting to {spec.DEFAULT_TIMEOUT_S}s. "
                        "Pass --timeout explicitly (>=1200 for thinking=high tasks).")
    agent = spec.check_word(ctx.option("--agent") or "main", "--agent", spec.AGENT_PATTERN,
                            "1-64 letters, digits, _ or -")
    session_key = ctx.option("--session-key")
    if session_key is not None:
        spec.check_word(session_key, "--session-key", spec.SESSION_KEY_PATTERN,
                        "a gateway session key (agent:<id>:...)")
    no_monitor, _reason = _option_or_bare(ctx, "--no-monitor")
    request = EnqueueRequest(
        label=label, message="", session_key=session_key, agent=agent,
        mode=SubagentMode(_choice(ctx.option("--mode"), "--mode", ("fresh", "reuse")) or "fresh"),
        model=_text(ctx, "--model", spec.MAX_MODEL_LENGTH),
        thinking=_choice(ctx.option("--thinking"), "--thinking", spec.THINKING_LEVELS),
        timeout_s=_number(ctx, "--timeout", spec.DEFAULT_TIMEOUT_S, spec.MAX_TIMEOUT_S),
        deliver_to=_text(ctx, "--deliver-to", spec.MAX_TARGET_LENGTH),
        deliver_channel=_text(ctx, "--deliver-channel", spec.MAX_CHANNEL_LENGTH),
        delivery_mode=_choice(ctx.option("--delivery-mode"), "--delivery-mode",
                              spec.DELIVERY_MODES),
        origin=_text(ctx, "--origin", spec.MAX_TARGET_LENGTH + spec.MAX_CHANNEL_LENGTH),
        monitor=not no_monitor,
        monitor_cron=ctx.option("--monitor-interval") or spec.DEFAULT_MONITOR_CRON,
        monitor_timeout_min=_number(ctx, "--monitor-timeout", spec.DEFAULT_MONITOR_TIMEOUT_MIN,
                                    spec.MAX_MONITOR_TIMEOUT_MIN),
        verify_cmd=_text(ctx, "--verify-cmd", spec.MAX_VERIFY_CMD_LENGTH),
        idle_threshold_s=_number(ctx, "--idle-threshold", spec.DEFAULT_IDLE_THRESHOLD_S,
                                 spec.MAX_TIMEOUT_S),
        payload_kind=_choice(ctx.option("--payload-kind"), "--payload-kind",
                             ("agentTurn", "systemEvent", "shellCommand")),
    )
    return request, warnings


def enqueue(ctx: Context) -> int:
    from dataclasses import replace

    from scheduler.dispatching import enqueue as enqueuing

    request, warnings = _enqueue_request(ctx)
    message = _message(ctx)
    ctx.no_extra(0, ENQUEUE_USAGE)
    request = replace(request, message=message)
    outcome = enqueuing.enqueue(ctx.store, _gateway(), request, utcnow())
    # After the work, not before as the reference: a failed enqueue stays one error line.
    _warn(warnings)
    return _emit(ctx, outcome)


# -- reading commands ---------------------------------------------------------------------------
def _label(ctx: Context, usage: str) -> str:
    from scheduler.dispatching import spec

    label = spec.check_lookup_label(ctx.option("--label"))
    ctx.no_extra(0, usage)
    return label


def status(ctx: Context) -> int:
    from scheduler.dispatching import inspection

    label = _label(ctx, "dispatch status --label <l>")
    return _emit(ctx, inspection.status(ctx.store, _gateway(), label, utcnow()))


def result(ctx: Context) -> int:
    from scheduler.dispatching import inspection

    label = _label(ctx, "dispatch result --label <l>")
    return _emit(ctx, inspection.result(ctx.store, _gateway(), label))


def list_labels(ctx: Context) -> int:
    from scheduler.dispatching import inspection
    from scheduler.models.enums import SubagentStatus

    wanted = _choice(ctx.option("--status"), "--status", tuple(s.value for s in SubagentStatus))
    limit = _number(ctx, "--limit", DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
    ctx.no_extra(0, "dispatch list [--status <status>] [--limit <n>]")
    return _emit(ctx, inspection.list_labels(ctx.store, wanted, limit))


def _label_or_key(ctx: Context, usage: str) -> tuple[str | None, str | None]:
    from scheduler.dispatching import spec

    label = ctx.option("--label")
    key = ctx.option("--session-key")
    if label is None and key is None:
        raise UsageError("--label or --session-key is required")
    if label is not None:
        spec.check_lookup_label(label)
    if key is not None:
        spec.check_word(key, "--session-key", spec.SESSION_KEY_PATTERN, "a gateway session key")
    return label, key


def heartbeat(ctx: Context) -> int:
    from scheduler.dispatching import inspection

    usage = "dispatch heartbeat --label <l> | --session-key <k>"
    label, key = _label_or_key(ctx, usage)
    ctx.no_extra(0, usage)
    return _emit(ctx, inspection.heartbeat(ctx.store, _gateway(), label, key, utcnow()))


def _threshold_min(ctx: Context) -> float:
    from scheduler.dispatching import spec

    raw = ctx.option("--threshold-min")
    if raw is None:
        return float(spec.DEFAULT_STUCK_THRESHOLD_MIN)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_THRESHOLD_MIN:
        raise UsageError(f"--threshold-min must be a number of minutes in (0, {MAX_THRESHOLD_MIN}]")
    return value


def stuck(ctx: Context) -> int:
    from scheduler.dispatching import inspection

    threshold = _threshold_min(ctx)
    ctx.no_extra(0, "dispatch stuck [--threshold-min <n>]")
    answer = inspection.stuck(ctx.store, _gateway(), threshold, utcnow())
    _report_resolved(answer["auto_resolved"])
    found = answer["stuck_sessions"]
    if not found or ctx.out.json_mode:
        ctx.out.emit(answer, None)
        return 1 if found else 0
    plural = "s" if len(found) > 1 else ""
    lines = [f"* {s['label']} (running {s['ageMin']}min, silent {s['silenceMin']}min)" for s in found]
    ctx.out.emit(answer, f"\u26a0\ufe0f dispatch: {len(found)} stuck session{plural}:\n"
                 + "\n".join(lines))
    return 1


def _report_resolved(resolved: list[dict[str, Any]]) -> None:
    if resolved:
        _warn([f"auto-resolved {len(resolved)} completed session(s):"]
              + [f"  [ok] {r['label']}: {r['reason']}" for r in resolved])


def sync(ctx: Context) -> int:
    from scheduler.dispatching import inspection

    dry_run = ctx.flag("--dry-run")
    ctx.no_extra(0, "dispatch sync [--dry-run]")
    return _emit(ctx, inspection.sync(ctx.store, _gateway(), dry_run, utcnow()))


# -- writing commands ---------------------------------------------------------------------------
def done(ctx: Context) -> int:
    from scheduler.dispatching import done as done_signal
    from scheduler.dispatching import spec

    usage = ("dispatch done --label <l> --summary <s> --checklist '<json>' [--sha <sha>] "
             "[--force-done --reason <r>] [--skip-activity-check]")
    request = done_signal.DoneRequest(
        label=spec.check_lookup_label(ctx.option("--label")),
        summary=_text_block(ctx.option("--summary"), "--summary", spec.MAX_SUMMARY_LENGTH),
        checklist=ctx.option("--checklist"), sha=ctx.option("--sha"),
        force_done=ctx.flag("--force-done"),
        reason=_text_block(ctx.option("--reason"), "--reason", spec.MAX_REASON_LENGTH),
        skip_activity_check=ctx.flag("--skip-activity-check"))
    ctx.no_extra(0, usage)
    return _emit(ctx, done_signal.done(ctx.store, _gateway(), request, utcnow()))


def _text_block(value: str | None, flag: str, limit: int) -> str | None:
    """A free text that may span lines (a summary), bounded."""
    if value is not None and (len(value) > limit or "\x00" in value):
        raise UsageError(f"{flag} must be at most {limit} characters")
    return value


def send(ctx: Context) -> int:
    from scheduler.dispatching import control

    usage = "dispatch send --label <l> [--message <m> | --message-file <f> | ...] [--session-key <k>]"
    label, key = _label_or_key(ctx, usage)
    message = _message(ctx)
    ctx.no_extra(0, usage)
    assert message is not None
    return _emit(ctx, control.send(ctx.store, _gateway(), label, key, message, utcnow()))


def cancel(ctx: Context) -> int:
    from scheduler.dispatching import control, spec

    usage = "dispatch cancel --label <l> [--reason <text>]"
    label = spec.check_lookup_label(ctx.option("--label"))
    reason = _text(ctx, "--reason", spec.MAX_REASON_LENGTH)
    ctx.no_extra(0, usage)
    return _emit(ctx, control.cancel(ctx.store, _gateway(), label, reason, utcnow()))


def import_labels(ctx: Context) -> int:
    from scheduler.dispatching import importing

    usage = "dispatch import [<labels.json>]  (default: $DISPATCH_LABELS_PATH)"
    path = ctx.args[0] if ctx.args and not ctx.args[0].startswith("--") else None
    ctx.no_extra(1 if path is not None else 0, usage)
    path = path or os.environ.get(LABELS_PATH_ENV) or None
    if path is None:
        raise UsageError(f"usage: openclaw-scheduler {usage}")
    answer = importing.import_labels(ctx.store, path, utcnow())
    ctx.out.emit(answer, None)
    return 1 if answer["rejected"] else 0


def _normalised(args: list[str]) -> list[str]:
    """The arguments read once, left to right: each value flag joined with its value
    (``--message=<text>``), so a value that looks like a flag (``--message --timeout``) stays a
    value; a flag given twice is refused (the reference silently kept the last one)."""
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        i += 1
        if not name.startswith("--"):
            out.append(arg)
            continue
        if name in seen:
            raise UsageError(f"{name} given twice")
        seen.add(name)
        takes_value = name in VALUE_FLAGS or (
            name == "--no-monitor" and i < len(args) and not args[i].startswith("--"))
        if "=" in arg or not takes_value or i >= len(args):
            out.append(arg)
            continue
        out.append(f"{name}={args[i]}")
        i += 1
    return out


def watch(ctx: Context) -> int:
    """The daemon's watch in the foreground (strategies/dispatch_watch.py): exit 0 with the
    completion text when the label ends well, 1 otherwise (the reference's watcher.mjs)."""
    import asyncio

    from scheduler.config import load_settings
    from scheduler.engine.dispatch_watching import watch_in_foreground

    label = _label(ctx, "dispatch watch --label <l>")
    _gateway()  # the log set-up, with the token among the secrets
    outcome = asyncio.run(watch_in_foreground(label, ctx.store, load_settings()))
    answer = {"ok": outcome.status == "ok", "label": label, "status": outcome.status,
              "sessionKey": outcome.session_key, "completion": outcome.completion,
              "lastReply": outcome.reply, "error": outcome.error, "retries": outcome.retries}
    if ctx.out.json_mode:
        ctx.out.emit(answer, None)
    elif answer["ok"]:
        ctx.out.emit(answer, outcome.completion or outcome.reply or "completed")
    else:
        ctx.out.error(f"{label}: {outcome.status}: {outcome.error or 'no completion'}")
    return 0 if answer["ok"] else 1


def _once(handler: Handler) -> Handler:
    def run(ctx: Context) -> int:
        ctx.args[:] = _normalised(ctx.args)
        return handler(ctx)

    return run


VALUE_FLAGS: Final = frozenset({
    "--label", "--message", "--message-file", "--message-env", "--mode", "--session-key",
    "--agent", "--model", "--thinking", "--timeout", "--deliver-to", "--deliver-channel",
    "--delivery-mode", "--origin", "--monitor-interval", "--monitor-timeout", "--verify-cmd",
    "--idle-threshold", "--payload-kind", "--status", "--limit", "--threshold-min", "--summary",
    "--checklist", "--sha", "--reason",
})

COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("dispatch", name): _once(handler) for name, handler in (
        ("enqueue", enqueue), ("status", status), ("stuck", stuck), ("result", result),
        ("send", send), ("steer", send), ("heartbeat", heartbeat), ("list", list_labels),
        ("sync", sync), ("done", done), ("import", import_labels), ("cancel", cancel),
        ("watch", watch),
    )
}
