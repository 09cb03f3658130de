"""Retrieval context (features §9.5): the scorer by hand-computed values, the rendering, and the
daemon putting the prior runs' real outputs into the next prompt, as the fake gateway sees it."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

from conftest import add_job, runs_of, wait_until
from fakegateway import CHAT, FakeGateway
from scheduler.store.api import PriorOutput
from scheduler.strategies.retrieval import (
    FOOTER,
    HEADER,
    INJECTED_TEXT_CHARS,
    INJECTED_TOTAL_CHARS,
    TRUNCATED_SUFFIX,
    best_matches,
    inverse_document_frequencies,
    render,
    scores,
    term_frequencies,
    tfidf,
    tokenize,
)

# -- the scorer, by hand ----------------------------------------------------------------------------


def test_tokenize_lowercases_strips_and_drops_short_tokens_and_stopwords() -> None:
    assert tokenize("Hello, World! x A-1 don't\tTHE\u00a0end") == ["hello", "world", "a1", "dont", "end"]
    assert tokenize("") == []
    assert tokenize("a I !! 9") == []


def test_term_frequency_is_count_over_length() -> None:
    assert term_frequencies(["deploy", "release", "deploy", "notes"]) == {
        "deploy": 0.5, "release": 0.25, "notes": 0.25}
    assert term_frequencies([]) == {}


def test_idf_is_ln_of_n_over_df_plus_one() -> None:
    idf = inverse_document_frequencies([{"a1": 1.0, "b1": 1.0}, {"a1": 1.0}, {"c1": 1.0}])
    assert idf == pytest.approx({"a1": math.log(3 / 2) + 1, "b1": math.log(3) + 1,
                                 "c1": math.log(3) + 1})


def test_hybrid_scores_by_hand() -> None:
    # A: deploy release candidate (1/3 each); B: release notes drafted (1/3 each); N = 2.
    # idf(release) = ln(2/2) + 1 = 1; idf(candidate) = ln(2/1) + 1.
    a, b = scores("release candidate", ["Deploy the release candidate", "release notes drafted"])
    assert a == pytest.approx(1 / 3 * 1 + 1 / 3 * (math.log(2) + 1) + 1.0)  # + whole-query bonus
    assert b == pytest.approx(1 / 3)


def test_a_repeated_query_token_counts_each_time() -> None:
    (once,) = scores("zephyr", ["zephyr wind"])
    (twice,) = scores("zephyr zephyr", ["zephyr wind"])
    assert once == pytest.approx(0.5 * 1 + 1.0)
    assert twice == pytest.approx(2 * 0.5)  # "zephyr zephyr" is not a substring of the text
    assert tfidf(["zephyr", "nope"], {"zephyr": 0.5}, {"zephyr": 2.0}) == pytest.approx(1.0)


def prior(n: int, output: str) -> PriorOutput:
    return PriorOutput(run_id=f"r{n}", started_at=f"2026-01-0{n} 10:00:00", status="ok",
                       output=output, stdout_path=None)


def test_best_matches_sorts_by_score_cuts_at_the_limit_then_drops_zero_scores() -> None:
    newest_first = [prior(4, "nothing here"), prior(3, "weather report"), prior(2, "other"),
                    prior(1, "weather weather")]
    assert [p.run_id for p in best_matches(newest_first, "weather", 2)] == ["r1", "r3"]
    # The cut comes before the zero scores go: of the best three, only two match.
    assert [p.run_id for p in best_matches(newest_first, "weather", 3)] == ["r1", "r3"]
    assert best_matches(newest_first, "absent words", 5) == []
    # Ties keep the newer run first; no query: the newest, unscored.
    tied = [prior(2, "alpha beta"), prior(1, "alpha beta")]
    assert [p.run_id for p in best_matches(tied, "alpha", 2)] == ["r2", "r1"]
    assert [p.run_id for p in best_matches(newest_first, "", 2)] == ["r4", "r3"]


def test_rendering_matches_the_reference_and_bounds_each_output() -> None:
    text, count = render([prior(2, "second"), prior(1, "first")])
    assert text == f"{HEADER}\n[2026-01-02 10:00:00] second\n[2026-01-01 10:00:00] first\n{FOOTER}"
    assert count == 2
    assert render([]) == ("", 0)
    long_text, _ = render([prior(1, "y" * (INJECTED_TEXT_CHARS * 3))])
    entry = long_text.split("\n", 1)[1].rsplit("\n", 1)[0]
    assert entry.endswith(TRUNCATED_SUFFIX)
    assert len(entry) == len("[2026-01-01 10:00:00] ") + INJECTED_TEXT_CHARS
    many, shown = render([prior(1, "z" * INJECTED_TEXT_CHARS)] * 100)
    assert shown < 100 and len(many) <= INJECTED_TOTAL_CHARS + len(HEADER) + len(FOOTER) + shown + 2


# -- end to end: the daemon, the fake gateway --------------------------------------------------------


def agent_spec(**overrides: Any) -> str:
    return json.dumps({"name": "forecaster", "session_target": "isolated",
                       "payload_message": "weather forecast", "run_timeout_ms": 30000,
                       "delivery_mode": "none", "delivery_opt_out_reason": "test", "origin": "system",
                       "delete_after_run": 0,
                       "schedule_cron": "0 0 1 1 *", **overrides})


def gateway_env(gateway: FakeGateway) -> dict[str, str]:
    return {"OPENCLAW_GATEWAY_URL": gateway.url}


def run_once(cli, db_path, db, job_id: str, gateway: FakeGateway) -> str:
    """A manual run of the job, to its end; the prompt the gateway received for it."""
    before = len(gateway.chats)
    done = len([r for r in runs_of(db, job_id) if r["status"] != "running"])
    code, _, stdout, stderr = cli("jobs", "run", job_id)
    assert code == 0, stdout + stderr
    (*_, chat) = gateway.wait_for_requests(CHAT, before + 1, timeout=20)
    wait_until(lambda: len([r for r in runs_of(db, job_id) if r["status"] != "running"]) > done,
               timeout=20, message="the run's end recorded")
    return str(chat.body["messages"][0]["content"])


def replies(*texts: str) -> Any:
    sequence = itertools.chain(texts, itertools.repeat("(later reply)"))
    return lambda request: next(sequence)


def test_hybrid_puts_the_prior_runs_real_reply_into_the_next_prompt(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    fake_gateway.reply_content = replies("Today: ZEPHYRQUARTZ winds from the west, rain later.")
    daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, agent_spec(context_retrieval="hybrid"))
    first = run_once(cli, db_path, db, job["id"], fake_gateway)
    assert "Prior Run Context" not in first  # nothing ran before it
    second = run_once(cli, db_path, db, job["id"], fake_gateway)
    (earlier, latest) = runs_of(db, job["id"])
    assert (f"{HEADER}\n[{earlier['started_at']}] Today: ZEPHYRQUARTZ winds from the west, "
            f"rain later.\n{FOOTER}") in second
    assert "messages_injected" not in second  # the prompt metadata is not what is retrieved
    assert json.loads(latest["context_summary"])["retrieval_results"] == 1


def test_hybrid_chooses_the_matching_run_and_recent_the_newest_each_up_to_the_limit(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    fake_gateway.reply_content = replies("alpha unrelated notes", "the weather forecast: HAILSTORM",
                                         "beta unrelated notes")
    daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, agent_spec(context_retrieval="hybrid", context_retrieval_limit=1))
    for _ in range(3):
        run_once(cli, db_path, db, job["id"], fake_gateway)
    hybrid = run_once(cli, db_path, db, job["id"], fake_gateway)
    assert "HAILSTORM" in hybrid
    assert "alpha unrelated" not in hybrid and "beta unrelated" not in hybrid

    code, _, stdout, stderr = cli("jobs", "update", job["id"],
                                  json.dumps({"context_retrieval": "recent",
                                              "context_retrieval_limit": 2}))
    assert code == 0, stdout + stderr
    recent = run_once(cli, db_path, db, job["id"], fake_gateway)
    block = recent.split(HEADER, 1)[1].split(FOOTER, 1)[0]
    assert block.count("\n[") == 2
    assert "(later reply)" in block and "beta unrelated" in block  # the two newest
    assert "HAILSTORM" not in block


def test_hybrid_with_no_match_falls_back_to_the_recent_runs(cli, daemon, db_path, db, fake_gateway) -> None:
    fake_gateway.reply_content = replies("first reply text", "second reply text")
    daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, agent_spec(context_retrieval="hybrid", context_retrieval_limit=1,
                                  payload_message="quarterly numbers"))
    run_once(cli, db_path, db, job["id"], fake_gateway)
    run_once(cli, db_path, db, job["id"], fake_gateway)
    third = run_once(cli, db_path, db, job["id"], fake_gateway)
    assert "second reply text" in third and "first reply text" not in third


def test_a_shell_runs_stdout_is_its_output_even_offloaded(
    cli, daemon, db_path, db, fake_gateway, tmp_path
) -> None:
    """A shell run's output is its stdout; an offloaded one is scored on its file (bounded)."""
    marker = tmp_path / "ran-once"
    # First run: 5000 bytes then the needle, offloaded (threshold 1024, excerpt 64 bytes, so the
    # stored column never holds the needle). Second run: a small, unrelated stdout.
    command = (f"if [ -f {marker} ]; then echo small output; else touch {marker}; "
               "head -c 5000 /dev/zero | tr '\\0' 'x'; echo; echo NEEDLEWORD found; fi")
    daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, json.dumps({
        "name": "producer", "session_target": "shell", "payload_message": command,
        "run_timeout_ms": 30000, "delivery_mode": "none", "origin": "system",
        "schedule_cron": "0 0 1 1 *", "output_offload_threshold_bytes": 1024,
        "output_excerpt_limit_bytes": 64}))
    for expected in (1, 2):
        assert cli("jobs", "run", job["id"])[0] == 0
        wait_until(lambda n=expected: len([r for r in runs_of(db, job["id"]) if r["status"] == "ok"]) == n,
                   timeout=20, message="shell run ok")
    offloaded, small = runs_of(db, job["id"])
    assert offloaded["shell_stdout_path"] and "NEEDLEWORD" not in offloaded["shell_stdout"]
    assert small["shell_stdout"] == "small output" and not small["shell_stdout_path"]
    code, _, stdout, stderr = cli("jobs", "update", job["id"], json.dumps({
        "session_target": "isolated", "payload_kind": "agentTurn", "payload_message": "where is NEEDLEWORD",
        "delivery_opt_out_reason": "test",
        "context_retrieval": "hybrid", "context_retrieval_limit": 1}))
    assert code == 0, stdout + stderr
    prompt = run_once(cli, db_path, db, job["id"], fake_gateway)
    block = prompt.split(HEADER, 1)[1].split(FOOTER, 1)[0]
    assert f"[{offloaded['started_at']}] " in block and "small output" not in block
    assert block.strip().startswith(f"[{offloaded['started_at']}] xxx")



def test_no_retrieval_by_default(cli, daemon, db_path, db, fake_gateway) -> None:
    fake_gateway.reply_content = replies("UNIQUEWORD reply")
    daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, agent_spec())
    run_once(cli, db_path, db, job["id"], fake_gateway)
    assert "UNIQUEWORD" not in run_once(cli, db_path, db, job["id"], fake_gateway)


# -- pre_compaction_flush and NO_FLUSH ------------------------------------------------------------


def test_a_flush_job_asks_for_a_flush_and_no_flush_suppresses_its_delivery(
    cli, daemon, db_path, db, fake_gateway
) -> None:
    fake_gateway.reply_content = replies("NO_FLUSH", "Decisions: ship on Friday.")
    d = daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, agent_spec(job_class="pre_compaction_flush", delivery_mode="announce-always",
                                  delivery_channel="telegram", delivery_to="4242"))
    prompt = run_once(cli, db_path, db, job["id"], fake_gateway)
    assert ("\n[SYSTEM: Pre-compaction flush required]\nWrite a structured summary of: active "
            "decisions, constraints, task owners, open questions.\nFormat as labeled sections. If "
            "nothing needs flushing, respond with exactly: NO_FLUSH\n[END SYSTEM]\n") in prompt
    (nothing,) = runs_of(db, job["id"])
    assert nothing["status"] == "ok" and nothing["summary"] == "NO_FLUSH"
    event = d.wait_for_event("agent.nothing_to_flush", timeout=10)
    assert event["run_id"] == nothing["id"] and event["job_id"] == job["id"]

    # A real flush is announced (so the first one was suppressed, not lost on the way).
    run_once(cli, db_path, db, job["id"], fake_gateway)
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert delivery["message"] == "Decisions: ship on Friday."
    outbound = db("SELECT run_id FROM messages WHERE job_id = ? AND to_agent = '@outbound'", (job["id"],))
    assert [m["run_id"] for m in outbound] != [nothing["id"]] and len(outbound) == 1
