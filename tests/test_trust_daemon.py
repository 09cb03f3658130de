"""The v0.2 trust gate with the real daemon, real SQLite and the mock provider plugin
(tests/providers/mock_stripe.py, copied into a SCHEDULER_PROVIDER_PATH directory): every
refusal fails closed with the reference's message and fires no children; a downscope handoff;
credentials reach a shell job's environment and nothing else (not the database, not the logs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from conftest import add_job, runs_of, shell_job, wait_until
from fakegateway import CHAT, FakeGateway

NEVER_SOON = "0 0 1 1 *"
MOCK = Path(__file__).parent / "providers" / "mock_stripe.py"
KEYS = ("sk_test_mock_full_key_123456", "sk_test_mock_payments_key_789",
        "rk_test_mock_readonly_key_abc")
TERMINAL = {"ok", "error", "timeout", "cancelled", "crashed", "skipped"}


def provider_env(tmp_path: Path) -> dict[str, str]:
    plugins, markers = tmp_path / "providers", tmp_path / "markers"
    plugins.mkdir(mode=0o755)
    markers.mkdir()
    shutil.copy(MOCK, plugins / "mock_stripe.py")
    return {"SCHEDULER_PROVIDER_PATH": str(plugins), "MOCK_STRIPE_MARKERS": str(markers)}


def manual(cli: Any, **fields: Any) -> dict[str, Any]:
    return add_job(cli, shell_job(schedule_cron=NEVER_SOON, **fields))


def child(cli: Any, parent: dict[str, Any], trigger_on: str, **fields: Any) -> dict[str, Any]:
    return add_job(cli, shell_job(parent_id=parent["id"], trigger_on=trigger_on, **fields))


def run_now(cli: Any, job: dict[str, Any]) -> None:
    code, _, stdout, stderr = cli("jobs", "run", job["id"])
    assert code == 0, stdout + stderr


def ended(db: Any, job_id: str) -> dict[str, Any] | None:
    runs = [r for r in runs_of(db, job_id) if r["status"] in TERMINAL]
    return runs[-1] if runs else None


def ran(cli: Any, db: Any, job: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
    run_now(cli, job)
    return wait_until(lambda: ended(db, job["id"]), timeout=timeout, message=f"{job['name']} ended")


def quiet(db: Any) -> bool:
    return not db("SELECT 1 FROM runs WHERE status = 'running'") and not db(
        "SELECT 1 FROM job_dispatch_queue WHERE status IN ('pending', 'claimed')")


def blob(value: dict[str, Any]) -> str:
    return json.dumps(value)


STRICT_AUTONOMOUS = {"contract_required_trust_level": "autonomous",
                     "contract_trust_enforcement": "strict"}


# -- fail closed: the run, and its children ---------------------------------------------------


def test_a_strict_trust_denial_fails_closed_and_fires_no_children(cli, daemon, db, tmp_path) -> None:
    marker = tmp_path / "parent-ran"
    d = daemon()
    parent = manual(cli, name="guarded", payload_message=f"touch {marker}", max_retries=2,
                    identity_trust_level="restricted", **STRICT_AUTONOMOUS)
    on_failure = child(cli, parent, "failure", name="on-failure", payload_message="true")
    on_complete = child(cli, parent, "complete", name="on-complete", payload_message="true")
    run = ran(cli, db, parent)
    wait_until(lambda: quiet(db), timeout=10)
    assert d.stop() == 0

    message = "Trust enforcement blocked dispatch: trust level restricted is below required autonomous"
    assert run["status"] == "error"
    assert run["error_message"] == message and run["summary"] == message
    assert not marker.exists()  # the work never began
    evaluation = json.loads(run["trust_evaluation"])
    assert evaluation == {"effective_level": "restricted", "required_level": "autonomous",
                          "decision": "deny", "reason": "trust level restricted is below required autonomous"}
    assert json.loads(run["identity_resolved"])["trust_level"] == "restricted"
    for kid in (on_failure, on_complete):
        assert not runs_of(db, kid["id"])
        assert not db("SELECT 1 FROM job_dispatch_queue WHERE job_id = ?", (kid["id"],))
    # Not retried (the same declaration would be refused again); it counts as the job's failure.
    assert len(runs_of(db, parent["id"])) == 1
    (job,) = db("SELECT consecutive_errors, last_status FROM jobs WHERE id = ?", (parent["id"],))
    assert job == {"consecutive_errors": 1, "last_status": "error"}
    # Its idempotency key is released: once the declaration is fixed, the work may run.
    (entry,) = db("SELECT status FROM idempotency_ledger WHERE key = ?", (run["idempotency_key"],))
    assert entry["status"] == "released"
    assert d.events("trust.refused")[0]["reason"] == message


def test_a_trust_denied_child_never_runs_nor_fires_its_own_children(cli, daemon, db, tmp_path) -> None:
    child_marker, grandchild_marker = tmp_path / "child-ran", tmp_path / "grandchild-ran"
    d = daemon()
    parent = manual(cli, name="build", payload_message="echo built")
    guarded = child(cli, parent, "success", name="deploy", payload_message=f"touch {child_marker}",
                    **STRICT_AUTONOMOUS)
    grandchild = child(cli, guarded, "complete", name="after-deploy",
                       payload_message=f"touch {grandchild_marker}")
    assert ran(cli, db, parent)["status"] == "ok"
    denied = wait_until(lambda: ended(db, guarded["id"]), timeout=20, message="the child ended")
    wait_until(lambda: quiet(db), timeout=10)
    assert d.stop() == 0

    assert denied["status"] == "error"
    assert denied["error_message"] == (
        "Trust enforcement blocked dispatch: no trust level declared; enforcement is block")
    assert not child_marker.exists() and not grandchild_marker.exists()
    assert not runs_of(db, grandchild["id"])


def test_advisory_enforcement_warns_and_runs(cli, daemon, db, tmp_path) -> None:
    marker = tmp_path / "ran"
    d = daemon()
    job = manual(cli, name="advised", payload_message=f"touch {marker}",
                 contract_required_trust_level="autonomous", contract_trust_enforcement="advisory",
                 identity_trust_level="supervised")
    run = ran(cli, db, job)
    warning = d.wait_for_event("trust.warning")
    assert d.stop() == 0
    assert run["status"] == "ok" and marker.exists()
    assert json.loads(run["trust_evaluation"])["decision"] == "warn"
    assert warning["reason"] == "trust level supervised is below required autonomous"


# -- the mock provider: identity, credentials, downscope ---------------------------------------


def test_a_shell_job_gets_materialised_credentials_and_the_cleanup_runs(cli, daemon, db, tmp_path) -> None:
    env = provider_env(tmp_path)
    seen = tmp_path / "seen-key"
    d = daemon(env=env)
    job = manual(cli, name="charge", payload_message=f'printf %s "$STRIPE_API_KEY" > {seen}',
                 identity=blob({"provider": "mock-stripe", "scope": "payments",
                                "presentation": {"mode": "env", "cleanup": True}}))
    run = ran(cli, db, job)
    wait_until(lambda: (Path(env["MOCK_STRIPE_MARKERS"]) / "cleanup-payments").exists(),
               timeout=10, message="the provider's cleanup ran")
    assert d.stop() == 0

    assert run["status"] == "ok", run
    assert seen.read_text() == "sk_test_mock_payments_key_789"
    identity = json.loads(run["identity_resolved"])
    assert identity["source"] == "provider" and identity["provider"] == "mock-stripe"
    assert identity["principal"] == "stripe:payments" and identity["trust_level"] == "supervised"
    assert identity["session"]["credentials"]["api_key"]["value"] == "[REDACTED]"
    assert json.loads(run["credential_handoff_summary"]) == {
        "mode": "env", "bindings_count": 0, "cleanup_required": True}
    loaded = d.events("provider.loaded")[0]
    assert set(loaded["providers"]) == {"identity:mock-stripe", "authorization:mock-policy",
                                        "proof-verifier:mock-verifier"}
    assert_no_credentials(db, d, tmp_path)


def test_a_downscope_handoff_through_the_mock_provider(cli, daemon, db, tmp_path) -> None:
    env = provider_env(tmp_path)
    parent_key, child_key = tmp_path / "parent-key", tmp_path / "child-key"
    d = daemon(env=env)
    parent = manual(cli, name="parent", child_credential_policy="downscope",
                    payload_message=f'printf %s "$STRIPE_API_KEY" > {parent_key}',
                    identity=blob({"provider": "mock-stripe", "scope": "full"}))
    kid = child(cli, parent, "success", name="child",
                payload_message=f'printf %s "$STRIPE_API_KEY" > {child_key}',
                identity=blob({"scope": "readonly", "presentation": {"mode": "env", "cleanup": True}}))
    assert ran(cli, db, parent)["status"] == "ok"
    child_run = wait_until(lambda: ended(db, kid["id"]), timeout=20, message="the child ended")
    wait_until(lambda: quiet(db), timeout=10)
    assert d.stop() == 0

    assert child_run["status"] == "ok", child_run
    assert parent_key.read_text() == KEYS[0]  # the parent's own session, full scope
    assert child_key.read_text() == KEYS[2]  # the child's: handed off to the read-only scope
    assert (Path(env["MOCK_STRIPE_MARKERS"]) / "cleanup-readonly").exists()
    identity = json.loads(child_run["identity_resolved"])
    assert identity["source"] == "provider" and identity["provider"] == "mock-stripe"
    assert identity["principal"] == "stripe:readonly" and identity["trust_level"] == "restricted"
    assert identity["session"]["credentials"]["api_key"] == {
        "kind": "bearer", "value": "[REDACTED]", "scope": "readonly"}
    (parent_run,) = runs_of(db, parent["id"])
    assert json.loads(parent_run["identity_resolved"])["trust_level"] == "autonomous"
    assert_no_credentials(db, d, tmp_path)


def test_downscope_fails_closed_without_a_provider(cli, daemon, db) -> None:
    d = daemon()
    parent = manual(cli, name="plain parent", child_credential_policy="downscope")
    kid = child(cli, parent, "success", name="child", payload_message="true")
    ran(cli, db, parent)
    denied = wait_until(lambda: ended(db, kid["id"]), timeout=20, message="the child ended")
    assert d.stop() == 0
    assert denied["status"] == "error"
    assert denied["error_message"] == (
        "Downscope credential policy failed: identity provider (none) not loaded")


def test_an_independent_child_may_not_exceed_its_parent(cli, daemon, db) -> None:
    d = daemon()
    parent = manual(cli, name="parent", identity_trust_level="restricted",
                    child_credential_policy="independent")
    kid = child(cli, parent, "success", name="child", identity_trust_level="autonomous")
    ran(cli, db, parent)
    denied = wait_until(lambda: ended(db, kid["id"]), timeout=20, message="the child ended")
    assert d.stop() == 0
    assert denied["error_message"] == (
        'Independent child trust level "autonomous" exceeds parent trust level "restricted"')


def test_identity_provider_failures_fail_closed(cli, daemon, db, tmp_path) -> None:
    d = daemon(env=provider_env(tmp_path))
    missing = manual(cli, name="missing", identity=blob({"provider": "nope"}))
    bad_scope = manual(cli, name="bad scope", identity=blob({"provider": "mock-stripe", "scope": "bogus"}))
    refused = manual(cli, name="refused", identity=blob(
        {"provider": "mock-stripe", "scope": "full", "presentation": {"mode": "env", "mock_fail": True}}))
    raising = manual(cli, name="raising", identity=blob(
        {"provider": "mock-stripe", "scope": "full", "presentation": {"mode": "env", "mock_raise": True}}))
    results = {job["name"]: ran(cli, db, job) for job in (missing, bad_scope, refused, raising)}
    assert d.stop() == 0
    assert results["missing"]["error_message"] == (
        "Identity resolution failed: identity provider not loaded: nope")
    assert json.loads(results["missing"]["identity_resolved"]) == {
        "provider": "nope", "error": "identity provider not loaded: nope", "transient": False,
        "source": "provider-error"}
    assert results["bad scope"]["error_message"] == "Identity resolution failed: Unknown scope: bogus"
    assert results["refused"]["error_message"] == (
        "Credential materialization failed for provider mock-stripe: provider returned materialized=false")
    assert results["raising"]["error_message"] == (
        "Credential materialization error for provider mock-stripe: vault sealed")
    assert all(r["status"] == "error" for r in results.values())


def test_an_agent_child_inherits_the_auth_profile_and_never_gets_credentials(
    cli, daemon, db, tmp_path, fake_gateway: FakeGateway
) -> None:
    fake_gateway.token = "gateway-token-for-the-test"
    fake_gateway.reply_content = "done"
    d = daemon(env={**provider_env(tmp_path), "OPENCLAW_GATEWAY_URL": fake_gateway.url,
                    "OPENCLAW_GATEWAY_TOKEN": fake_gateway.token})
    parent = manual(cli, name="parent", auth_profile="work-profile",
                    child_credential_policy="inherit")
    kid = add_job(cli, json.dumps({
        "name": "agent child", "session_target": "isolated", "payload_message": "Go",
        "parent_id": parent["id"], "trigger_on": "success", "delivery_mode": "none",
        "origin": "system", "run_timeout_ms": 30000,
        "identity": blob({"provider": "mock-stripe", "scope": "payments"})}))
    ran(cli, db, parent)
    (chat,) = fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    child_run = wait_until(lambda: ended(db, kid["id"]), timeout=20, message="the child ended")
    assert d.stop() == 0
    assert child_run["status"] == "ok", child_run
    assert chat.headers["x-openclaw-auth-profile"] == "work-profile"
    request = json.dumps(chat.headers) + chat.raw_body.decode()
    assert all(key not in request for key in KEYS)
    assert not [e for e in d.events("trust.credentials_materialized") if e["job_id"] == kid["id"]]
    assert json.loads(child_run["identity_resolved"])["principal"] == "stripe:payments"
    assert_no_credentials(db, d, tmp_path)


# -- authorization and proofs ---------------------------------------------------------------


def test_authorization_decisions_and_their_messages(cli, daemon, db, tmp_path) -> None:
    env = provider_env(tmp_path)
    d = daemon(env=env)
    cases = {
        "deny": ({"provider": "mock-policy", "mock_decision": "deny"},
                 "Authorization denied: mock policy says deny"),
        "escalate": ({"provider": "mock-policy", "mock_decision": "escalate"},
                     "Authorization requires escalation: mock policy says escalate"),
        "unsupported": ({"provider": "mock-policy", "mock_decision": "maybe"},
                        'Authorization denied: authorization provider mock-policy returned '
                        'unsupported decision "maybe"'),
        "unloaded": ({"provider": "absent"},
                     "Authorization denied: authorization provider not loaded: absent"),
        "structural deny": ({"decision": "deny", "reason": "not on weekends"},
                            "Authorization denied: not on weekends"),
        "structural escalate": ({"decision": "escalate"},
                                "Authorization requires escalation: explicit escalate in "
                                "authorization policy"),
    }
    jobs = {name: manual(cli, name=name, authorization=blob(policy)) for name, (policy, _) in cases.items()}
    ref_only = manual(cli, name="ref only", authorization_ref="policy://somewhere")
    results = {name: ran(cli, db, job) for name, job in jobs.items()}
    ref_run = ran(cli, db, ref_only)
    assert d.stop() == 0
    for name, (_, message) in cases.items():
        assert results[name]["status"] == "error", name
        assert results[name]["error_message"] == message, name
    assert json.loads(results["escalate"]["authorization_decision"]) == {
        "decision": "escalate", "reason": "mock policy says escalate", "ref": None,
        "source": "provider", "provider": "mock-policy"}
    assert ref_run["error_message"] == (
        "Authorization denied: authorization_ref present but external policy resolution is not yet "
        "implemented; provide an inline authorization blob or remove authorization_ref")


def test_a_permitted_job_runs_and_its_policy_never_sees_the_credentials(cli, daemon, db, tmp_path) -> None:
    env = provider_env(tmp_path)
    marker = tmp_path / "ran"
    d = daemon(env=env)
    job = manual(cli, name="permitted", payload_message=f"touch {marker}",
                 identity=blob({"provider": "mock-stripe", "scope": "full"}),
                 authorization=blob({"provider": "mock-policy", "mock_decision": "permit"}),
                 evidence=blob({"collect": ["stdout"], "retention": "30d"}), evidence_ref="ev://1")
    run = ran(cli, db, job)
    assert d.stop() == 0
    assert run["status"] == "ok" and marker.exists()
    request = json.loads((Path(env["MOCK_STRIPE_MARKERS"]) / "authorize.json").read_text())
    assert request["identity"]["principal"] == "stripe:full"
    assert "credentials" not in request["identity"]["session"]
    assert request["trust"]["decision"] == "permit" and request["jobId"] == job["id"]
    evidence = json.loads(run["evidence_record"])
    assert evidence["evidence_ref"] == "ev://1" and evidence["integrity"] == "none"
    assert evidence["hash"] is None
    assert evidence["payload_summary"]["run_id"] == run["id"]
    assert evidence["payload_summary"]["run_status"] == "ok"
    assert evidence["payload_summary"]["collect"] == ["stdout"]
    assert set(evidence["payload_summary"]["outcome_fields_present"]) == {
        "identity_resolved", "trust_evaluation", "authorization_decision"}
    assert_no_credentials(db, d, tmp_path)


def test_authorization_proofs(cli, daemon, db, tmp_path) -> None:
    d = daemon(env=provider_env(tmp_path))
    valid = manual(cli, name="valid", authorization_proof=blob(
        {"verifier": "mock-verifier", "signature": "valid", "method": "hmac"}))
    invalid = manual(cli, name="invalid", authorization_proof=blob(
        {"verifier": "mock-verifier", "signature": "forged"}))
    structural = manual(cli, name="structural", authorization_proof=blob({"method": "carrier-pigeon"}))
    ref_only = manual(cli, name="ref only", authorization_proof_ref="proof://x")
    results = {job["name"]: ran(cli, db, job) for job in (valid, invalid, structural, ref_only)}
    assert d.stop() == 0
    assert results["valid"]["status"] == "ok"
    assert json.loads(results["valid"]["authorization_proof_verification"]) == {
        "verified": True, "method": "hmac", "ref": None, "source": "provider",
        "provider": "mock-verifier"}
    assert results["invalid"]["error_message"] == (
        "Authorization proof verification failed: signature mismatch")
    assert results["structural"]["error_message"] == (
        "Authorization proof verification failed: unrecognized proof method: carrier-pigeon")
    assert results["ref only"]["error_message"] == (
        "Authorization proof verification failed: authorization_proof is empty; only ref provided")


# -- the loader, in the daemon ---------------------------------------------------------------


def test_the_daemon_refuses_a_world_writable_provider_directory(cli, daemon, db, tmp_path) -> None:
    env = provider_env(tmp_path)
    loads = tmp_path / "loads"
    Path(env["SCHEDULER_PROVIDER_PATH"]).chmod(0o777)
    d = daemon(env={**env, "MOCK_STRIPE_LOADS": str(loads)})
    job = manual(cli, name="needs stripe", identity=blob({"provider": "mock-stripe"}))
    run = ran(cli, db, job)
    assert d.stop() == 0
    (refusal,) = d.events("provider.directory_refused")
    assert refusal["level"] == "error" and "world-writable" in refusal["reason"]
    assert not loads.exists()  # the module was never executed
    assert run["error_message"] == "Identity resolution failed: identity provider not loaded: mock-stripe"


def test_a_relative_provider_path_is_refused_at_start(daemon, tmp_path) -> None:
    d = daemon(env={"SCHEDULER_PROVIDER_PATH": "providers"}, wait=False)
    code = d.proc.wait(20)
    d._reader.join(5)
    assert code != 0
    text = "\n".join(d.lines)
    assert "SCHEDULER_PROVIDER_PATH" in text and "absolute" in text
    assert "Traceback" not in text


def assert_no_credentials(db: Any, d: Any, tmp_path: Path) -> None:
    """No key value in the database file (its WAL too) nor in any daemon log line."""
    for path in tmp_path.glob("scheduler.db*"):
        data = path.read_bytes()
        for key in KEYS:
            assert key.encode() not in data, (path, key)
    logs = "\n".join(d.lines)
    for key in KEYS:
        assert key not in logs
