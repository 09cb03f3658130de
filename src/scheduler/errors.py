"""Errors a user can cause. Each carries a message a person can act on.

The CLI prints ``str(error)`` on one line and exits non-zero; the daemon logs it as an event.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class for every error caused by input, configuration or environment."""

    exit_code = 1


class ValidationError(SchedulerError):
    """A job spec, cron expression, time zone or other input is invalid."""


class UsageError(ValidationError):
    """Arguments out of shape: a missing or extra argument, or one that is not the kind asked
    for (a label with a line break, a note too long). The CLI prints its usage with it."""

    exit_code = 2


class NotFoundError(SchedulerError):
    """An id names no job, run or other record."""


class ConfigError(SchedulerError):
    """An environment variable has a value the scheduler cannot use."""

    exit_code = 2


class StoreError(SchedulerError):
    """The database cannot be opened, read or written (locked, full disk, corrupt, read-only).

    The subclasses say what kind of trouble it is, so the engine can react: wait and retry
    (``StoreBusyError``, ``StoreFullError``), stop (``StoreCorruptError``, ``StoreGoneError``), or
    treat one record as bad (``StoreConstraintError``, ``StoreValueError``).
    """

    #: True when the same operation may succeed later unchanged (a lock released, space freed).
    transient = False


class StoreBusyError(StoreError):
    """Another writer held the database lock past the busy timeout."""

    transient = True


class StoreFullError(StoreError):
    """The disk (or the file system quota) holding the database is full."""

    transient = True


class StoreIOError(StoreError):
    """The operating system failed a read or write of the database file."""

    transient = True


class StoreReadOnlyError(StoreError):
    """The database, its directory or its journal cannot be written by this user."""


class StoreCorruptError(StoreError):
    """The database file is damaged or is not a scheduler database."""

    exit_code = 4


class StoreGoneError(StoreError):
    """The database file the daemon works on was deleted or replaced under it."""

    exit_code = 5


class StoreNewerSchemaError(StoreError):
    """The database was brought to a schema revision newer than this version knows; it is left
    untouched rather than used or migrated by code that does not know what the newer one added."""


class StoreConstraintError(StoreError):
    """A write broke a constraint of the schema (a unique id, a foreign key, a check)."""


class StoreValueError(StoreError):
    """A value cannot be stored at all (an integer beyond 64 bits, a string that is not UTF-8)."""


class DaemonLockedError(SchedulerError):
    """Another daemon already serves this database."""

    exit_code = 3
