"""The named values of the scheduler's tables: statuses, kinds and policies, as ``StrEnum``s.

The values are the reference's strings (features.md §2, §5, §7, §9, §14), so a member compares
equal to the text the database holds (``RunStatus.OK == "ok"``) and JSON-encodes as that text.
Only the standard library is imported: the CLI, the store and the engine may all use this module.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# -- jobs --------------------------------------------------------------------------------------


class ScheduleKind(StrEnum):
    CRON = "cron"
    AT = "at"


class SessionTarget(StrEnum):
    MAIN = "main"
    ISOLATED = "isolated"
    SHELL = "shell"


class PayloadKind(StrEnum):
    SYSTEM_EVENT = "systemEvent"
    AGENT_TURN = "agentTurn"
    SHELL_COMMAND = "shellCommand"


class JobType(StrEnum):
    STANDARD = "standard"
    WATCHDOG = "watchdog"


class JobClass(StrEnum):
    STANDARD = "standard"
    PRE_COMPACTION_FLUSH = "pre_compaction_flush"


class ExecutionIntent(StrEnum):
    EXECUTE = "execute"
    PLAN = "plan"


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    ALLOW = "allow"
    QUEUE = "queue"


class DeliveryMode(StrEnum):
    ANNOUNCE = "announce"
    ANNOUNCE_ALWAYS = "announce-always"
    NONE = "none"


class DeliveryGuarantee(StrEnum):
    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"


class TriggerOn(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    COMPLETE = "complete"


class PayloadScope(StrEnum):
    OWN = "own"
    GLOBAL = "global"


class ApprovalAuto(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ContextRetrieval(StrEnum):
    NONE = "none"
    RECENT = "recent"
    HYBRID = "hybrid"


# -- v0.2 identity, trust and contracts (features.md §10) ------------------------------------------


class IdentitySubjectKind(StrEnum):
    AGENT = "agent"
    SERVICE = "service"
    WORKLOAD = "workload"
    USER = "user"
    COMPOSITE = "composite"
    DELEGATED_AGENT = "delegated-agent"
    UNKNOWN = "unknown"


class TrustLevel(StrEnum):
    UNTRUSTED = "untrusted"
    RESTRICTED = "restricted"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"


class DelegationMode(StrEnum):
    NONE = "none"
    ON_BEHALF_OF = "on-behalf-of"
    IMPERSONATION = "impersonation"


class TrustEnforcement(StrEnum):
    NONE = "none"
    WARN = "warn"
    BLOCK = "block"
    ADVISORY = "advisory"
    STRICT = "strict"


class ChildCredentialPolicy(StrEnum):
    NONE = "none"
    INHERIT = "inherit"
    DOWNSCOPE = "downscope"
    INDEPENDENT = "independent"


# -- runs, the dispatch queue, approvals, the ledger, messages, agents ------------------------------


class RunStatus(StrEnum):
    PENDING = "pending"  # in the reference's vocabulary, never written
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


class DispatchKind(StrEnum):
    MANUAL = "manual"
    CHAIN = "chain"
    RETRY = "retry"
    # Ours: a scheduled occurrence held by an approval gate waits as a queue row of its kind.
    CRON = "cron"
    AT = "at"


class DispatchStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    AWAITING_APPROVAL = "awaiting_approval"
    DONE = "done"
    CANCELLED = "cancelled"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    DISPATCHED = "dispatched"


class LedgerStatus(StrEnum):
    """An idempotency key's state in ``idempotency_ledger``."""

    CLAIMED = "claimed"
    RELEASED = "released"


class MessageStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    READ = "read"
    EXPIRED = "expired"
    FAILED = "failed"


class MessageKind(StrEnum):
    TEXT = "text"
    TASK = "task"
    RESULT = "result"
    STATUS = "status"
    SYSTEM = "system"
    SPAWN = "spawn"
    DECISION = "decision"
    CONSTRAINT = "constraint"
    FACT = "fact"
    PREFERENCE = "preference"


class AgentStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"


# -- sets the code asks about --------------------------------------------------------------------

# The delivery modes that announce a run's result (and so need a delivery target).
ANNOUNCE_MODES: Final = frozenset({DeliveryMode.ANNOUNCE, DeliveryMode.ANNOUNCE_ALWAYS})
# Run endings that count as failures: retries, consecutive_errors, "failure" children.
FAILED_RUN_STATUSES: Final = frozenset({RunStatus.ERROR, RunStatus.TIMEOUT})
# Dispatch rows still waiting to run (they count against max_queued_dispatches).
LIVE_DISPATCH_STATUSES: Final = frozenset(
    {DispatchStatus.PENDING, DispatchStatus.CLAIMED, DispatchStatus.AWAITING_APPROVAL}
)


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The enum's values as plain strings, in declaration order (for messages and schemas)."""
    return tuple(member.value for member in enum)


# -- sub-agent dispatch (features.md §15.1) ----------------------------------------------------


class SubagentStatus(StrEnum):
    """A dispatch label's state in ``dispatch_labels`` (the reference's ``labels.json`` values)."""

    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    SPAWN_WARNING = "spawn-warning"
    # Ours: an operator or the watchdog ended it; the reference had no word for it.
    CANCELLED = "cancelled"


class SubagentMode(StrEnum):
    FRESH = "fresh"
    REUSE = "reuse"
