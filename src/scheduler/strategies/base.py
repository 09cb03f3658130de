"""What every strategy gives back, and the protocol the engine calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from scheduler.models.records import Job, Run


@dataclass(frozen=True)
class Outcome:
    """The end of a run: its status and the run columns to record."""

    status: str
    columns: dict[str, Any] = field(default_factory=dict)
    # What to announce to the job's delivery target, already decided by the strategy from the
    # job's delivery_mode (None: nothing). Recorded durably with the run's end.
    delivery_text: str | None = None
    # Paths named by [IMAGE:/path] markers, already taken out of delivery_text (scheduler.media);
    # the engine checks them against its media policy before they are recorded for sending.
    attachments: tuple[str, ...] = ()
    # Send delivery_text to this (channel, target) whatever the job's delivery_mode (watchdog alerts).
    delivery_target: tuple[str, str] | None = None
    # The job removes itself when this run is recorded (a watchdog that saw its task end).
    remove_job: bool = False
    # The output the run's children test their trigger_condition on (an agent's whole reply, a
    # shell run's stdout); None: its recorded summary or error message.
    content: str | None = None
    # A trust gate refused the run before its work began (engine/trust.py): it ends without
    # retry, delivery or children.
    fail_closed: bool = False
    # A failure no retry may follow, whatever the job's max_retries (a turn over its cost cap).
    no_retry: bool = False


class DeferRun(Exception):
    """The work cannot start now for a reason outside the job (the gateway is down): the engine
    gives the claim back (the run is recorded ``skipped`` with ``reason``) and the work stays due."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Strategy(Protocol):
    async def execute(self, job: Job, run: Run) -> Outcome: ...
