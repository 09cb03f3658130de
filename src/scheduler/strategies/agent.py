"""The strategy for agent jobs: ``isolated`` turns and ``main``-session turns, over the gateway.

One chat-completions request per run, on a stable per-job session (``agent:<agent>:scheduler:<job
id>``, or ``agent:<agent>:main`` for main-session jobs), with the prompt the reference builds.
A gateway that cannot be reached defers the run (it stays due); a busy gateway (429, 503, 529, a
draining gateway) is waited for, honouring ``Retry-After``, within the run's ``run_timeout_ms``
and outside the retry ladder; any other refusal fails the run with the gateway's message.
While the turn is in flight the session is watched: a turn the gateway reports as still running
is never cut short by the activity timeout (reference defect §17 #30), only by
``run_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.gateway.client import (
    ChatReply,
    GatewayBusy,
    GatewayClient,
    GatewayRejected,
    GatewayTimeout,
    GatewayUnavailable,
    canonical_session_key,
)
from scheduler.media import extract_markers
from scheduler.models.enums import ANNOUNCE_MODES, DeliveryGuarantee, SessionTarget
from scheduler.models.records import DEFAULT_PAYLOAD_TIMEOUT_S, Job, Run
from scheduler.models.validation import CONTRACT_NETWORK_NOT_ENFORCEABLE
from scheduler.store.thread import StoreThread
from scheduler.strategies import retrieval
from scheduler.strategies.agent_presence import AgentPresence, gateway_disowns_agent
from scheduler.strategies.base import DeferRun, Outcome
from scheduler.strategies.cost_cap import NOT_REPORTED, CostCheck, check_cost
from scheduler.strategies.network_isolation import wants_no_network
from scheduler.strategies.prompt import build_prompt
from scheduler.strategies.reply import NO_FLUSH, interpret_reply
from scheduler.timeutil import sqlite_now

# Waits between attempts while the gateway is busy and names no Retry-After: 5 s, 10 s, … 60 s.
BUSY_BASE_S = 5.0
BUSY_CAP_S = 60.0
# How often the session is looked at while a turn is in flight (at most; see _activity_poll_s).
MAX_ACTIVITY_POLL_S = 60.0


def busy_wait_s(attempt: int, retry_after_s: float | None) -> float:
    if retry_after_s is not None and retry_after_s >= 0:
        return retry_after_s
    return float(min(BUSY_CAP_S, BUSY_BASE_S * 2.0 ** max(0, attempt - 1)))


def soft_failure_text(job: Job, run: Run, content: str) -> str:
    will_retry = job.max_retries > 0 and run.retry_count < job.max_retries
    label = "will retry" if will_retry else "no retries configured"
    return f"\u26a0\ufe0f Job soft-failed ({label}): {job.name}\n\n{content}"


class AgentStrategy:
    def __init__(
        self, client: GatewayClient, db: StoreThread, *, log: Any,
        on_gateway_down: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.db = db
        self.log = log
        self.on_gateway_down = on_gateway_down
        self.presence = AgentPresence(db, log)

    def session_key(self, job: Job) -> str:
        requested = job.preferred_session_key
        if not requested and job.session_target is SessionTarget.MAIN:
            requested = "main"
        return canonical_session_key(job.agent_id, requested, job.id)

    async def execute(self, job: Job, run: Run) -> Outcome:
        """The turn, with the agent shown ``busy`` in the registry from before the prompt is
        built until the run's outcome is known, whichever way it ends."""
        session_key = self.session_key(job)
        try:
            # Inside the try: a cancel during this write still ends the turn in the registry.
            await self.presence.turn_started(job.agent_id, run.id, session_key)
            return await self._execute(job, run, session_key)
        finally:
            await self.presence.turn_ended(job.agent_id, run.id)

    async def _execute(self, job: Job, run: Run, session_key: str) -> Outcome:
        agent_id = job.agent_id
        if wants_no_network(job.row.get("contract_network")):
            # A row stored before validation refused this (or written around it): fail closed.
            message = CONTRACT_NETWORK_NOT_ENFORCEABLE + "; the turn was not started"
            return Outcome("error", {"session_key": session_key, "error_message": message},
                           delivery_text=self._failure_delivery(job, message))
        prompt, meta, injected = await self._prompt(job, run, agent_id)
        columns: dict[str, Any] = {"session_key": session_key, "context_summary": json.dumps(meta)}
        timeout_s = run.run_timeout_ms / 1000
        try:
            reply = await self._turn(job, prompt, agent_id, session_key, timeout_s)
        except GatewayUnavailable as exc:
            if exc.may_have_started and job.delivery_guarantee is not DeliveryGuarantee.AT_LEAST_ONCE:
                # The gateway may have begun the turn: running it again could do the work twice,
                # which an at-most-once job forbids. Fail it (the retry ladder still applies).
                message = f"{exc}; not run again automatically (delivery_guarantee at-most-once)"
                return Outcome("error", {**columns, "error_message": message},
                               delivery_text=self._failure_delivery(job, message))
            await self._unsee(agent_id, injected)
            if self.on_gateway_down is not None:
                self.on_gateway_down()
            raise DeferRun(f"gateway unavailable; deferred until it is back ({exc})") from None
        except (GatewayRejected, GatewayBusy) as exc:
            await self._unsee(agent_id, injected)
            message = str(exc)
            if gateway_disowns_agent(exc):
                self.presence.disowned(job.agent_id, run.id)
            return Outcome("error", {**columns, "error_message": message},
                           delivery_text=self._failure_delivery(job, message))
        except GatewayTimeout:
            message = f"Exceeded absolute timeout of {timeout_s:g}s"
            return Outcome("timeout", {**columns, "error_message": message})
        except _Idle as idle:
            return Outcome("timeout", {**columns, "error_message": str(idle)})
        verdict = interpret_reply(reply.content, job.delivery_mode)
        columns.update(summary=verdict.summary, error_message=verdict.error_message)
        if reply.session_key:
            columns["session_key"] = reply.session_key
        cost = self._cost(job, run, reply, columns, meta)
        self.log.info("agent.turn", run_id=run.id, job_id=job.id, status=verdict.status,
                      sentinel=verdict.sentinel,
                      total_tokens=(reply.usage or {}).get("total_tokens"), cost_usd=cost.cost_usd)
        if cost.exceeded:
            message = cost.error_message
            columns["error_message"] = message
            return Outcome("error", columns, delivery_text=self._failure_delivery(job, message),
                           content=reply.content, no_retry=True)
        if verdict.sentinel == NO_FLUSH:
            self.log.info("agent.nothing_to_flush", run_id=run.id, job_id=job.id, job=job.name)
        delivery = None
        images: tuple[str, ...] = ()
        if verdict.deliver and reply.content.strip():
            # The reply's [IMAGE:/path] lines are sent as attachments, not as text; the run's
            # summary keeps the reply as the agent wrote it.
            extracted = extract_markers(reply.content)
            images = extracted.paths
            text = extracted.text
            delivery = text if verdict.status == "ok" else soft_failure_text(job, run, text)
        return Outcome(verdict.status, columns, delivery_text=delivery, attachments=images,
                       content=reply.content)

    def _cost(self, job: Job, run: Run, reply: ChatReply, columns: dict[str, Any],
              meta: dict[str, Any]) -> CostCheck:
        """The turn's reported cost on the run, and the contract_max_cost_usd verdict noted in its
        context_summary; a cap the gateway gave no cost for is noted and logged as unchecked."""
        cost = check_cost(reply.usage, job.row.get("contract_max_cost_usd"))
        if cost.cost_usd is not None:
            columns["cost_usd"] = cost.cost_usd
        note = cost.note
        if note is not None:
            columns["context_summary"] = json.dumps({**meta, "cost_cap": note})
        if cost.cap_usd is not None and cost.cost_usd is None:
            self.log.warning("agent.cost_unchecked", run_id=run.id, job_id=job.id,
                             max_usd=cost.cap_usd, reason=NOT_REPORTED)
        elif cost.exceeded:
            self.log.warning("agent.cost_cap_exceeded", run_id=run.id, job_id=job.id,
                             cost_usd=cost.cost_usd, max_usd=cost.cap_usd)
        return cost

    async def _unsee(self, agent_id: str, message_ids: list[str]) -> None:
        """The gateway never took the prompt: its inbox messages stay for the agent's next one."""
        await self.db.run(self.db.store.return_to_inbox, agent_id, message_ids, sqlite_now())

    def _failure_delivery(self, job: Job, message: str) -> str | None:
        if job.delivery_mode not in ANNOUNCE_MODES:
            return None
        return f"\u26a0\ufe0f Job failed: {job.name}\n\n{message}"

    async def _prompt(self, job: Job, run: Run, agent_id: str) -> tuple[str, dict[str, Any], list[str]]:
        """The prompt, its context meta, and the ids of the inbox messages it carries."""
        store = self.db.store
        inbox = await self.db.run(store.take_inbox, agent_id, sqlite_now())
        parent_run = parent_job = None
        if run.triggered_by_run:
            parent_run = await self.db.run(store.get_run, run.triggered_by_run)
            if parent_run is not None:
                parent_job = await self.db.run(store.get_job, parent_run.job_id)
        retrieved = await self._retrieval(job, run)
        # The prompt mirrors the reference over whole rows (its JavaScript rendering of each value).
        prompt, meta = build_prompt(
            job.row, run.row, pending_messages=inbox,
            parent_job=None if parent_job is None else parent_job.row,
            parent_run=None if parent_run is None else parent_run.row,
            retrieval_text=retrieved.text, retrieval_results=retrieved.runs,
        )
        return prompt, meta, [str(m["id"]) for m in inbox]

    async def _retrieval(self, job: Job, run: Run) -> retrieval.Retrieved:
        """The prior runs' context; a failure to read it is logged, never fatal (as the
        reference's): the turn goes on without it."""
        try:
            return await retrieval.gather(self.db, job, run)
        except SchedulerError as exc:
            self.log.warning("agent.retrieval_failed", run_id=run.id, job_id=job.id, error=str(exc))
            return retrieval.NOTHING

    async def _turn(
        self, job: Job, prompt: str, agent_id: str, session_key: str, timeout_s: float
    ) -> ChatReply:
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GatewayTimeout(f"agent turn exceeded {timeout_s:g}s", timeout_s=timeout_s)
            try:
                return await self._watched_chat(job, prompt, agent_id, session_key, remaining)
            except GatewayBusy as busy:
                wait = busy_wait_s(attempt, busy.retry_after_s)
                if time.monotonic() + wait >= deadline:
                    raise
                self.log.warning("agent.gateway_busy", job_id=job.id, attempt=attempt,
                                 wait_s=round(wait, 1), error=str(busy))
                await asyncio.sleep(wait)

    async def _watched_chat(
        self, job: Job, prompt: str, agent_id: str, session_key: str, timeout_s: float
    ) -> ChatReply:
        chat = asyncio.create_task(self.client.chat(
            message=prompt, agent_id=agent_id, session_key=session_key,
            model_override=job.payload_model, auth_profile=job.auth_profile, timeout_s=timeout_s,
        ))
        watcher = asyncio.create_task(self._watch_activity(job, session_key, chat))
        try:
            return await chat
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our own cancellation (daemon shutdown, overdue run)
            if watcher.done() and not watcher.cancelled():
                idle = watcher.exception()
                if isinstance(idle, _Idle):
                    raise idle from None
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Idle):
                await watcher
            if not chat.done():
                chat.cancel()
                with contextlib.suppress(BaseException):
                    await chat

    async def _watch_activity(self, job: Job, session_key: str, chat: asyncio.Task[ChatReply]) -> None:
        """Cancel ``chat`` only when the gateway shows the session idle for twice
        ``payload_timeout_seconds``: found, not running, and not updated. A session the gateway
        does not list, or a failed probe, never counts as idle."""
        idle_limit = 2 * float(job.payload_timeout_seconds or DEFAULT_PAYLOAD_TIMEOUT_S)
        poll = min(MAX_ACTIVITY_POLL_S, max(1.0, idle_limit / 4))
        last_update: Any = None
        last_progress = time.monotonic()
        while not chat.done():
            await asyncio.sleep(poll)
            session = await self._session(session_key)
            if session is None:
                last_progress = time.monotonic()
                continue
            updated = session.get("updatedAt")
            if session.get("status") == "running" or updated != last_update:
                last_update, last_progress = updated, time.monotonic()
                continue
            idle = time.monotonic() - last_progress
            if idle >= idle_limit:
                chat.cancel()
                raise _Idle(f"Session idle for {idle:.0f}s -- aborted (activity-based timeout)")

    async def _session(self, session_key: str) -> dict[str, Any] | None:
        try:
            sessions = await self.client.sessions_list(activeMinutes=60, limit=200, messageLimit=0)
        except Exception:  # a failed probe is no evidence of idleness
            return None
        for session in sessions:
            key = session.get("key") or session.get("sessionKey")
            if key == session_key:
                return session
        return None


class _Idle(Exception):
    """The gateway showed the session idle past the activity limit."""
