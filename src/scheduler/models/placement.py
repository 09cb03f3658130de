"""Where a job may run across a fleet of daemons, and what each daemon serves.

A job's ``placement`` is ``None`` (any instance), ``host:<name>`` (the instances whose host name
is ``<name>``) or ``label:<label>`` (the instances that carry the label). A daemon's host name
is ``SCHEDULER_HOST_NAME`` (default: the machine's host name) and its labels are
``SCHEDULER_INSTANCE_LABELS``; a daemon claims only work whose placement it serves.

The names are plain tokens (letters, digits, ``_``, ``.``, ``-``), so that a placement is one
unambiguous string the store can compare with ``=``. Standard library only: the CLI imports this
to validate ``jobs add`` and to print ``status``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.text import quoted

HOST_PREFIX: Final = "host:"
LABEL_PREFIX: Final = "label:"
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]+")
MAX_HOST_LENGTH: Final = 253  # a DNS name
MAX_LABEL_LENGTH: Final = 64
MAX_LABELS: Final = 32
MAX_PLACEMENT_LENGTH: Final = len(HOST_PREFIX) + MAX_HOST_LENGTH

# The lease setting as the CLI reads it (config.py reads the same variable through pydantic):
# (variable, default, lowest, highest). An instance is live while it beat within this.
LEASE_S: Final = ("SCHEDULER_LEASE_S", 30, 5, 3600)
# Instances stopped, or silent, for longer than this are removed by the retention pass.
INSTANCE_KEEP_DAYS: Final = 7

_SYNTAX: Final = (
    'placement must be "host:<name>" or "label:<label>" (letters, digits, "_", ".", "-"), '
    "or null for any instance"
)


def _is_name(text: str, max_length: int) -> bool:
    return 0 < len(text) <= max_length and NAME_PATTERN.fullmatch(text) is not None


def check_placement(value: str) -> str:
    """The placement as stored; ValidationError (one line) for anything but the two forms."""
    for prefix, limit in ((HOST_PREFIX, MAX_HOST_LENGTH), (LABEL_PREFIX, MAX_LABEL_LENGTH)):
        if value.startswith(prefix) and _is_name(value[len(prefix):], limit):
            return value
    raise ValidationError(f"{_SYNTAX}; got {quoted(value)}")


def served_placements(host: str, labels: Iterable[str]) -> list[str]:
    """The placements an instance with this host name and these labels serves (besides none)."""
    return [HOST_PREFIX + host, *(LABEL_PREFIX + label for label in labels)]


def serves(placement: str | None, host: str, labels: Iterable[str]) -> bool:
    """Whether an instance with ``host`` and ``labels`` may run a job placed at ``placement``."""
    return not placement or placement in served_placements(host, labels)


def live_servers(placement: str | None, instances: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The live instances (rows of ``Store.list_instances``) that serve ``placement``."""
    return [i for i in instances
            if i["live"] and serves(placement, str(i["host"]), i.get("labels") or ())]


def parse_labels(text: str) -> tuple[str, ...]:
    """A comma list of labels, in order, without repeats; ValueError saying what is wrong."""
    labels = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for label in labels:
        if not _is_name(label, MAX_LABEL_LENGTH):
            raise ValueError(f"label {label!r} must be 1-{MAX_LABEL_LENGTH} letters, "
                             'digits, "_", "." or "-"')
    return labels


def check_host_name(text: str) -> str:
    """A host name an instance may go by; ValueError saying what is wrong."""
    name = text.strip()
    if not _is_name(name, MAX_HOST_LENGTH):
        raise ValueError(f"host name {name!r} must be 1-{MAX_HOST_LENGTH} letters, digits, "
                         '"_", "." or "-"')
    return name


def lease_s_from_env(env: Mapping[str, str] | None = None) -> int:
    """``SCHEDULER_LEASE_S`` as the daemon reads it; ConfigError naming it for a bad value."""
    from scheduler.models.retention import bounded_int

    return bounded_int(os.environ if env is None else env, *LEASE_S)


def beat_interval_s(lease_s: int) -> float:
    """How often an instance refreshes its ``last_seen``: three beats per lease, at least 1 s."""
    return float(max(1, lease_s // 3))
