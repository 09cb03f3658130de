"""The hostile-argument sweep of tests/test_cli.py over the commands of sub-agent dispatch, the
companion tools and ``capabilities``: whatever goes into any slot, no traceback, one clean error,
nothing raw for the terminal, and a failed command writes nothing (the dispatch ledger
included). No gateway listens here, so a dispatch that passes its checks fails cleanly at the
gateway and must leave no ledger row, job or notice behind."""

from __future__ import annotations

from typing import Any

from conftest import query
from test_cli import HOSTILE, run_sweep, seeded, snapshot, sweep_problems  # noqa: F401

ENQUEUE = ["dispatch", "enqueue", "--label", "sweep", "--message", "hi", "--deliver-to", "42"]
TEMPLATES: list[list[str]] = [
    ["dispatch", "{h}"],
    ["dispatch", "enqueue", "--label", "{h}", "--message", "hi", "--deliver-to", "42"],
    ["dispatch", "enqueue", "--label", "sweep", "--message", "{h}", "--deliver-to", "42"],
    ["dispatch", "enqueue", "--label", "sweep", "--message", "hi", "--deliver-to", "{h}"],
    [*ENQUEUE, "--timeout", "{h}"],
    [*ENQUEUE, "--mode", "{h}"],
    [*ENQUEUE, "--monitor-interval", "{h}"],
    [*ENQUEUE, "--idle-threshold", "{h}"],
    [*ENQUEUE, "{h}"],
    ["dispatch", "status", "--label", "{h}"],
    ["dispatch", "result", "--label", "{h}"],
    ["dispatch", "heartbeat", "--label", "{h}"],
    ["dispatch", "send", "--label", "{h}", "--message", "x"],
    ["dispatch", "cancel", "--label", "{h}"],
    ["dispatch", "done", "--label", "{h}", "--summary", "s", "--checklist",
     '{"work_complete": true}'],
    ["dispatch", "done", "--label", "sweep", "--summary", "s", "--checklist", "{h}"],
    ["dispatch", "list", "--limit", "{h}"],
    ["dispatch", "list", "--status", "{h}"],
    ["dispatch", "stuck", "--threshold-min", "{h}"],
    ["dispatch", "import", "{h}"],
    ["runs", "stuck", "--threshold-min", "{h}"],
    ["runs", "stuck", "--limit", "{h}"],
    ["webhook-check", "--gateway-url", "{h}"],
    ["capabilities", "{h}"],
]


def test_hostile_arguments_in_the_dispatch_and_companion_commands(
        seeded: dict[str, Any]) -> None:  # noqa: F811
    cases = [[hostile if arg == "{h}" else arg for arg in template]
             for template in TEMPLATES for hostile in HOSTILE]
    before = snapshot(seeded["path"])
    results = run_sweep(seeded["path"], cases)
    assert len(results) == 2 * len(cases)
    failures = [
        (problems, repr(result["argv"])[:160], result["code"],
         (result["stdout"] + result["stderr"])[-300:])
        for result in results
        if (problems := sweep_problems(result))
    ]
    assert not failures, f"{len(failures)} bad outcomes, e.g. {failures[:5]}"
    assert snapshot(seeded["path"]) == before
    assert query(seeded["path"], "SELECT label FROM dispatch_labels") == []
