"""What every strategy gives back, and the protocol the engine calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from scheduler.store.db import Row


@dataclass(frozen=True)
class Outcome:
    """The end of a run: its status and the run columns to record."""

    status: str
    columns: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    async def execute(self, job: Row, run: Row) -> Outcome: ...
