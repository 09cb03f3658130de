"""Errors a user can cause. Each carries a message a person can act on.

The CLI prints ``str(error)`` on one line and exits non-zero; the daemon logs it as an event.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class for every error caused by input, configuration or environment."""

    exit_code = 1


class ValidationError(SchedulerError):
    """A job spec, cron expression, time zone or other input is invalid."""


class NotFoundError(SchedulerError):
    """An id names no job, run or other record."""


class ConfigError(SchedulerError):
    """An environment variable has a value the scheduler cannot use."""

    exit_code = 2


class StoreError(SchedulerError):
    """The database cannot be opened, read or written (locked, full disk, corrupt, read-only)."""


class DaemonLockedError(SchedulerError):
    """Another daemon already serves this database."""

    exit_code = 3
