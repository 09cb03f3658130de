"""How the CLI speaks: pretty JSON with ``--json``, short tables and lines otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def emit(self, data: Any, human: str | Callable[[], None] | None = None) -> None:
        if self.json_mode or human is None:
            sys.stdout.write(dumps(data) + "\n")
        elif callable(human):
            human()
        else:
            sys.stdout.write(human + "\n")

    def error(self, message: str) -> None:
        line = " ".join(message.split("\n"))
        if self.json_mode:
            sys.stdout.write(json.dumps({"ok": False, "error": line}, indent=2, ensure_ascii=False) + "\n")
        else:
            sys.stderr.write(f"error: {line}\n")


def dumps(data: Any) -> str:
    """Pretty JSON. A list of rows is written one compact row per line: same JSON, and it keeps
    Python's C encoder (any ``indent`` falls back to the pure-Python one, 3x slower on
    ``jobs list`` with 1,000 jobs)."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        rows = ",\n".join("  " + json.dumps(item, ensure_ascii=False, default=str) for item in data)
        return "[\n" + rows + "\n]"
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A plain, aligned text table (what ``console.table`` gives the reference's users)."""
    if not rows:
        sys.stdout.write("(none)\n")
        return
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(widths[i]) for i, col in enumerate(columns))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out.extend("  ".join(r[i].ljust(widths[i]) for i in range(len(columns))).rstrip() for r in cells)
    sys.stdout.write("\n".join(out) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
