"""The completion-text normaliser (models/completion.py) and the retry classifiers (dispatch_retry.py).

The exact texts are the reference's own expectations (its test.js, "completion helper" cases).
"""

from __future__ import annotations

import json

import pytest

from scheduler.models import completion, dispatch_retry
from scheduler.models.completion import (
    MAX_CHARS,
    MAX_INPUT_CHARS,
    MAX_SENTENCES,
    NO_SESSION_TEXT,
    NO_SIGNAL_TEXT,
    normalize_completion,
)

FIXED_LEAD_READ = (
    "Final completion updates now start with a short plain-English summary. That makes the result "
    "easier to read without hiding the useful detail. Future runs should show the clean summary "
    "first, with technical details underneath when needed.")
FIXED_LEAD_SCAN = FIXED_LEAD_READ.replace("easier to read", "easier to scan")


def test_a_human_summary_passes_through_unchanged() -> None:
    text = ("Updated the completion watcher so structured summaries survive handoff and users now "
            "get one clean final report.")
    assert normalize_completion(text) == text


def test_a_commit_style_summary_gets_the_plain_english_lead() -> None:
    raw = ("fix(dispatch): normalize completion delivery; add watcher tests; "
           "preserve structured completion summary")
    assert normalize_completion(raw) == FIXED_LEAD_READ


def test_a_file_path_lead_is_rewritten_without_filenames_or_internal_names() -> None:
    raw = ("dispatch/completion.mjs: make summary_human win over deliveryText; move details_technical "
           "into a separate block; add focused tests for payload-precedence regressions")
    text = normalize_completion(raw)
    assert text == FIXED_LEAD_SCAN
    for leak in ("completion.mjs", "summary_human", "deliveryText", "details_technical",
                 "payload-precedence"):
        assert leak not in text


@pytest.mark.parametrize(("raw", "expected"), [
    ("feat(cli): add --json flag to jobs list; update docs",
     "Updated docs. That makes the new behavior available without extra follow-up. "
     "Future runs should use it automatically."),
    ("test: add coverage for cron parser",
     "Added coverage for cron parser. That makes the behavior easier to trust. "
     "Future regressions should get caught quickly."),
    ("fix: retry on 529 in the gateway client",
     "Retry on 529 in the gateway client. That should make the workflow more reliable. "
     "Future runs should be less likely to hit the same problem."),
])
def test_other_commit_styles_are_humanised(raw: str, expected: str) -> None:
    assert normalize_completion(raw) == expected


def test_a_json_done_payload_is_reduced_to_its_summary() -> None:
    reply = json.dumps({"ok": True, "label": "job", "status": "done",
                        "summary": "Scanner found two real deals and filtered out ammo false positives.",
                        "message": "Label marked done via agent signal."})
    text = normalize_completion(reply)
    assert text == "Scanner found two real deals and filtered out ammo false positives."


def test_nested_and_trailing_json_give_their_human_field() -> None:
    assert normalize_completion('{"result":{"text":"Nested human text is here."}}') \
        == "Nested human text is here."
    assert normalize_completion('{"summary": "The report was sent to the team."}') \
        == "The report was sent to the team."


def test_overlong_prose_keeps_the_opening_and_at_most_five_sentences() -> None:
    reply = " ".join(f"Sentence {i} explains part {i} of the fix in plain language." for i in range(1, 9))
    text = normalize_completion(reply)
    assert text.startswith("Sentence 1 explains part 1")
    assert "Sentence 5 explains" in text
    assert "Sentence 6" not in text
    assert text.count(".") == MAX_SENTENCES


def test_one_huge_sentence_is_cut_to_the_character_limit() -> None:
    text = normalize_completion("word " * 5000)
    assert len(text) == MAX_CHARS
    assert text.endswith(completion.ELLIPSIS)


def test_a_list_keeps_its_heading_and_three_items() -> None:
    text = normalize_completion("Results:\n- one\n- two\n- three\n- four\n- five")
    assert text == "Results. Highlights: one; two; three."


def test_stack_traces_code_fences_and_colours_are_dropped() -> None:
    assert normalize_completion(
        "Fixed the flaky login. Users can sign in again.\n    at Object.<anonymous> (/x.js:1:2)\n"
        "    at Module._compile (node:internal)") == "Fixed the flaky login. Users can sign in again."
    assert normalize_completion('```json\n{"a": 1}\n```\nAll migrations applied cleanly.') \
        == "All migrations applied cleanly."
    assert normalize_completion("\x1b[31mBuild\x1b[0m finished and the release is live.") \
        == "Build finished and the release is live."
    assert normalize_completion(
        'Traceback (most recent call last):\n  File "x.py", line 3, in <module>\n'
        "The import job finished after one retry.") == "The import job finished after one retry."


@pytest.mark.parametrize("reply", ["Done.", "ok", "Hi.", "completed (agent signal)", "thanks!", "",
                                   "   \n\t ", "{}", "[]", "```\n```",
                                   ])
def test_nothing_meaningful_gives_an_empty_text(reply: str) -> None:
    assert normalize_completion(reply) == ""


@pytest.mark.parametrize(("reply", "expected"), [
    ("Auto-resolved: session went idle without calling done", NO_SIGNAL_TEXT),
    ("session not found in gateway store", NO_SESSION_TEXT),
    ("Session never found -- spawn likely failed", NO_SESSION_TEXT),
    ("Label marked done via agent signal.", completion.TRANSPORT_ONLY_TEXT),
])
def test_internal_transport_status_becomes_a_human_explanation(reply: str, expected: str) -> None:
    text = normalize_completion(reply)
    assert text == expected
    assert reply.lower() not in text.lower()


def test_a_long_human_summary_that_mentions_an_internal_phrase_is_kept() -> None:
    text = ("I checked why the nightly report was missing: the log said session not found in gateway "
            "store, so I restarted the job and the report arrived at 06:10 as expected.")
    assert normalize_completion(text) == text


def test_unicode_is_kept() -> None:
    text = "Die Übersetzung ist fertig — 日本語 version included 🎉."
    assert normalize_completion(text) == text


def test_only_the_first_64_kib_are_read() -> None:
    head = "The backup finished and was verified."
    tail = "x" * (MAX_INPUT_CHARS * 4) + " SECRET-TAIL"
    text = normalize_completion(head + "\n" + tail)
    assert text.startswith("The backup finished")
    assert "SECRET-TAIL" not in text
    assert len(text) <= MAX_CHARS


@pytest.mark.parametrize("unit", ["[", "[a](", "a/", " at x\n", "`", "**a", "{", "."])
def test_hostile_repetitions_give_a_bounded_text(unit: str) -> None:
    # Each once took minutes (a backtracking pattern) or failed (JSON nested past the recursion limit).
    text = normalize_completion(unit * (MAX_INPUT_CHARS // len(unit) + 10))
    assert len(text) <= MAX_CHARS


# -- retry classifiers ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "HTTP 529", "FailoverError: all models failed", "failover error", "Overloaded",
    "The service is temporarily overloaded", "Service Unavailable: service is currently overloaded",
    "anthropic overload_error",
])
def test_overload_errors_are_recognised(text: str) -> None:
    assert dispatch_retry.is_overload_error(text)


@pytest.mark.parametrize("text", [None, "", "HTTP 500 internal error", "timeout after 300s",
                                  "session not found in gateway store"])
def test_other_errors_are_not_overloads(text: str | None) -> None:
    assert not dispatch_retry.is_overload_error(text)


def test_the_overload_marker_is_looked_for_only_near_the_start() -> None:
    text = "x" * dispatch_retry.MAX_CLASSIFIED_CHARS + " 529"
    assert not dispatch_retry.is_overload_error(text)


@pytest.mark.parametrize("text", [
    "Session not found in sessions store", "session not found in gateway store", "session never found",
    "Auto-resolved as done: session not found", "Auto-resolved: session was never found",
])
def test_gateway_restart_kills_are_recognised(text: str) -> None:
    assert dispatch_retry.is_gateway_restart_kill(text)


@pytest.mark.parametrize("text", [None, "", "529 overloaded", "session went idle without calling done"])
def test_other_summaries_are_not_restart_kills(text: str | None) -> None:
    assert not dispatch_retry.is_gateway_restart_kill(text)


def test_the_backoff_grows_by_thirty_seconds_per_retry() -> None:
    assert [dispatch_retry.retry_delay_s(n) for n in (0, 1, 2, 3)] == [30, 30, 60, 90]


def test_the_retry_limits_are_the_references() -> None:
    assert dispatch_retry.MAX_OVERLOAD_RETRIES == 3 and dispatch_retry.MAX_RESTART_RETRIES == 2
    assert [dispatch_retry.may_retry_overload(n) for n in (0, 2, 3)] == [True, True, False]
    assert [dispatch_retry.may_retry_restart_kill(n) for n in (0, 1, 2)] == [True, True, False]
