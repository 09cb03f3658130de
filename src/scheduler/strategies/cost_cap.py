"""``contract_max_cost_usd`` for agent turns: the turn's reported cost against the job's cap.

The cost is read from the chat-completions reply's ``usage``:

* ``usage.cost.total`` (USD): the gateway's own usage record, the shape its session transcript
  carries (``chat.history``: ``usage.cost = {input, output, cacheRead, cacheWrite, total}``);
* ``usage.cost`` as a plain number (USD), for a gateway or proxy that reports it flat.

The real gateway 2026.9.6 puts no cost in the chat-completions reply (only ``prompt_tokens``,
``completion_tokens``, ``total_tokens``): there the cap is recorded as *not checked*, never as
passed. A turn's cost is spent once the reply arrives, so the cap cannot stop it; what it stops is
the run counting as a success: an over-cap turn ends ``error``, its reply stays on the run (the
summary) but is not delivered, and no retry (which would pay again) follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

NOT_REPORTED = "the gateway reported no cost for this turn; contract_max_cost_usd could not be checked"


def reported_cost_usd(usage: dict[str, Any] | None) -> float | None:
    """The turn's cost in USD as the reply reports it, or None when it reports none."""
    if not isinstance(usage, dict):
        return None
    cost = usage.get("cost")
    if isinstance(cost, dict):
        cost = cost.get("total")
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    value = float(cost)
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True)
class CostCheck:
    """The cap's verdict for one turn. ``note`` goes into the run's context_summary."""

    cost_usd: float | None
    cap_usd: float | None
    exceeded: bool

    @property
    def checked(self) -> bool:
        return self.cap_usd is not None and self.cost_usd is not None

    @property
    def note(self) -> dict[str, Any] | None:
        if self.cap_usd is None:
            return None
        if self.cost_usd is None:
            return {"max_usd": self.cap_usd, "checked": False, "reason": NOT_REPORTED}
        return {"max_usd": self.cap_usd, "checked": True, "cost_usd": self.cost_usd,
                "exceeded": self.exceeded}

    @property
    def error_message(self) -> str:
        return (f"Turn cost ${self.cost_usd:g} exceeded contract_max_cost_usd ${self.cap_usd:g}; "
                "the reply is kept on the run but not delivered, and no retry follows")


def check_cost(usage: dict[str, Any] | None, cap: object) -> CostCheck:
    cap_usd = None if isinstance(cap, bool) or not isinstance(cap, int | float) else float(cap)
    cost = reported_cost_usd(usage)
    exceeded = cap_usd is not None and cost is not None and cost > cap_usd
    return CostCheck(cost_usd=cost, cap_usd=cap_usd, exceeded=exceeded)
