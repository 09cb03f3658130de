"""JavaScript string semantics, for text the reference's contract defines in JavaScript terms.

Agents and the gateway depend on the reference's exact text rules: what ``String.trim()`` strips,
what a regex ``\\s`` or ``.`` matches, how many bytes a message is. Prompts
(``strategies/prompt.py``), reply verdicts (``strategies/reply.py``), drain detection
(``gateway/client.py``) and channel chunking (``gateway/channels.py``) share these, so they live
below all of them.
"""

from __future__ import annotations

import re
from typing import Final

# Characters JavaScript's String.prototype.trim() and the regex class \s treat as whitespace.
JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# The same set as the body of a regex character class.
JS_WS_CLASS: Final = (
    r"\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_S: Final = f"[{JS_WS_CLASS}]"
# JavaScript's "." without the s flag: anything but a line terminator.
_JS_DOT: Final = "[^\n\r\u2028\u2029]"


def js_trim(text: str) -> str:
    """``text.trim()`` as JavaScript does it."""
    return text.strip(JS_WHITESPACE)


def js_regex(source: str) -> re.Pattern[str]:
    """A case-insensitive JavaScript regex (no ``u`` flag) as a Python pattern.

    ``\\s`` and ``.*`` are spelled out with JavaScript's character sets; ASCII mode makes ``\\b``,
    ``\\d`` and case folding behave as they do in JavaScript without the ``u`` flag.
    """
    translated = source.replace(r"\s", _JS_S).replace(".*", f"{_JS_DOT}*")
    return re.compile(translated, re.ASCII | re.IGNORECASE)


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a lone surrogate counts 3 bytes instead of failing."""
    return len(text.encode("utf-8", "surrogatepass"))
