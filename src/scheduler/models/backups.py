"""What checking a backup file found: the record ``backup verify`` prints and ``restore`` obeys."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackupCheck:
    path: str
    #: Empty when the file is a sound scheduler database: integrity and schema both pass.
    problems: list[str] = field(default_factory=list)
    #: Our schema revision (PRAGMA user_version); 0 for a reference database we never opened.
    revision: int | None = None
    #: The highest reference schema version recorded in ``schema_migrations``.
    reference_version: int | None = None
    jobs: int | None = None
    runs: int | None = None
    size_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "ok": self.ok, "problems": list(self.problems),
                "revision": self.revision, "reference_version": self.reference_version,
                "jobs": self.jobs, "runs": self.runs, "size_bytes": self.size_bytes}
