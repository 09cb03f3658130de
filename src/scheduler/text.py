"""Text a person or a terminal will see: what a field may hold, and how to show any string safely.

Two kinds of character never reach a terminal raw from us: control characters (C0, DEL, C1, and
the Unicode line and paragraph separators, which ``str.splitlines`` also breaks on), because they
can rewrite the screen (``ESC [2J``) or split one line into two; and lone surrogates, which are
not text at all (a ``\\ud800`` escape in JSON, or a command-line argument that was not UTF-8) and
cannot be encoded for SQLite or for a UTF-8 stream. :func:`escaped` writes each as a Python-style
escape, so what is printed is one line and says exactly what was given.

Only ``re`` and the error tree are imported: the CLI loads this on every error it prints, and
timeutil, models, service and cli all use it.
"""

from __future__ import annotations

import re
from typing import Final

from scheduler.errors import ValidationError

# Rejected in every text field (the reference's "safe string" rule: tab, LF and CR allowed).
UNSAFE_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Additionally rejected in single-line fields: tab, line breaks, C1 controls, U+2028/U+2029.
LINE_BREAKING: Final = re.compile(r"[\t\n\r\x80-\x9f\u2028\u2029]")
LONE_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")

_NEEDS_ESCAPE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """``text`` with every control character and lone surrogate written as an escape."""
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def quoted(value: object, limit: int = 80) -> str:
    """A user-supplied value for a one-line message: in double quotes, escaped, cut at ``limit``.

    Like ``repr`` for the characters that matter (the quote and the backslash are escaped too, so
    the quoted text reads back unambiguously), but non-ASCII letters stay as they are.
    """
    text = escaped(str(value).replace("\\", "\\\\").replace('"', '\\"'))
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f'"{text}"'


def first_lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (as an escape), or None when it is valid Unicode."""
    match = LONE_SURROGATE.search(text)
    return None if match is None else escaped(match.group())


def checked_line(value: str, name: str, limit: int) -> str:
    """One line of 1-``limit`` printable characters (as a job's single-line text fields)."""
    unprintable = UNSAFE_CONTROLS.search(value) or LINE_BREAKING.search(value)
    if not value.strip() or len(value) > limit or unprintable or first_lone_surrogate(value):
        raise ValidationError(f"{name} must be 1-{limit} printable characters, got {quoted(value)}")
    return value
