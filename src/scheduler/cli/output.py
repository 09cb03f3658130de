"""How the CLI speaks: pretty JSON with ``--json``, short tables and lines otherwise.

Whatever the database or the arguments hold, nothing we print can drive the terminal: human
output escapes control characters (scheduler/text.py), and JSON escapes the few characters its
encoder would otherwise write raw (C1 controls, U+2028/U+2029, lone surrogates).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from scheduler.text import escaped

# Characters json.dumps(ensure_ascii=False) leaves raw that a terminal or a UTF-8 stream does not
# take: DEL, C1 controls, U+2028/U+2029, lone surrogates. In JSON text they can only occur inside
# strings, so a \uXXXX escape keeps the document, and its value, the same.
_RAW_IN_JSON: Final = re.compile(r"[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def emit(self, data: Any, human: str | Callable[[], None] | None = None) -> None:
        if self.json_mode or human is None:
            sys.stdout.write(dumps(data) + "\n")
        elif callable(human):
            human()
        else:
            sys.stdout.write(printable_lines(human) + "\n")

    def error(self, message: str) -> None:
        """One line, whatever the message holds: a line break in it is shown as ``\\n``."""
        line = escaped(message)
        if self.json_mode:
            sys.stdout.write(dumps({"ok": False, "error": line}) + "\n")
        else:
            sys.stderr.write(f"error: {line}\n")


def printable_lines(text: str) -> str:
    """Human output of several lines: each line escaped, the line breaks between them kept."""
    return "\n".join(escaped(line) for line in text.split("\n"))


# One encoder for every row (json.dumps would build the same one per call).
_ROW_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def dumps(data: Any) -> str:
    """Pretty JSON. A list of rows is written one compact row per line: same JSON, and it keeps
    Python's C encoder (any ``indent`` falls back to the pure-Python one, 3x slower on
    ``jobs list`` with 1,000 jobs)."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        encode = _ROW_ENCODER.encode
        rows = ",\n".join("  " + encode(item) for item in data)
        text = "[\n" + rows + "\n]"
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    # Two fast C scans spare plain text the regex (on 1,000 jobs it takes 60% of json.dumps).
    if text.isascii() and "\x7f" not in text:
        return text
    return _RAW_IN_JSON.sub(_json_escape, text)


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
    text = escaped(str(value))
    return text if len(text) <= 60 else text[:57] + "..."
