"""Entry point and routing for ``openclaw-scheduler``.

Commands and their arguments follow the reference CLI so agents can call either. ``--json`` may
appear anywhere. Errors are one line on stderr (``{"ok": false, "error": ...}`` on stdout with
``--json``) and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from scheduler.cli.context import Context, Handler, UsageError
from scheduler.cli.output import Output
from scheduler.errors import SchedulerError

USAGE = """\
Usage: openclaw-scheduler <command> [subcommand] [args] [--json]

Daemon:
  start                                   run the daemon in the foreground (also: python -m scheduler)

Service (systemd on Linux, launchd on macOS; docs/operating.md, Install as a service):
  service install [--system] [--dry-run] [--manager systemd|launchd]
                                          write the unit (user unit unless --system), enable, start
  service uninstall [--system] [--dry-run]
                                          stop, disable and remove it
  service status [--system]               installed, enabled, running

Jobs:
  jobs list [--type <job_type>]           list jobs
  jobs get <id>                           show one job
  jobs tree                               jobs as parent/child chains (docs/workflows.md)
  jobs add '<json>' [--dry-run] [--at <datetime> | --in <duration>] [--watchdog] [--profile <p>]
                                          add a job (run_timeout_ms and origin are required)
  jobs validate '<json>'                  validate a job spec without writing it
  jobs update <id> '<json>' [--dry-run] [--profile <p>]
  jobs enable <id> | jobs disable <id> | jobs delete <id>
  jobs run <id>                           queue an immediate run (schedule unchanged)
  jobs approve <job-id>                   approve the job's oldest pending approval; it runs at once
  jobs reject <job-id> [reason]           reject it: the gated run is cancelled

Approvals (jobs with approval_required wait for one before each run):
  approvals list | approvals pending      pending approvals, oldest first, with their age
  jobs cancel <id> [--no-cascade]         disable a job and its descendants; stop their runs

Runs:
  runs list <job-id> [limit]              newest first (default 20)
  runs get <run-id>
  runs output <run-id> [stdout|stderr]    full shell output (offloaded file or stored text)
  runs running                            runs in progress
  runs stale [threshold-s]                running runs without a heartbeat for threshold-s (90)

Delivery aliases (a job's delivery_to "@name" resolves through these):
  alias list | alias add <name> <channel> <target> [description] | alias remove <name>

Resource pools (jobs naming one pool take turns; capacity 1 unless set):
  pools list                              pools with capacity, jobs, running and waiting runs
  pools set <name> <capacity>             let up to <capacity> runs of the pool run at once
  pools remove <name>                     forget the capacity (back to 1)

Messages (a --kind spawn message asks the daemon for a job: its --body is a job spec):
  messages send --from <label> [--to <agent>] [--kind <kind>] [--subject <text>]
                [--priority 0|1|2] [--expires-in <duration> | --expires-at <datetime>]
                [--reply-to <id>] [--ack-required] [--metadata '<json>'] [--owner <agent>]
                [--channel <channel>] [--delivery-to <target>] [--job-id <id>] [--run-id <id>]
                [--team <team> [--member <member>] [--task <task>]]
                --body <text>                 send a message (--to main, --kind status by default)
  msg send <from> <to> <body>             send a text message (positional form)
  msg inbox <agent> [limit]               pending + delivered, kind first, then priority, then age
  msg outbox <agent> [limit]              sent by the agent, newest first
  msg thread <message-id>                 the message and its replies
  msg ack <message-id> [actor] [note]     acknowledge (a broadcast: the actor is the agent)
  msg read <message-id> [agent]           mark read (a broadcast: for the agent named)
  msg readall <agent> | msg unread <agent>
  msg receipts <message-id> [limit]       attempts, errors and acks, newest first
  queue list [agent] [limit]              the agent's unread messages (default main, 50)
  queue clear [agent]                     mark them all read
  queue prune                             delete old messages now (docs/messaging.md, Retention)

Agents (registered by hand, by the daemon for "main", and by the first turn of a job naming one):
  agents list                             agents with status (idle, busy, offline) and session
  agents get <agent-id>
  agents register <agent-id> [name] [--capabilities '<json array>']

Task groups (the dead-man switch for sub-agents; docs/messaging.md):
  tasks create '<json>'                   {"name", "expected_agents": [...], "timeout_s", "delivery_channel",
                                          "delivery_to", "created_by"} (camelCase keys too)
  tasks list | tasks status <id> | tasks history [limit]
  tasks heartbeat <id> <label> running|completed|failed [message]
  tasks register-session <id> <label> <session-key>

Teams:
  team map [limit] | team tasks <team> [limit] | team events <team> [limit] [task]
  team gate <team> <task> '<members-json>' [timeout-s] [--delivery-channel <c>] [--delivery-to <t>]
  team check-gates [limit] | team ack <message-id> [actor] [note]
  msg team-inbox <team> [limit] [member] [task]

Sub-agent dispatch (docs/dispatch.md; JSON output, as the reference's dispatch CLI):
  dispatch enqueue --label <l> [--message <m> | --message-file <path|-> | --message-env <VAR>
                   | --message-stdin] [--deliver-to <id>] [--deliver-channel <ch>] [--origin <o>]
                   [--mode fresh|reuse] [--session-key <k>] [--agent <a>] [--model <m>]
                   [--thinking <level>] [--timeout <s>] [--delivery-mode announce|announce-always|none]
                   [--no-monitor [reason]] [--monitor-interval <cron>] [--monitor-timeout <min>]
                   [--verify-cmd <cmd>] [--idle-threshold <s>] [--payload-kind <kind>]
                                          start a sub-agent session; --deliver-to unless --no-monitor
  dispatch status --label <l>             ledger entry and the gateway's view (may auto-resolve)
  dispatch result --label <l>             the session's last assistant reply
  dispatch list [--status <s>] [--limit <n>]
  dispatch send|steer --label <l> [--message <m> | ...] [--session-key <k>]
  dispatch heartbeat --label <l> | --session-key <k>
  dispatch stuck [--threshold-min <n>]    exit 1 when a session is stuck
  dispatch sync [--dry-run]               close idle running labels as interrupted
  dispatch done --label <l> --summary <s> --checklist '{"work_complete":true}' [--sha <sha>]
                [--force-done --reason <r>] [--skip-activity-check]
                                          the sub-agent's completion signal (guarded)
  dispatch cancel --label <l> [--reason <r>]
                                          abort the session, close the label, disarm its jobs
  dispatch import [<labels.json>]         import a reference ledger once (default $DISPATCH_LABELS_PATH)
  dispatch watch --label <l>              follow the label until it ends, as the daemon's watcher does;
                                          prints the completion (exit 0), else exit 1

Idempotency ledger:
  idem status <job-id>                    newest keys claimed for a job's runs
  idem check <key> | idem release <key>   inspect, or release a key so its work may run again
  idem prune                              delete expired ledger entries

Move from OpenClaw cron (docs/operating.md, "Move from OpenClaw cron"):
  migrate [--from PATH] [--dry-run] [--include-system]
                                          import the gateway's cron jobs (its jobs.json or its
                                          state database, read-only); ids kept, never twice

Backup and restore (docs/operating.md, "Back up" and "Restore"):
  backup create [PATH]                    online copy of the database (default: the backup directory)
  backup list                             backups in SCHEDULER_BACKUP_DIR (~/.openclaw/scheduler/backups)
  backup verify PATH                      integrity and schema check of a backup file
  backup restore PATH [--force]           verify, keep a pre-restore copy, swap the backup in;
                                          refused while a daemon serves the database (--force:
                                          restore anyway; the daemon is not stopped)

Database upkeep (docs/operating.md, Keep the database small):
  db check                                integrity, schema revision, size, what a prune would delete
  db prune [--dry-run]                    apply retention now: runs (and their files), approvals,
                                          messages, ledger entries; --dry-run only counts
  db vacuum                               shrink the file (refused while a daemon serves it)

Moving a database (docs/multi-host.md, "Moving a host's database: db copy"):
  db copy SOURCE TARGET [--force] [--free] [--host NAME]
                                          copy every row (a SQLite file or a PostgreSQL URL each)
                                          in one transaction, counts verified; refused while a
                                          daemon serves either file or when TARGET holds data
                                          (--force: add to it; a clashing row fails it all);
                                          jobs of a SQLite SOURCE are pinned to host:<this host>
                                          (--host NAME: that host; --free: left unplaced)

Other:
  status                                  database, jobs, runs and whether a daemon serves this DB
  version                                 package and schema version
  schema [jobs|runs|dispatches|messages|all]
                                          the job/run field reference; message kinds and statuses
  cron next '<expr>' [--tz <zone>] [--from <ISO 8601>] [--count <n>]
                                          preview fire times, as the daemon computes them

Diagnosis:
  doctor                                  check the database, daemon, gateway, shell, artifacts,
                                          service and stored schedules; PASS/WARN/FAIL with fixes
  jobs explain <id> [--limit <n>]         why a job ran or did not: recent occurrences with their
                                          reasons, what stands in its way now, next 5 fire times,
                                          its queue rows and pending approvals

Companion tools (docs/operating.md, "Stuck runs" and "Telegram webhook health"):
  runs stuck [--threshold-min 45] [--limit 20]
                                          running runs older than the threshold: ordinary ones are
                                          reported; a dispatch watcher's silent sub-agent is steered
                                          once, then reported; exit 1 when something is stuck
  webhook-check [--label <name>] [--gateway-url <url>] [--scheduler-db <path>]
                [--require-webhook [true|false]] [--expected-webhook-url <url>]
                                          the gateway's Telegram channel: configured, running,
                                          connected, polling/webhook, last error, live probe;
                                          exit 1 when unhealthy (STATUS: ALERT)

v0.2 contract (docs/trust.md):
  capabilities                            the v0.2 features this build honours (JSON: scheduler_version,
                                          schema_version, handoff_version, features)

Environment: SCHEDULER_DB (default ~/.openclaw/scheduler/scheduler.db), SCHEDULER_HOME, ...
See docs/operating.md.
"""


def _commands() -> dict[tuple[str, str | None], Handler]:
    from scheduler.cli import (
        backup,
        capabilities,
        commands,
        companions,
        db,
        dbcopy,
        dispatch,
        doctor,
        explain,
        migrate,
        service,
        tasks,
    )

    return {**commands.COMMANDS, **tasks.COMMANDS, **backup.COMMANDS, **db.COMMANDS,
            **doctor.COMMANDS, **explain.COMMANDS, **migrate.COMMANDS, **service.COMMANDS,
            **companions.COMMANDS, **capabilities.COMMANDS, **dispatch.COMMANDS,
            **dbcopy.COMMANDS}


def run(argv: Sequence[str]) -> int:
    args = list(argv)
    json_mode = "--json" in args
    args = [a for a in args if a != "--json"]
    out = Output(json_mode)
    if not args or args[0] in ("help", "--help", "-h"):
        sys.stdout.write(USAGE)
        return 0
    if args[0] in ("start", "dispatcher"):
        from scheduler.engine.entry import daemon_main

        return daemon_main()
    if args[0] in ("version", "--version", "-v") and not json_mode:
        from scheduler import __version__

        sys.stdout.write(f"openclaw-scheduler {__version__}\n")
        return 0
    ctx = Context(out=out, args=args)
    try:
        _check_encoding(args)
        handler = _route(args)
        return handler(ctx)
    except SchedulerError as exc:
        out.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for a user; the debug switch shows one
        if os.environ.get("SCHEDULER_DEBUG"):
            raise
        out.error(f"internal error ({type(exc).__name__}): {exc}; set SCHEDULER_DEBUG=1 for details")
        return 70
    finally:
        ctx.close()


def _check_encoding(args: list[str]) -> None:
    """Refuse an argument that was not UTF-8: Python hands its bytes over as lone surrogates,
    which neither SQLite nor a UTF-8 stream accepts."""
    from scheduler.text import first_lone_surrogate, quoted

    for position, arg in enumerate(args, start=1):
        if first_lone_surrogate(arg) is not None:
            raise UsageError(f"argument {position} is not valid UTF-8: {quoted(arg, limit=40)}")


def _route(args: list[str]) -> Handler:
    commands = _commands()
    command = args[0]
    sub = args[1] if len(args) > 1 else None
    if (command, sub) in commands:
        del args[:2]
        return commands[(command, sub)]
    if (command, None) in commands:
        del args[:1]
        return commands[(command, None)]
    groups = sorted({c for c, s in commands if s is not None})
    if command in groups:
        subs = sorted(s for c, s in commands if c == command and s is not None)
        what = f"unknown subcommand {sub!r}" if sub else "missing subcommand"
        raise UsageError(f"{what} for {command}; expected one of: {', '.join(subs)}")
    raise UsageError(f"Unknown command: {command}. Run without arguments for usage.")


def entrypoint() -> None:
    sys.exit(run(sys.argv[1:]))
