"""The v0.2 trust model (models/trust.py): each rule of features.md §10 and its message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.models import trust as t


def job(**fields: Any) -> dict[str, Any]:
    return {"id": "job-1", **{k: json.dumps(v) if isinstance(v, dict | list) else v
                              for k, v in fields.items()}}


# -- trust levels ----------------------------------------------------------------------------


def test_trust_levels_are_ordered_and_unknown_ones_rank_lowest() -> None:
    assert t.TRUST_LEVELS == ("untrusted", "restricted", "supervised", "autonomous")
    assert t.compare_trust_levels("restricted", "supervised") == -1
    assert t.compare_trust_levels("autonomous", "untrusted") == 1
    assert t.compare_trust_levels("supervised", "supervised") == 0
    assert t.compare_trust_levels("godlike", "untrusted") == -1
    assert t.compare_trust_levels("godlike", None) == 0


# -- identity ------------------------------------------------------------------------------


def test_structural_identity_from_the_blob_falls_back_to_the_columns() -> None:
    identity = t.structural_identity(job(identity={"principal": "svc:a"}, identity_trust_level="restricted",
                                         identity_subject_kind="service"))
    assert identity == t.Identity("service", "svc:a", "restricted", None, raw={"principal": "svc:a"})
    assert identity.as_json() == {"subject_kind": "service", "principal": "svc:a",
                                  "trust_level": "restricted", "delegation_mode": None,
                                  "raw": {"principal": "svc:a"}}


def test_structural_identity_from_scalar_columns_only() -> None:
    identity = t.structural_identity(job(identity_subject_principal="user:b"))
    assert identity is not None and identity.principal == "user:b" and identity.subject_kind == "unknown"
    assert identity.raw is None
    assert t.structural_identity(job()) is None


def test_a_malformed_identity_blob_keeps_the_scalars_and_says_why() -> None:
    identity = t.structural_identity(job(identity="{not json", identity_trust_level="supervised"))
    assert identity is not None and identity.trust_level == "supervised"
    assert identity.raw["error"].startswith("identity JSON parse failed: ")
    bare = t.structural_identity(job(identity="{not json"))
    assert bare is not None and bare.subject_kind == "unknown" and bare.principal is None


def test_a_named_provider_asks_for_a_session_with_the_scope() -> None:
    request = t.identity_request(job(identity={"auth": {"provider": "p", "scopes": ["read", "write"]}}))
    assert request is not None
    assert request.request() == {"profile": {"auth": {"provider": "p", "scopes": ["read", "write"]}},
                                 "instanceId": "job-1", "scope": "read"}
    assert t.identity_request(job(identity={"principal": "x"})) is None


def test_provider_answers_become_identities_or_failures() -> None:
    request = t.IdentityRequest("p", {"trust": {"level": "restricted"}}, "job-1", None)
    session = {"subject": {"kind": "service", "principal": "svc"}, "credentials": {"k": "secret"}}
    identity = t.identity_from_provider(request, {"ok": True, "session": session})
    assert isinstance(identity, t.Identity)
    assert (identity.source, identity.principal, identity.trust_level) == ("provider", "svc", "restricted")
    failure = t.identity_from_provider(request, {"ok": False, "error": "expired"})
    assert failure == t.IdentityFailure("p", "expired", transient=True)
    assert t.identity_provider_missing("q").as_json() == {
        "provider": "q", "error": "identity provider not loaded: q", "transient": False,
        "source": "provider-error"}


def test_identity_needed_for_a_declaration_a_requirement_or_an_authorization() -> None:
    assert not t.needs_identity(job())
    assert t.needs_identity(job(identity_ref="ref"))
    assert t.needs_identity(job(contract_required_trust_level="restricted"))
    assert t.needs_identity(job(authorization_ref="a"))


# -- credential handoff --------------------------------------------------------------------


def test_handoff_summary_counts_bindings_and_cleanup() -> None:
    summary = t.summarize_credential_handoff(job(identity={"presentation": {
        "mode": "env", "bindings": [{"env": "A"}, {"env": "B", "cleanup": True}]}}))
    assert summary is not None and summary.as_json() == {
        "mode": "env", "bindings_count": 2, "cleanup_required": True}
    assert summary.declared
    assert t.summarize_credential_handoff(job(identity={"presentation": {}})) is None
    assert t.summarize_credential_handoff(job(identity={"credential_handoff": {"mode": "file"}})) is not None
    broken = t.summarize_credential_handoff(job(identity="{"))
    assert broken is not None and not broken.declared and broken.error is not None


# -- child credential policy ---------------------------------------------------------------


def test_the_child_policy_falls_back_to_the_parent_then_none() -> None:
    assert t.effective_child_policy({"child_credential_policy": "inherit"},
                                    {"child_credential_policy": "downscope"}) == "inherit"
    assert t.effective_child_policy({}, {"child_credential_policy": "downscope"}) == "downscope"
    assert t.effective_child_policy({}, {}) == "none"


def test_trust_levels_are_found_where_the_reference_looks() -> None:
    assert t.identity_trust_level({"session": {"trust": {"effective_level": "supervised"}}}) == "supervised"
    assert t.identity_trust_level({"raw": {"trust": {"level": "restricted"}}}) == "restricted"
    assert t.job_trust_level({"identity": json.dumps({"trust_level": "autonomous"})}) == "autonomous"
    assert t.job_trust_level({"identity_trust_level": "untrusted"}) == "untrusted"


def test_independent_children_may_not_exceed_the_parent() -> None:
    assert t.independent_refusal("autonomous", "restricted") == (
        'Independent child trust level "autonomous" exceeds parent trust level "restricted"')
    assert t.independent_refusal("restricted", "autonomous") is None
    assert t.independent_refusal(None, "restricted") is None


def test_downscope_failure_messages() -> None:
    assert t.downscope_failure(None, False, False) == (
        "Downscope credential policy failed: identity provider (none) not loaded")
    assert t.downscope_failure("p", True, False) == (
        "Downscope credential policy failed: provider p does not support prepareHandoff")
    assert t.downscope_failure("p", True, True) == (
        "Downscope credential policy failed: parent session unavailable or handoff did not produce "
        "a downscoped session")


# -- trust evaluation ----------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "decision", "reason"), [
    ({}, "permit", "no trust requirement declared"),
    ({"contract_required_trust_level": "cosmic"}, "permit", "unrecognized required trust level: cosmic"),
    ({"contract_required_trust_level": "supervised", "contract_trust_enforcement": "strict"},
     "deny", "no trust level declared; enforcement is block"),
    ({"contract_required_trust_level": "supervised", "contract_trust_enforcement": "advisory"},
     "warn", "no trust level declared; enforcement is warn"),
    ({"contract_required_trust_level": "supervised"}, "permit",
     "no trust level declared; enforcement is none"),
    ({"contract_required_trust_level": "supervised", "identity_trust_level": "weird",
      "contract_trust_enforcement": "block"}, "deny", "unrecognized effective trust level: weird"),
    ({"contract_required_trust_level": "supervised", "identity_trust_level": "autonomous",
      "contract_trust_enforcement": "block"}, "permit", "trust level meets or exceeds requirement"),
    ({"contract_required_trust_level": "supervised", "identity_trust_level": "restricted",
      "contract_trust_enforcement": "warn"}, "warn", "trust level restricted is below required supervised"),
    ({"contract_required_trust_level": "supervised", "identity_trust_level": "restricted"}, "permit",
     "trust level restricted is below required supervised; enforcement is none"),
])
def test_trust_evaluation(fields: dict[str, Any], decision: str, reason: str) -> None:
    evaluation = t.evaluate_trust(job(**fields), None)
    assert (evaluation.decision, evaluation.reason) == (decision, reason)


def test_the_resolved_identity_level_wins_over_the_column() -> None:
    identity = t.Identity("service", None, "autonomous", None)
    evaluation = t.evaluate_trust(job(contract_required_trust_level="supervised",
                                      identity_trust_level="untrusted",
                                      contract_trust_enforcement="strict"), identity)
    assert evaluation.decision == "permit" and evaluation.effective_level == "autonomous"
    assert t.trust_blocked(t.TrustEvaluation("x", "y", "deny", "why")) == (
        "Trust enforcement blocked dispatch: why")


# -- proofs --------------------------------------------------------------------------------


def test_proof_declarations() -> None:
    assert t.proof_request(job()) is None
    assert t.proof_request(job(authorization_proof_ref="r")) == t.ProofVerification(
        False, None, "r", "authorization_proof is empty; only ref provided")
    bad = t.proof_request(job(authorization_proof="[1]"))
    assert bad == t.ProofVerification(False, None, None, "authorization_proof must be a JSON object")
    unparsable = t.proof_request(job(authorization_proof="{"))
    assert isinstance(unparsable, t.ProofVerification)
    assert unparsable.error is not None
    assert unparsable.error.startswith("authorization_proof JSON parse failed")


def test_structural_proofs_need_a_known_method() -> None:
    def verdict(proof: dict[str, Any]) -> t.ProofVerification:
        request = t.proof_request(job(authorization_proof=proof, authorization_proof_ref="col"))
        assert isinstance(request, t.ProofRequest)
        return t.structural_proof(request)

    assert verdict({"method": "mtls"}).as_json() == {"verified": True, "method": "mtls", "ref": "col"}
    assert verdict({}).error == 'authorization_proof missing required "method" field'
    assert verdict({"method": "vibes", "ref": "own"}).as_json() == {
        "verified": False, "method": "vibes", "ref": "own", "error": "unrecognized proof method: vibes"}
    assert t.proof_failed(t.ProofVerification(False, None, None)) == (
        "Authorization proof verification failed: verification returned false")


def test_verifier_answers() -> None:
    request = t.ProofRequest({"verifier": "v"}, None, None, "v", "job-1")
    assert t.proof_verifier_missing(request).as_json() == {
        "verified": False, "method": None, "ref": None, "error": "proof verifier not loaded: v",
        "source": "provider-error", "provider": "v"}
    assert t.proof_from_verifier(request, {"verified": 1}).verified is True
    assert t.proof_from_verifier(request, None).verified is False


# -- authorization -------------------------------------------------------------------------


def test_authorization_without_an_inline_policy_denies() -> None:
    assert t.authorization_request(job()) is None
    only_ref = t.authorization_request(job(authorization_ref="opa://x"))
    assert isinstance(only_ref, t.AuthorizationDecision) and only_ref.decision == "deny"
    assert only_ref.reason == t.REF_ONLY_REASON
    not_object = t.authorization_request(job(authorization="3"))
    assert isinstance(not_object, t.AuthorizationDecision)
    assert not_object.reason == "authorization must be a JSON object"


def _structural(policy: dict[str, Any], identity: t.Identity | None = None,
                trust: t.TrustEvaluation | None = None) -> t.AuthorizationDecision:
    request = t.authorization_request(job(authorization=policy))
    assert isinstance(request, t.AuthorizationRequest)
    return t.structural_authorization(request, identity, trust)


def test_structural_authorization_rules() -> None:
    denied_trust = t.TrustEvaluation(None, "supervised", "deny", "too low")
    assert _structural({"decision": "deny"}).reason == "explicit deny in authorization policy"
    assert _structural({"decision": "escalate", "reason": "ask"}).decision == "escalate"
    assert _structural({}, trust=denied_trust).reason == "trust evaluation denied: too low"
    assert _structural({"depends_on_trust": False}, trust=denied_trust).decision == "permit"
    assert _structural({"requires_identity": True}).reason == (
        "authorization requires identity but none was resolved")
    assert _structural({}).as_json() == {
        "decision": "permit", "reason": "authorization policy permits (structural check only)", "ref": None}


def test_provider_decisions_other_than_the_three_deny() -> None:
    request = t.AuthorizationRequest({}, "r", "pol", "job-1")
    permitted = t.authorization_from_provider(request, {"decision": "permit"})
    assert permitted.reason == "provider pol returned permit"
    silent = t.authorization_from_provider(request, {})
    assert silent.reason == "authorization provider pol returned no decision"
    odd = t.authorization_from_provider(request, {"decision": "allow"})
    assert (odd.decision, odd.reason) == (
        "deny", 'authorization provider pol returned unsupported decision "allow"')
    assert t.authorization_provider_raised(request, "boom").reason == "authorization provider error: boom"
    assert t.authorization_refusal(t.AuthorizationDecision("escalate", "", None)) == (
        "Authorization requires escalation: provider requested escalation")
    assert t.authorization_refusal(t.AuthorizationDecision("permit", "ok", None)) is None


def test_the_authorization_request_carries_no_credentials() -> None:
    identity = t.Identity("service", "svc", "supervised", None, provider="p", source="provider",
                          session={"subject": {}, "credentials": {"key": "secret-value"}})
    request = t.AuthorizationRequest({"provider": "pol"}, None, "pol", "job-1").request(identity, None)
    assert "secret-value" not in json.dumps(request)
    assert request["identity"]["principal"] == "svc"


# -- evidence and redaction -----------------------------------------------------------------


def test_evidence_is_a_metadata_envelope() -> None:
    record = t.generate_evidence(job(evidence={"collect": ["stdout"], "format": "jsonl", "ref": "own"}),
                                 "run-1", "ok", ["trust_evaluation"], "2026-01-01T00:00:00.000Z")
    assert record is not None and record.as_json() == {
        "evidence_ref": "own", "created_at": "2026-01-01T00:00:00.000Z", "hash": None,
        "integrity": "none", "payload_summary": {
            "collect": ["stdout"], "format": "jsonl", "run_id": "run-1", "run_status": "ok",
            "outcome_fields_present": ["trust_evaluation"]}}
    assert t.generate_evidence(job(), "run-1", "ok", [], "now") is None
    broken = t.generate_evidence(job(evidence="{", evidence_ref="r"), "run-1", "ok", [], "now")
    assert broken is not None and broken.payload_summary["error"].startswith("evidence JSON parse failed")


def test_a_session_without_credentials() -> None:
    assert t.without_credentials({"subject": 1, "credentials": {"k": "v"}}) == {"subject": 1}
    identity = t.Identity("service", None, None, None, provider="p", source="provider",
                          session={"credentials": {"k": "v"}})
    assert identity.as_json(session={"redacted": True})["session"] == {"redacted": True}


def test_materialisation_messages() -> None:
    assert t.materialization_refused("p") == (
        "Credential materialization failed for provider p: provider returned materialized=false")
    assert t.materialization_raised("p", "boom") == "Credential materialization error for provider p: boom"
    assert t.materialization_unsupported(None) == (
        "Job declares credential presentation but provider (none) does not support materialization")
    assert t.presentation_of({"identity": json.dumps({"presentation": {"mode": "env"}})}) == {"mode": "env"}
    assert t.presentation_of({"identity": "[]"}) == {}
