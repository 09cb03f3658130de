"""Retrieval context: what a job's earlier runs produced, put into its next prompt.

Port of the reference's ``retrieval.js`` (features §9.5) with one deliberate change (§17): the
reference scores and shows the runs' ``context_summary``, which for agent runs is the prompt's
own metadata ("own standard at-most-once ..."), never what the runs produced. Here the text of a
prior run is its *output*: an agent run's reply (``runs.summary``), a shell run's stdout (the
stored column, or the head of its offloaded file when scoring).

``context_retrieval``:

* ``recent``: the newest ``context_retrieval_limit`` runs that produced output;
* ``hybrid``: of the 50 newest such runs, those whose output best matches the job's
  ``payload_message``: TF-IDF over the reference's tokens plus 1.0 when the whole query occurs in
  the output; sorted by score, the best ``limit`` kept, zero scores dropped; nothing matching
  falls back to ``recent``.

The scoring and rendering here are pure functions; :func:`gather` reads the runs through the
store and the offloaded files in a thread, each read bounded.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from scheduler.jstext import JS_WS_CLASS
from scheduler.models.enums import ContextRetrieval
from scheduler.models.fields import MAX_RETRIEVAL_LIMIT
from scheduler.models.records import Job, Run
from scheduler.store.api import PriorOutput
from scheduler.store.thread import StoreThread

DEFAULT_LIMIT: Final = 5
# The reference searches the newest 50 runs of the job.
CANDIDATE_RUNS: Final = 50
# How much of one run's output is scored: of the stored text, or of its offloaded stdout file.
SCORED_TEXT_CHARS: Final = 64 * 1024
# How much of one run's output goes into the prompt, and of all of them together: the reference's
# metadata strings were short; real outputs are not, and a prompt must stay a prompt.
INJECTED_TEXT_CHARS: Final = 2000
INJECTED_TOTAL_CHARS: Final = 32_000
TRUNCATED_SUFFIX: Final = "\n...[truncated]"
HEADER: Final = "--- Prior Run Context ---"
FOOTER: Final = "--- End Prior Run Context ---"

# The reference's stopwords (retrieval.js), word for word.
STOPWORDS: Final = frozenset({
    "the", "a", "an", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had",
    "do", "does", "did", "will", "would", "shall", "should", "may", "might", "must", "can",
    "could", "to", "of", "in", "for", "on", "with", "at", "by", "from", "as", "into", "through",
    "during", "before", "after", "above", "below", "between", "and", "but", "or", "nor", "not",
    "so", "yet", "both", "either", "neither", "each", "every", "all", "any", "few", "more",
    "most", "other", "some", "such", "no", "only", "own", "same", "than", "too", "very", "just",
    "it", "its", "this", "that", "these", "those", "i", "me", "my", "we", "our", "you", "your",
    "he", "him", "his", "she", "her", "they", "them", "their", "what", "which", "who", "whom",
})

_WHITESPACE_RUN: Final = re.compile(f"[{JS_WS_CLASS}]+")
_NOT_WORD: Final = re.compile(r"[^a-z0-9]")


# -- scoring (pure) -------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lower case, split on whitespace, keep only ``[a-z0-9]`` of each piece, drop pieces of one
    character or less and stopwords (the reference's ``tokenize``)."""
    pieces = (_NOT_WORD.sub("", piece) for piece in _WHITESPACE_RUN.split(text.lower()))
    return [token for token in pieces if len(token) > 1 and token not in STOPWORDS]


def term_frequencies(tokens: Sequence[str]) -> dict[str, float]:
    """Each term's count divided by the number of tokens."""
    length = len(tokens) or 1
    return {term: count / length for term, count in Counter(tokens).items()}


def inverse_document_frequencies(documents: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``ln(N / df) + 1`` for every term of the documents (N: the number of documents)."""
    total = len(documents) or 1
    frequency: Counter[str] = Counter()
    for document in documents:
        frequency.update(document.keys())
    return {term: math.log(total / count) + 1 for term, count in frequency.items()}


def tfidf(query_tokens: Sequence[str], document: Mapping[str, float], idf: Mapping[str, float]) -> float:
    """Σ TF × IDF over the query's tokens, a repeated query token counting each time."""
    return sum(document[token] * idf.get(token, 1.0) for token in query_tokens if document.get(token))


def scores(query: str, texts: Sequence[str]) -> list[float]:
    """The hybrid score of each text for ``query``: TF-IDF plus 1.0 for the whole (lower-cased)
    query occurring in the (lower-cased) text."""
    query_tokens = tokenize(query)
    lowered_query = query.lower()
    documents = [term_frequencies(tokenize(text)) for text in texts]
    idf = inverse_document_frequencies(documents)
    return [tfidf(query_tokens, document, idf) + (1.0 if lowered_query in text.lower() else 0.0)
            for document, text in zip(documents, texts, strict=True)]


def best_matches(candidates: Sequence[PriorOutput], query: str | None, limit: int,
                 texts: Sequence[str] | None = None) -> list[PriorOutput]:
    """The reference's ``searchRunSummaries``: with no query, the newest ``limit``; otherwise the
    ``limit`` best scored (ties keep the newer first), then those scoring 0 dropped. ``texts``:
    what to score each candidate on (default: its output)."""
    if not candidates or not query:
        return list(candidates[:limit])
    scored = scores(query, texts if texts is not None else [c.output for c in candidates])
    ranked = sorted(zip(scored, candidates, strict=True), key=lambda pair: -pair[0])
    return [candidate for score, candidate in ranked[:limit] if score > 0]


# -- rendering (pure) -----------------------------------------------------------------------------


def bounded(text: str, limit: int = INJECTED_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED_SUFFIX))] + TRUNCATED_SUFFIX


def render(runs: Sequence[PriorOutput]) -> tuple[str, int]:
    """The ``--- Prior Run Context ---`` block and how many runs it shows ('' and 0 for none).

    One entry per run, ``[<started_at>] <output>``, each output at most INJECTED_TEXT_CHARS;
    runs beyond INJECTED_TOTAL_CHARS in all are left out.
    """
    lines = [HEADER]
    total = 0
    for run in runs:
        entry = f"[{run.started_at or 'unknown'}] {bounded(run.output)}"
        if total and total + len(entry) > INJECTED_TOTAL_CHARS:
            break
        total += len(entry)
        lines.append(entry)
    if len(lines) == 1:
        return "", 0
    lines.append(FOOTER)
    return "\n".join(lines), len(lines) - 2


# -- reading the runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Retrieved:
    text: str  # the block for the prompt ('' when there is nothing to show)
    runs: int  # how many runs it shows


NOTHING: Final = Retrieved("", 0)


def _read_head(path: str, limit_chars: int) -> str | None:
    """At most ``limit_chars`` characters of a file (read as at most 4 bytes each); None when
    it is gone or unreadable (the stored text stands in)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit_chars * 4)
    except OSError:
        return None
    return data.decode("utf-8", "replace")[:limit_chars]


async def _scored_texts(candidates: Sequence[PriorOutput]) -> list[str]:
    """What each candidate is scored on: the head of its offloaded stdout when it has one (the
    stored column holds only an excerpt then), else its stored output. Only the ranking reads
    the files: the prompt shows the stored text."""
    texts = []
    for candidate in candidates:
        text = None
        if candidate.stdout_path:
            text = await asyncio.to_thread(_read_head, candidate.stdout_path, SCORED_TEXT_CHARS)
        texts.append(text if text and text.strip() else candidate.output)
    return texts


def _limit(value: object) -> int:
    """The job's ``context_retrieval_limit`` (validated when written; a row another program
    wrote may hold anything): the default 5 unless it is a whole number in range."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RETRIEVAL_LIMIT:
        return value
    return DEFAULT_LIMIT


async def gather(db: StoreThread, job: Job, run: Run) -> Retrieved:
    """The retrieval block for ``run`` of ``job`` (its ``context_retrieval``; NOTHING for none)."""
    mode = job.row.get("context_retrieval") or ContextRetrieval.NONE
    limit = _limit(job.row.get("context_retrieval_limit"))
    if mode not in (ContextRetrieval.RECENT, ContextRetrieval.HYBRID):
        return NOTHING
    store = db.store
    chosen: list[PriorOutput] = []
    if mode == ContextRetrieval.HYBRID:
        candidates = await db.run(store.prior_outputs, job.id, run.id, CANDIDATE_RUNS, SCORED_TEXT_CHARS)
        texts = await _scored_texts(candidates)
        chosen = best_matches(candidates, job.payload_message, limit, texts)
    if not chosen:
        chosen = await db.run(store.prior_outputs, job.id, run.id, limit, INJECTED_TEXT_CHARS)
    text, count = render(chosen)
    return Retrieved(text, count)
