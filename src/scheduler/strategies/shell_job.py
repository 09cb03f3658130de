"""The strategy for ``session_target = 'shell'`` jobs: run ``payload_message`` in a shell."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from scheduler.store.db import Row
from scheduler.strategies.base import Outcome
from scheduler.strategies.shell import run_shell_command, scrubbed_environment
from scheduler.strategies.shell_output import OutputLimits, normalize_shell_result

# Set in every shell run's environment (and so inherited by everything it starts).
RUN_ID_VARIABLE = "SCHEDULER_RUN_ID"
JOB_ID_VARIABLE = "SCHEDULER_JOB_ID"


class ShellJobStrategy:
    def __init__(
        self,
        *,
        shell: str,
        artifacts_dir: Path,
        env_allow: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.shell = shell
        self.artifacts_dir = artifacts_dir
        # Computed once: the daemon's environment minus secrets (reference defect §17 #32).
        self.env = scrubbed_environment(os.environ if environ is None else environ, env_allow)

    async def execute(self, job: Row, run: Row) -> Outcome:
        timeout_ms = int(run["run_timeout_ms"] or job["run_timeout_ms"] or 300000)
        # The ids let the command know its run, and let a later daemon find this run's
        # processes should this one be killed (engine/orphans.py).
        env = {**self.env, RUN_ID_VARIABLE: str(run["id"]), JOB_ID_VARIABLE: str(job["id"])}
        result = await run_shell_command(
            str(job["payload_message"]),
            shell=self.shell,
            timeout_s=timeout_ms / 1000,
            env=env,
        )
        fields = normalize_shell_result(
            result,
            limits=OutputLimits.from_job(job),
            run_id=str(run["id"]),
            artifacts_dir=self.artifacts_dir,
            timeout_ms=timeout_ms,
        )
        return Outcome(status=fields.status, columns=fields.as_run_columns(),
                       delivery_text=shell_announcement(job, fields.status, fields.delivery_text,
                                                        fields.error_message))


def shell_announcement(job: Row, status: str, delivery_text: str, error_message: str | None) -> str | None:
    """The reference's shell rule (§4.4): announce-always sends every result (failures prefixed),
    announce sends failures only; the output preview, or the error when there is no output."""
    if status == "cancelled":
        return None
    payload = delivery_text if delivery_text.strip() else (error_message or "")
    if not payload:
        return None
    mode = job["delivery_mode"]
    if mode == "announce-always":
        prefix = "" if status == "ok" else f"\u26a0\ufe0f Shell job failed: {job['name']}\n\n"
        return prefix + payload
    if mode == "announce" and status != "ok":
        return payload
    return None
