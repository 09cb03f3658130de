"""SQL for retrieval context: what the earlier runs of a job produced (strategies/retrieval.py).

A run's output is its stored stdout when it has any (a shell run), else its summary (an agent
run's reply). Runs without output (skipped, refused by the gateway, still running) are not
candidates; neither is the run the prompt is for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.store.sqlite.db import Database

if TYPE_CHECKING:
    from scheduler.store.api import PriorOutput

# Space, tab, newline and carriage return, as raw characters in the literal: SQLite's char()
# and PostgreSQL's chr() differ, a literal is the same for both.
_BLANK = "' \t\n\r'"
_OUTPUT = (f"CASE WHEN trim(COALESCE(shell_stdout, ''), {_BLANK}) <> '' THEN shell_stdout "
           "ELSE summary END")


def prior_outputs(db: Database, job_id: str, exclude_run_id: str, limit: int,
                  max_chars: int) -> list[PriorOutput]:
    from scheduler.store.api import PriorOutput

    rows = db.query(
        f"SELECT id, started_at, status, shell_stdout_path, substr({_OUTPUT}, 1, ?) AS output "
        "FROM runs WHERE job_id = ? AND id <> ? "
        f"AND trim(COALESCE({_OUTPUT}, ''), {_BLANK}) <> '' "
        "ORDER BY started_at DESC, rowid DESC LIMIT ?",
        (max_chars, job_id, exclude_run_id, limit),
    )
    return [PriorOutput(run_id=str(row["id"]), started_at=str(row["started_at"] or ""),
                        status=str(row["status"] or ""), output=str(row["output"]),
                        stdout_path=row["shell_stdout_path"] or None)
            for row in rows]
