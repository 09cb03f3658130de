"""What a resource pool's name and capacity may be (the CLI's ``pools`` commands check these)."""

from __future__ import annotations

from scheduler.errors import ValidationError

DEFAULT_CAPACITY = 1
# A bound, so that the number is always one SQLite and every report can hold (and a typo like
# 10000000 is caught); far above any machine's useful parallelism.
MAX_CAPACITY = 10_000
MAX_NAME_LENGTH = 128  # the same limit as the job field resource_pool


def check_name(name: str) -> str:
    """A pool name as jobs write it: 1-128 characters, not blank, no control characters."""
    if (not name.strip() or len(name) > MAX_NAME_LENGTH
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)):
        raise ValidationError(
            f"pool name must be 1-{MAX_NAME_LENGTH} printable characters (the job's resource_pool), "
            f"got {name!r}"
        )
    return name


def check_capacity(capacity: int) -> int:
    if not DEFAULT_CAPACITY <= capacity <= MAX_CAPACITY:
        raise ValidationError(
            f"pool capacity must be a whole number from 1 to {MAX_CAPACITY}, got {capacity}"
        )
    return capacity
