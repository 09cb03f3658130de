"""How long the scheduler keeps what it has done: the retention settings, read the same way by
the daemon (config.py, through pydantic) and by ``db check|prune`` (here, without pydantic,
which the CLI cannot afford to import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from scheduler.errors import ConfigError

# (variable, default, lowest, highest): the reference's defaults; 0 days means "no age limit".
RUNS_KEEP_PER_JOB: Final = ("SCHEDULER_RUNS_KEEP_PER_JOB", 100, 1, 1_000_000)
RUNS_KEEP_DAYS: Final = ("SCHEDULER_RUNS_KEEP_DAYS", 0, 0, 36_500)
APPROVALS_KEEP_DAYS: Final = ("SCHEDULER_APPROVALS_KEEP_DAYS", 30, 1, 36_500)

# An artifact directory whose run is gone is removed only once it is this old: a run's files
# and its row are written apart, and an hour is far beyond any gap between the two.
ORPHAN_GRACE_S: Final = 3600


@dataclass(frozen=True)
class RetentionPolicy:
    runs_keep_per_job: int = RUNS_KEEP_PER_JOB[1]
    runs_keep_days: int = RUNS_KEEP_DAYS[1]
    approvals_keep_days: int = APPROVALS_KEEP_DAYS[1]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionPolicy:
        """The policy the environment sets; ConfigError naming the variable for a bad value."""
        env = os.environ if env is None else env
        return cls(*(bounded_int(env, *setting)
                     for setting in (RUNS_KEEP_PER_JOB, RUNS_KEEP_DAYS, APPROVALS_KEEP_DAYS)))


def bounded_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """The whole number ``name`` in ``env`` (``default`` when unset); ConfigError when it is not
    one, or outside ``low``..``high``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value
