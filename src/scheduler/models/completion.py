"""Completion text for chat: what a sub-agent's final report becomes before anyone reads it.

A dispatched sub-agent ends with free text: sometimes a clear human summary, often a JSON done
payload, a commit-style one-liner (``fix(x): a; b; c``), a long essay, a markdown list, or only
internal transport status ("session not found in gateway store"). ``normalize_completion`` turns
any of these into a short chat message, following the reference's ``dispatch/completion.mjs``:

- at most ``MAX_SENTENCES`` sentences and ``MAX_CHARS`` characters, at most ``MAX_LIST_ITEMS``
  list items (as one "Highlights: a; b; c." sentence);
- JSON payloads are reduced to their human field (``deliveryText``, ``summary``, ``body``, ...),
  stack-trace lines, code fences, ANSI colours and markdown markup are dropped;
- commit-style technical summaries get a fixed plain-English lead;
- text that is only internal transport status becomes a human explanation; text with nothing
  meaningful ("Done.", "ok", "Hi.") becomes ``""`` (the caller sends nothing).

Only the first ``MAX_INPUT_CHARS`` characters are read: a runaway transcript costs bounded work.
Pure: no I/O, so the ledger, the watcher and the event emitter can all call it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

MAX_SENTENCES: Final = 5
MAX_CHARS: Final = 700
MAX_LIST_ITEMS: Final = 3
MAX_INPUT_CHARS: Final = 64 * 1024
# JSON nesting followed when looking for a human field (the reference's depth and array width).
_MAX_JSON_DEPTH: Final = 4
_MAX_JSON_ITEMS: Final = 6
ELLIPSIS: Final = "…"

_I = re.IGNORECASE
_GENERIC_RE = re.compile(
    r"^(?:completed(?:\s*\([^\n)]*\))?|done|ok|okay|success|successful|complete|all set|none|n/?a)"
    r"[.!?]*$", _I)
_CHATTER_RE = re.compile(
    r"^(?:hi|hello|hey|yo|sup|thanks|thank you|cool|nice|sure|yep|yeah|k|kk|roger|copy that)[.!?]*$", _I)
_DONE_PAYLOAD_RE = re.compile(
    r'"message"\s*:\s*"Label marked done via agent signal\."|"status"\s*:\s*"done"', _I)
_DONE_MESSAGE_RE = re.compile(r"^label marked done via agent signal\.[!?]*$", _I)
_TRANSPORT_PREFIX_RE = re.compile(r"^auto-resolved(?:\s+as\s+[a-z-]+)?\s*:", _I)
_TRANSPORT_PATTERNS: Final = tuple(re.compile(p, _I) for p in (
    r"^session not found in gateway store[.!?]*$",
    r"^session not found in sessions store[.!?]*$",
    r"^session never found(?:\s+--\s+spawn likely failed)?[.!?]*$",
    r"^the delivery watcher stopped before the task reached a terminal state[.!?]*$",
    r"^session went idle without calling done(?:\.\s*work may be incomplete\.)?(?:\s*\([^)]*\))?[.!?]*$",
))
_PAYLOAD_MARKERS_RE = re.compile(
    r'"(?:ok|status|label|sessionKey|idempotencyKey|deliveryText|summary|message|checklist|stdout|'
    r'stderr|tool|args|result|content)"\s*:', _I)
_STACK_LINE_RE = re.compile(r"^\s*at\s+\S+")
# Python and other runtimes' traces, which the reference (a Node program) did not meet.
_PY_TRACE_RE = re.compile(r'^(?:Traceback \(most recent call last\):|File ".*", line \d+)')
_COMMIT_PREFIX_RE = re.compile(
    r"^(?:fix|feat|feature|chore|refactor|perf|docs|test|tests|build|ci|style|revert|hotfix)"
    r"(?:\([^)]+\))?!?:\s*", _I)
_EXT = r"(?:[cm]?[jt]sx?|json|md|py|sh|sql|ya?ml|toml)"
_FILE_PREFIX_RE = re.compile(rf"^(?:(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+\.{_EXT}):\s*", _I)
_CODEISH_RE = re.compile(
    r"(?:`[^`]+`|--[a-z0-9-]+|\b[A-Z_]{3,}\b|\b[a-z0-9_]+\(\)|\b[a-z]+[A-Z][A-Za-z0-9_]+\b|"
    rf"\b(?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+\b|\b[A-Za-z0-9_.-]+\.{_EXT}\b)")
_HUMAN_CUE_RE = re.compile(
    r"\b(?:now|so that|so\b|because|this\b|future runs?|expect|easier|readable|reliable|cleaner|people|"
    r"users?|operators?|chat|helps?|lets?|allows?|prevents?|stops?|keeps?|avoids?)\b", _I)
_PEOPLE_RE = re.compile(r"\b(?:people|users?|operators?)\b", _I)
_BENEFIT_RE = re.compile(r"\b(?:now|because|so that|helps?|prevents?|avoids?|keeps?|lets?|allows?)\b", _I)
_INTERNAL_NAMES_RE = re.compile(
    r"\b(?:summary_human|deliveryText|details_technical|sessionKey|idempotencyKey)\b")
_TECHNICAL_KEYWORD_RE = re.compile(r"\b(?:" + "|".join((
    "api", "artifact", "assert", "build", "checklist", "cli", "commit", "completion", "config", "context",
    "cron", "db", "delivery", "dispatch", "gateway", "guard", "hook", "json", "job", "label", "lint",
    "message", "metadata", "notify", "output", "path", "payload", "pipeline", "post-office", "queue",
    "raw", "regex", "report", "retry", "scheduler", "session", "sha", "shell", "spec", "sql", "stderr",
    "stdout", "structured", "summary", "sync", "test", "tests", "tool", "transcript", "transport",
    "typecheck", "watcher", "webhook", "workflow")) + r")\b", _I)
_RELIABILITY_RE = re.compile(
    r"\b(?:fix|guard|retry|timeout|error|fail|stuck|prevent|avoid|dedupe|deduplicat|preserve|ensure|"
    r"handle|recover|reliab)\b", _I)
_TEST_FRAGMENT_RE = re.compile(
    r"\b(?:test|tests|spec|coverage|lint|typecheck|tsc|eslint|oxlint|assert(?:ion)?s?)\b", _I)
_NOT_TEST_ONLY_RE = re.compile(
    r"\b(?:human(?:-|\s)?readable|summary|summaries|message|report|chat|duplicate|user-facing)\b", _I)
_ITEM_RE = re.compile(r"^(?:[-*•]\s+|\d+[.)]\s+|#\d+\b)")
_FENCED_RE = re.compile(r"^[ \t]*```[^\n]*\n.*?^[ \t]*```[^\n]*$", re.M | re.S)
_ANSI_RE = re.compile("\x1b\\[[0-9;]*m")
_SENTENCE_RE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_FRAGMENT_SPLIT_RE = re.compile(r"\s*;\s*|\s+\|\s+|\s+&&\s+|\s+->\s+|\s+=>\s+")
_PREFERRED_KEYS: Final = ("deliveryText", "summary", "body", "text", "content", "message", "stdout", "stderr")
_NESTED_KEYS: Final = ("completion", "result", "response", "data", "payload")

NO_SIGNAL_TEXT: Final = ("The session ended without a final completion signal, "
                         "so no reliable final report is available.")
NO_SESSION_TEXT: Final = ("The session ended before a final report could be retrieved, "
                          "so there is no user-facing completion message to deliver.")
TRANSPORT_ONLY_TEXT: Final = ("The session completed with internal transport status only "
                              "and no user-facing completion report.")


def normalize_completion(text: str) -> str:
    """The chat-ready form of a completion text; ``""`` when nothing in it is worth sending."""
    raw = _strip(text[:MAX_INPUT_CHARS])
    if not raw:
        return ""
    humanized = humanize_completion(raw)
    if humanized and not is_internal_noise(humanized):
        return humanized
    if is_internal_noise(raw):
        return internal_noise_explanation(raw)
    return ""


def humanize_completion(text: str) -> str | None:
    """The summary of ``text``, rewritten in plain English when it reads like a commit message."""
    raw = _strip(text[:MAX_INPUT_CHARS])
    if not raw:
        return None
    summarized = summarize_completion(raw)
    if not summarized:
        return None
    if not looks_technical(_without_traces(raw), summarized):
        return summarized
    return _humanized_technical_summary(raw, summarized) or summarized


def summarize_completion(text: str, *, skip_embedded_json: bool = False) -> str | None:
    """``text`` shortened to the limits, or ``None`` when it holds only noise or chatter."""
    raw = _strip(text[:MAX_INPUT_CHARS])
    if not raw:
        return None
    if not skip_embedded_json:
        parsed = _embedded_json(raw)
        if parsed is not None:
            for candidate in _json_text_candidates(parsed):
                summarized = summarize_completion(candidate, skip_embedded_json=True)
                if summarized:
                    return summarized
    if _looks_like_raw_payload(raw):
        return None
    lines = _prepare_lines(raw)
    structured = (len(lines) >= 4 or any("|" in line for line in lines)
                  or sum(1 for line in lines if _ITEM_RE.match(line)) >= 2)
    if structured:
        summary = _summarize_structured(lines)
        if summary and not _is_generic(summary):
            return summary
    return _summarize_prose(lines)


def is_internal_noise(text: str) -> bool:
    """Whether ``text`` is the dispatcher's own transport status rather than a report."""
    normalized = re.sub(r"\s+", " ", text[:MAX_INPUT_CHARS]).strip()
    if not normalized:
        return False
    if _TRANSPORT_PREFIX_RE.search(normalized) or _DONE_PAYLOAD_RE.search(normalized):
        return True
    if _DONE_MESSAGE_RE.search(normalized):
        return True
    return any(p.search(normalized) for p in _TRANSPORT_PATTERNS)


def internal_noise_explanation(text: str) -> str:
    """What a person is told instead of an internal status string (never the string itself)."""
    lowered = text[:MAX_INPUT_CHARS].lower()
    if "session went idle without calling done" in lowered:
        return NO_SIGNAL_TEXT
    if "session not found" in lowered or "session never found" in lowered:
        return NO_SESSION_TEXT
    return TRANSPORT_ONLY_TEXT


# -- text helpers ---------------------------------------------------------------------------------

def _strip(text: str | None) -> str | None:
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    return stripped or None


def _clean_markdown(text: str) -> str:
    text = _ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    # A fenced block is code or a dump, never part of the report (the reference kept its content).
    text = _FENCED_RE.sub("\n", text)
    # The link and code patterns exclude their own openers, so a run of "[" costs linear time.
    text = re.sub(r"\[([^\[\]\n]+)\]\(([^()\n]+)\)", r"\1", text)
    text = re.sub(r"`([^`\n]+)`", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"__([^_]+)__", r"\1", text)
    text = re.sub(r"^#{1,6}\s+", "", text, flags=re.M)
    return re.sub(r"^>\s?", "", text, flags=re.M)


def _keep_line(line: str) -> bool:
    if not line or line.startswith("```") or re.fullmatch(r"[`~=_-]{3,}", line):
        return False
    if all(char in "{}[]," for char in line):
        return False
    return not (_STACK_LINE_RE.match(line) or _PY_TRACE_RE.match(line))


def _without_traces(text: str) -> str:
    """``text`` without stack-trace lines, whose file names would make any report look technical."""
    def is_trace(line: str) -> bool:
        return bool(_STACK_LINE_RE.match(line) or _PY_TRACE_RE.match(line.strip()))

    return "\n".join(line for line in text.split("\n") if not is_trace(line))


def _prepare_lines(text: str) -> list[str]:
    lines = (re.sub(r"\s+", " ", line).strip() for line in _clean_markdown(text).split("\n"))
    return [line for line in lines if _keep_line(line)]


def _truncate(text: str | None, max_chars: int = MAX_CHARS) -> str | None:
    normalized = _strip(text)
    if not normalized:
        return None
    if len(normalized) <= max_chars:
        return normalized
    return normalized[:max(0, max_chars - 1)].rstrip() + ELLIPSIS


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_RE.findall(text) if part.strip()]


def _as_sentence(text: str | None) -> str | None:
    normalized = _strip(text)
    if not normalized:
        return None
    if normalized[-1] in ".!?":
        return normalized
    # "Results:" becomes "Results." rather than the reference's "Results:.".
    body = normalized.rstrip(":;, ")
    return body + "." if body else None


def _shorten_fragment(text: str, max_chars: int = 110) -> str | None:
    cleaned = re.sub(r"\bhttps?://\S+", "", _clean_markdown(text), flags=_I)
    return _truncate(re.sub(r"\s+", " ", cleaned).strip(), max_chars)


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _is_generic(text: str) -> bool:
    normalized = re.sub(r"\s+", " ", text.lower()).strip()
    return not normalized or bool(_GENERIC_RE.match(normalized) or _CHATTER_RE.match(normalized))


def _looks_like_raw_payload(text: str) -> bool:
    if _DONE_PAYLOAD_RE.search(text) or is_internal_noise(text):
        return True
    return text[:1] in "[{" and bool(_PAYLOAD_MARKERS_RE.search(text))


# -- JSON payloads --------------------------------------------------------------------------------

def _embedded_json(text: str) -> Any:
    """The JSON value the text is, ends with (after a newline) or starts at its first brace."""
    candidates = [text]
    newline_brace = text.rfind("\n{")
    if newline_brace >= 0:
        candidates.append(text[newline_brace + 1:])
    first_brace = text.find("{")
    if first_brace > 0:
        candidates.append(text[first_brace:])
    seen: set[str] = set()
    for candidate in candidates:
        trimmed = candidate.strip()
        if not trimmed or trimmed in seen:
            continue
        seen.add(trimmed)
        try:
            return json.loads(trimmed)
        except (ValueError, RecursionError):
            continue
    return None


def _json_text_candidates(value: Any) -> list[str]:
    """The strings of a JSON value, the human fields first (``deliveryText``, ``summary``...)."""
    out: list[str] = []
    _gather(value, 0, out, set())
    return out


def _gather(value: Any, depth: int, out: list[str], seen: set[str]) -> None:
    if depth > _MAX_JSON_DEPTH or value is None:
        return
    if isinstance(value, str):
        text = _strip(value)
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    elif isinstance(value, list):
        for item in value[:_MAX_JSON_ITEMS]:
            _gather(item, depth + 1, out, seen)
    elif isinstance(value, dict):
        for key in (*_PREFERRED_KEYS, *_NESTED_KEYS):
            if key in value:
                _gather(value[key], depth + 1, out, seen)
        for key, nested in value.items():
            if key not in _PREFERRED_KEYS and key not in _NESTED_KEYS:
                _gather(nested, depth + 1, out, seen)


# -- shortening -----------------------------------------------------------------------------------

def _summarize_structured(lines: list[str]) -> str | None:
    """A list or a table: its heading, a little context and the first few items."""
    items = [line for line in lines if _ITEM_RE.match(line)]
    others = [line for line in lines if not _ITEM_RE.match(line)]
    if items:
        highlights = [h for h in (_shorten_fragment(re.sub(r"^[-*•]\s+", "", line))
                                  for line in items[:MAX_LIST_ITEMS]) if h]
        parts = [_as_sentence(others[0]) if others else None,
                 _as_sentence(_truncate(" ".join(others[1:3]), 180))]
        if highlights:
            parts.append(f"Highlights: {'; '.join(highlights)}.")
        return _truncate(" ".join(p for p in parts if p))
    return _as_sentence(_truncate(" ".join(lines[:4]), 260))


def _summarize_prose(lines: list[str]) -> str | None:
    """Prose kept whole when within the limits, else its first sentences that fit."""
    normalized = re.sub(r"\s+", " ", " ".join(lines)).strip()
    if not normalized or _is_generic(normalized):
        return None
    sentences = _sentences(normalized)
    if not sentences:
        return _truncate(normalized)
    if len(normalized) <= MAX_CHARS and len(sentences) <= MAX_SENTENCES:
        return normalized
    kept: list[str] = []
    chars = 0
    for sentence in sentences:
        following = chars + len(sentence) + (1 if kept else 0)
        if len(kept) >= MAX_SENTENCES or following > MAX_CHARS:
            break
        kept.append(sentence)
        chars = following
    return " ".join(kept) if kept else _truncate(normalized)


# -- commit-style summaries -----------------------------------------------------------------------

def looks_technical(raw: str, summarized: str | None = None) -> bool:
    """Whether ``raw`` reads like a commit message or code notes rather than a report to a person."""
    cleaned = re.sub(r"\s+", " ", _clean_markdown(raw)).strip()
    if not cleaned:
        return False
    commit = bool(_COMMIT_PREFIX_RE.match(cleaned))
    file_prefix = bool(_FILE_PREFIX_RE.match(cleaned))
    codeish = bool(_CODEISH_RE.search(cleaned))
    delimiter = bool(re.search(r"[;|]", cleaned) or re.search(r"\n[-*#]", raw))
    technical = (3 * commit + 3 * file_prefix + 2 * codeish + delimiter
                 + min(2, len({m.lower() for m in _TECHNICAL_KEYWORD_RE.findall(cleaned)}))
                 + (2 if _INTERNAL_NAMES_RE.search(cleaned) else 0))
    human = (2 if _HUMAN_CUE_RE.search(cleaned) else 0) + bool(_PEOPLE_RE.search(cleaned)) \
        + bool(_BENEFIT_RE.search(cleaned))
    if summarized and _summarize_prose(_prepare_lines(summarized)) and not commit and not file_prefix:
        human += 1
    if not (commit or file_prefix or codeish or delimiter):
        return technical >= 5 and technical > human + 2
    return technical >= 3 and technical > human + 1


_PHRASES: Final = tuple((re.compile(p, f), r) for p, f, r in (
    (r"\bsummary_human\b", _I, "human summary"),
    (r"\bsummaryHuman\b", 0, "human summary"),
    (r"\bdeliveryText\b", 0, "delivery text"),
    (r"\bdetails_technical\b", _I, "technical details"),
    (r"\bstructured completion summary\b", _I, "the structured summary"),
    (r"\bstructured completion\b(?!\s+summary)", _I, "structured completion data"),
    (r"\bcompletion delivery\b", _I, "how the final completion message is delivered"),
    (r"\bdelivery path\b", _I, "delivery flow"),
    (r"\bwatcher path\b", _I, "completion watcher flow"),
    (r"\bwatcher\b", _I, "completion watcher"),
    (r"\bstdout\b", _I, "command output"),
    (r"\bstderr\b", _I, "error output"),
    (r"\bpayload\b", _I, "result payload"),
    (r"\braw transcript\b", _I, "raw completion text"),
    (r"\bdouble[- ]delivery\b", _I, "duplicate completion messages"),
    (r"\bsummary fallback\b", _I, "fallback summary"),
))

_PAST_TENSE: Final = tuple((re.compile(rf"^{verb}\b", _I), past) for verb, past in (
    ("clean up", "cleaned up"), ("normalize", "cleaned up"), ("humani[sz]e", "made more readable"),
    ("rewrite", "reworked"), ("refactor", "refined"), ("fix", "fixed"), ("update", "updated"),
    ("adjust", "adjusted"), ("change", "updated"), ("improve", "improved"), ("add", "added"),
    ("introduce", "introduced"), ("enable", "enabled"), ("support", "supported"),
    ("preserve", "kept"), ("keep", "kept"), ("retain", "retained"), ("prevent", "prevented"),
    ("avoid", "avoided"), ("stop", "stopped"), ("pass through", "passed through"), ("leave", "left"),
    ("prefer", "preferred"), ("wire", "wired up"), ("route", "routed"), ("surface", "surfaced"),
    ("append", "appended"), ("format", "formatted"), ("teach", "taught"), ("ensure", "ensured"),
    ("dedupe", "deduplicated"),
))


def _humanize_token(match: re.Match[str]) -> str:
    token = match.group(1)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", token.replace("_", " ")).lower()


def _clean_fragment(text: str) -> str | None:
    cleaned = _COMMIT_PREFIX_RE.sub("", _clean_markdown(text), count=1)
    cleaned = _FILE_PREFIX_RE.sub("", cleaned, count=1)
    cleaned = re.sub(rf"\b(?:[A-Za-z0-9_.-]+/)+([A-Za-z0-9_.-]+\.{_EXT})\b", r"\1", cleaned)
    cleaned = re.sub(r"\b([a-z][A-Za-z0-9_]*[A-Z][A-Za-z0-9_]*)\b", _humanize_token, cleaned)
    cleaned = cleaned.replace("()", "")
    cleaned = re.sub(r"^[:\-–—]+\s*", "", cleaned)
    cleaned = re.sub(r"^(?:and|then)\s+", "", cleaned, flags=_I)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    for pattern, replacement in _PHRASES:
        cleaned = pattern.sub(replacement, cleaned)
    cleaned = re.sub(r"\s+,", ",", cleaned)
    cleaned = re.sub(r"\s+\.", ".", cleaned)
    cleaned = re.sub(r"[;,:]+$", "", cleaned).strip()
    return cleaned or None


def _past_tense(fragment: str) -> str | None:
    text = _clean_fragment(fragment)
    if not text:
        return None
    for pattern, replacement in _PAST_TENSE:
        if pattern.search(text):
            text = pattern.sub(replacement, text, count=1)
            break
    text = re.sub(r"\s+", " ", text).strip()
    return _upper_first(text) if text else None


def _is_test_fragment(fragment: str) -> bool:
    return bool(_TEST_FRAGMENT_RE.search(fragment)) and not _NOT_TEST_ONLY_RE.search(fragment)


def _is_plain_english(text: str | None) -> bool:
    if not text or _FILE_PREFIX_RE.match(text) or _CODEISH_RE.search(text):
        return False
    if re.search(r"\b(?:summary(?:_human|Human)?|deliveryText|details_technical|sessionKey|idempotencyKey|"
                 r"payload-precedence|raw summary|watcher path|completion delivery)\b", text, _I):
        return False
    return not looks_technical(text, text)


@dataclass(frozen=True)
class _Themes:
    completion_flow: bool
    duplicates: bool
    context: bool
    reliability: bool
    added: bool
    test_only: bool


def _themes(raw: str, fragments: list[str]) -> _Themes:
    combined = " ".join((_clean_markdown(raw).lower(), " ".join(fragments).lower()))

    def has(pattern: str) -> bool:
        return bool(re.search(pattern, combined))

    return _Themes(
        completion_flow=has(r"\b(?:completion|deliver(?:y|ed)?|notification|message|report|chat|summary|"
                            r"summaries|human(?:-|\s)?readable|plain english|user-facing)\b"),
        duplicates=has(r"\b(?:duplicate|double[- ]delivery|single final|dedupe|deduplicat|one clean)\b"),
        context=has(r"\b(?:structured|context|preserve|kept|retain|survive)\b"),
        reliability=bool(_RELIABILITY_RE.search(combined)),
        added=has(r"\b(?:add|added|introduce|introduced|support|supported|enable|enabled)\b"),
        test_only=bool(fragments) and all(_is_test_fragment(f) for f in fragments),
    )


def _completion_flow_lead(themes: _Themes) -> str:
    """The reference's fixed lead for summaries of work on completion messages themselves."""
    if themes.duplicates:
        sentences = ["Final completion updates now arrive as one clean plain-English summary.",
                     "That makes the result easier to scan and avoids noisy repeat messages."]
    else:
        verb = "read" if themes.context else "scan"
        sentences = ["Final completion updates now start with a short plain-English summary.",
                     f"That makes the result easier to {verb} without hiding the useful detail."]
    sentences.append("Future runs should show the clean summary first, "
                     "with technical details underneath when needed.")
    return " ".join(sentences)


def _action_summary(fragments: Iterable[str], fallback: str, themes: _Themes) -> str:
    chosen = [f for f in (_past_tense(f) for f in fragments) if f and _is_plain_english(f)]
    if len(chosen) == 1:
        return _as_sentence(chosen[0]) or chosen[0]
    if len(chosen) >= 2:
        return f"{chosen[0]} and {_lower_first(chosen[1])}."
    if _is_plain_english(fallback):
        return _as_sentence(fallback) or fallback
    if themes.test_only:
        return "Added focused coverage for the weak spot."
    if themes.reliability:
        return "The requested fix is in place."
    if themes.added:
        return "The requested behavior is now in place."
    return "The update is in place."


def _consequences(themes: _Themes) -> tuple[str, str]:
    if themes.test_only:
        return ("That makes the behavior easier to trust.", "Future regressions should get caught quickly.")
    if themes.reliability:
        return ("That should make the workflow more reliable.",
                "Future runs should be less likely to hit the same problem.")
    if themes.added:
        return ("That makes the new behavior available without extra follow-up.",
                "Future runs should use it automatically.")
    return ("That should make the result easier to work with.",
            "Future runs should reflect the change automatically.")


def _humanized_technical_summary(raw: str, fallback: str) -> str | None:
    fragments = [c for c in (_clean_fragment(f) for line in _prepare_lines(raw)
                             for f in _FRAGMENT_SPLIT_RE.split(line) if f.strip()) if c]
    themes = _themes(raw, fragments)
    if themes.completion_flow:
        return _truncate(_completion_flow_lead(themes))
    primary = [f for f in fragments if not _is_test_fragment(f)] or fragments
    action = _action_summary(primary[:2], fallback, themes)
    return _truncate(" ".join((action, *_consequences(themes))))
