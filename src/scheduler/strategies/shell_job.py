"""The strategy for ``session_target = 'shell'`` jobs: run ``payload_message`` in a shell."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from scheduler.models.records import Job, Run
from scheduler.store.thread import StoreThread
from scheduler.strategies.base import Outcome
from scheduler.strategies.network_isolation import (
    ISOLATION_VARIABLE,
    refusal,
    refusal_reason,
    wants_no_network,
)
from scheduler.strategies.parent_input import ParentInput, parent_input
from scheduler.strategies.process_tree import DeferredSweeper
from scheduler.strategies.shell import (
    DEFAULT_CAPTURE_LIMIT,
    ShellProcessResult,
    not_started,
    run_shell_command,
    scrubbed_environment,
)
from scheduler.strategies.shell_capture import ArtifactSpec
from scheduler.strategies.shell_output import OutputLimits, normalize_shell_result

# Set in every shell run's environment (and so inherited by everything it starts). The run id
# also finds the run's processes when it ends, and after a crash (engine/orphans.py).
JOB_ID_VARIABLE = "SCHEDULER_JOB_ID"
DEFAULT_MAX_OUTPUT_BYTES = 1024**3


def head_limit(limits: OutputLimits) -> int:
    """Bytes of each stream kept in memory: what the stored column and the excerpt can hold."""
    return min(max(limits.store, limits.excerpt), DEFAULT_CAPTURE_LIMIT)


class ShellJobStrategy:
    def __init__(
        self,
        *,
        shell: str,
        artifacts_dir: Path,
        env_allow: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        db: StoreThread | None = None,
        network_isolation: str = "auto",
    ) -> None:
        self.db = db  # reads the parent run of a chained run (without it: no parent input)
        self.shell = shell
        self.artifacts_dir = artifacts_dir
        self.max_output_bytes = max_output_bytes
        # Computed once: the daemon's environment minus secrets (reference defect §17 #32).
        self.env = scrubbed_environment(os.environ if environ is None else environ, env_allow)
        self.sweeper = DeferredSweeper()
        # "off": every contract_network none run is refused (SCHEDULER_NETWORK_ISOLATION).
        self.network_isolation = network_isolation

    async def execute(self, job: Job, run: Run, credentials: Mapping[str, str] | None = None) -> Outcome:
        """``credentials``: variables a trust provider materialised for this run only; they
        are added after the secret filter, which they would not pass."""
        timeout_ms = run.run_timeout_ms
        run_id = run.id
        limits = OutputLimits.from_job(job.row)
        parent = await self._parent_input(run)
        result = await self._run(job, run, limits, parent, credentials)
        fields = normalize_shell_result(
            result,
            limits=limits,
            run_id=run_id,
            artifacts_dir=self.artifacts_dir,
            timeout_ms=timeout_ms,
        )
        announcement = shell_announcement(job, fields.status, fields.delivery_text,
                                          fields.error_message)
        return Outcome(status=fields.status, columns=fields.as_run_columns(),
                       delivery_text=announcement,
                       attachments=fields.attachments if announcement is not None else (),
                       content=condition_text(result.stdout, fields.error_message))

    async def _run(self, job: Job, run: Run, limits: OutputLimits, parent: ParentInput | None,
                   credentials: Mapping[str, str] | None) -> ShellProcessResult:
        """The command's process, in a network namespace of its own for ``contract_network:
        none``; a namespace that cannot be made refuses the run before the command starts."""
        no_network = wants_no_network(job.row.get("contract_network"))
        if no_network and self.network_isolation == "off":
            return not_started(refusal(f"{ISOLATION_VARIABLE}=off"))
        result = await run_shell_command(
            job.payload_message,
            shell=self.shell,
            timeout_s=run.run_timeout_ms / 1000,
            env={**self.env, **(parent.env if parent else {}), **(credentials or {}),
                 JOB_ID_VARIABLE: job.id},
            stdin_data=parent.stdin if parent else None,
            run_id=run.id,
            sweeper=self.sweeper,
            capture_limit_bytes=head_limit(limits),
            artifacts=ArtifactSpec(self.artifacts_dir, run.id, limits.offload_threshold,
                                   self.max_output_bytes),
            no_network=no_network,
        )
        reason = refusal_reason(result.exit_code, result.stderr) if no_network else None
        if reason is not None:
            return not_started(refusal(reason), result.started_monotonic)
        return result

    async def _parent_input(self, run: Run) -> ParentInput | None:
        """A chained run's input from the run that triggered it (None for other runs)."""
        parent_id = run.triggered_by_run
        if not parent_id or self.db is None:
            return None
        store = self.db.store
        parent_run = await self.db.run(store.get_run, parent_id)
        parent_job = None
        if parent_run is not None:
            parent_job = await self.db.run(store.get_job, parent_run.job_id)
        return await parent_input(parent_id, None if parent_run is None else parent_run.row,
                                  None if parent_job is None else parent_job.row)


def condition_text(stdout: bytes, error_message: str | None) -> str:
    """What the run's children test their ``trigger_condition`` on: its stdout (as much as was
    kept in memory: the store limit, 64 KiB by default), or, with no output, its error."""
    text = stdout.decode("utf-8", "replace")
    return text if text.strip() or not error_message else error_message


def shell_announcement(job: Job, status: str, delivery_text: str, error_message: str | None) -> str | None:
    """The reference's shell rule (§4.4): announce-always sends every result (failures prefixed),
    announce sends failures only; the output preview, or the error when there is no output."""
    if status == "cancelled":
        return None
    payload = delivery_text if delivery_text.strip() else (error_message or "")
    if not payload:
        return None
    mode = job.delivery_mode
    if mode == "announce-always":
        prefix = "" if status == "ok" else f"\u26a0\ufe0f Shell job failed: {job.name}\n\n"
        return prefix + payload
    if mode == "announce" and status != "ok":
        return payload
    return None
