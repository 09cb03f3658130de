"""A mock trust provider plugin, like the reference's test-providers/mock-stripe.js: a test
fixture copied into a temporary SCHEDULER_PROVIDER_PATH directory (never imported by the tests).

* ``mock-stripe`` (identity): a session per scope (``full`` > ``payments`` > ``readonly``) with a
  fake API key as its credential; ``materialize`` puts the key in ``STRIPE_API_KEY``; ``cleanup``,
  when the presentation asks for one, writes ``cleanup-<scope>`` into ``$MOCK_STRIPE_MARKERS``;
  ``prepare_handoff`` hands a session off to another scope; ``describe_session`` redacts the key.
  A presentation with ``mock_fail`` makes ``materialize`` answer ``materialized: false``, with
  ``mock_raise`` raise.
  ``resolve_session`` is a coroutine, the rest plain functions (both kinds must work).
* ``mock-policy`` (authorization): decides what the policy's ``mock_decision`` says, and writes
  the request it got to ``$MOCK_STRIPE_MARKERS/authorize.json``.
* ``mock-verifier`` (proof-verifier), under the reference's method name ``verifyProof``:
  verified when the proof's ``signature`` is ``valid``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

KEYS = {
    "full": "sk_test_mock_full_key_123456",
    "payments": "sk_test_mock_payments_key_789",
    "readonly": "rk_test_mock_readonly_key_abc",
}
LEVELS = {"full": "autonomous", "payments": "supervised", "readonly": "restricted"}


def _markers(ctx: dict[str, Any]) -> Path | None:
    where = ctx.get("env", {}).get("MOCK_STRIPE_MARKERS")
    return Path(where) if where else None


def _session(scope: str) -> dict[str, Any]:
    return {
        "provider": "mock-stripe",
        "subject": {"kind": "service", "principal": f"stripe:{scope}"},
        "trust": {"declared_level": LEVELS[scope], "effective_level": LEVELS[scope]},
        "credentials": {"api_key": {"kind": "bearer", "value": KEYS[scope], "scope": scope}},
        "delegation_chain": [{"kind": "service", "principal": "stripe:test",
                              "grant": f"scope:{scope}", "validated": True}],
        "delegation_validation": {"valid": True, "depth": 1, "acyclic": True,
                                  "escalation_detected": False},
    }


class MockStripe:
    name = "mock-stripe"
    type = "identity"

    def validate_profile(self, profile: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        return {"valid": True}

    async def resolve_session(self, request: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        scope = request.get("scope") or "full"
        if scope not in KEYS:
            return {"ok": False, "transient": False, "error": f"Unknown scope: {scope}"}
        return {"ok": True, "session": _session(scope)}

    def materialize(self, session: dict[str, Any], presentation: dict[str, Any],
                    ctx: dict[str, Any]) -> dict[str, Any]:
        if presentation.get("mock_fail"):
            return {"materialized": False}
        if presentation.get("mock_raise"):
            raise RuntimeError("vault sealed")
        value = session.get("credentials", {}).get("api_key", {}).get("value")
        return {"materialized": True, "env_vars": {"STRIPE_API_KEY": value} if value else {},
                "cleanup_required": bool(presentation.get("cleanup")),
                "scope": session.get("credentials", {}).get("api_key", {}).get("scope")}

    def cleanup(self, state: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        markers = _markers(ctx)
        if markers is not None:
            (markers / f"cleanup-{state.get('scope')}").write_text("cleaned\n")
        return {"cleaned": True}

    def prepare_handoff(self, session: dict[str, Any], handoff: dict[str, Any],
                        ctx: dict[str, Any]) -> dict[str, Any]:
        target = handoff.get("target_scope")
        if not target:
            return {"prepared": False, "error": "missing target_scope"}
        if target not in KEYS:
            return {"prepared": False, "error": f"Unknown scope: {target}"}
        handed = copy.deepcopy(session)
        handed["credentials"] = {"api_key": {"kind": "bearer", "value": KEYS[target], "scope": target}}
        handed["trust"] = {"declared_level": LEVELS[target], "effective_level": LEVELS[target]}
        handed["subject"] = {"kind": "service", "principal": f"stripe:{target}"}
        return {"prepared": True, "session": handed}

    def describe_session(self, session: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        described = copy.deepcopy(session)
        key = described.get("credentials", {}).get("api_key")
        if isinstance(key, dict) and "value" in key:
            key["value"] = "[REDACTED]"
        return described


class MockPolicy:
    name = "mock-policy"
    type = "authorization"

    async def authorize(self, request: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        markers = _markers(ctx)
        if markers is not None:
            (markers / "authorize.json").write_text(json.dumps(request))
        decision = request["policy"].get("mock_decision", "permit")
        return {"decision": decision, "reason": f"mock policy says {decision}"}


def _verify(request: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    if request["proof"].get("signature") == "valid":
        return {"verified": True}
    return {"verified": False, "error": "signature mismatch"}


providers = [
    MockStripe(),
    MockPolicy(),
    SimpleNamespace(name="mock-verifier", type="proof-verifier", verifyProof=_verify),
]

# A marker that the module ran inside the daemon (the loader test counts loads).
if os.environ.get("MOCK_STRIPE_LOADS"):
    with open(os.environ["MOCK_STRIPE_LOADS"], "a") as _loads:
        _loads.write("loaded\n")
