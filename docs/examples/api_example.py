"""The examples of docs/api.md as one program (tests/test_api.py type-checks it with
``mypy --strict`` and runs it against a daemon on a temporary database).

    python docs/examples/api_example.py [path/to/scheduler.db]
"""

from __future__ import annotations

import sys
import time

from scheduler.api import (
    Approval,
    Job,
    NotFoundError,
    Run,
    Scheduler,
    ValidationError,
    open_scheduler,
)


def create_nightly_report(sched: Scheduler) -> Job:
    return sched.jobs.create({
        "name": "nightly report",
        "schedule_cron": "0 7 * * *",
        "schedule_tz": "Europe/Berlin",
        "session_target": "shell",
        "payload_message": "echo report done",
        "run_timeout_ms": 60_000,
        "origin": "system",
        "delivery_mode": "none",
    })


def show_validation_error(sched: Scheduler) -> str:
    try:
        sched.jobs.validate({"name": "bad", "schedule_cron": "61 * * * *",
                             "session_target": "shell", "payload_message": "true",
                             "run_timeout_ms": 1000, "origin": "system"})
    except ValidationError as error:
        return str(error)  # the very line `openclaw-scheduler jobs validate` prints
    return "valid"


def run_now_and_wait(sched: Scheduler, job: Job, timeout_s: float = 60) -> Run | None:
    sched.jobs.run_now(job.id)  # a running daemon starts it at once
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = [run for run in sched.runs.list(job.id, limit=5) if run.finished_at]
        if finished:
            return finished[0]
        time.sleep(0.2)
    return None


def print_runs(sched: Scheduler, job_id: str) -> None:
    for run in sched.runs.list(job_id, limit=10):
        print(run.id[:8], run.status, run.started_at, run.row["shell_stdout"])


def message_round_trip(sched: Scheduler) -> str:
    sent = sched.messages.send("ci", "reviewer", "PR 12 is ready for review",
                               subject="PR 12", priority=1)
    for message in sched.messages.inbox("reviewer"):
        print(message.from_agent, message.subject, message.body)
    acked = sched.messages.ack(sent.id, "reviewer", "looking at it")
    return acked.status


def approve_everything_pending(sched: Scheduler) -> list[Approval]:
    approved = []
    for approval in sched.approvals.pending():
        print("approving", approval.job_name, "requested", approval.requested_at)
        approved.append(sched.approvals.approve(approval.job_id))
    return approved


def wait_for_approval(sched: Scheduler, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sched.approvals.pending():
            return True
        time.sleep(0.2)
    return False


def create_gated_deploy(sched: Scheduler) -> Job:
    return sched.jobs.create({
        "name": "deploy",
        "schedule_cron": "0 3 * * 1",
        "session_target": "shell",
        "payload_message": "echo deployed",
        "run_timeout_ms": 60_000,
        "origin": "system",
        "delivery_mode": "none",
        "approval_required": 1,
    })


def main(db_path: str | None = None) -> int:
    with open_scheduler(db_path) as sched:
        job = create_nightly_report(sched)
        print("created", job.id, "next run", job.next_run_at)
        print("refused:", show_validation_error(sched))
        run = run_now_and_wait(sched, job)
        print("ran:", None if run is None else run.status)
        print_runs(sched, job.id)
        print("message:", message_round_trip(sched))

        deploy = create_gated_deploy(sched)
        sched.jobs.run_now(deploy.id)  # the daemon holds the run for an approval
        if wait_for_approval(sched):
            approved = approve_everything_pending(sched)
            print("approved:", [approval.job_name for approval in approved])
        try:
            sched.jobs.get("no-such-job")
        except NotFoundError as error:
            print("not found:", error)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
