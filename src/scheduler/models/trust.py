"""The v0.2 trust model (features.md §10): trust levels, identity, trust evaluation, proofs,
authorization, evidence, credential handoff and the child credential policies.

Pure functions over a job's stored row (JSON declarations as text) and plain values. Nothing
here calls a provider plugin: where a declaration names a provider, a ``*Request`` says what to
ask it, and a function turns its answer (or its absence, or its failure) into the outcome. The
engine (engine/trust.py) makes the calls and enforces the outcomes. Every outcome is a typed
record whose ``as_json()`` is the shape the reference persists on the run, with its messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from scheduler.models.enums import ChildCredentialPolicy, TrustLevel

TRUST_LEVELS: Final[tuple[str, ...]] = tuple(level.value for level in TrustLevel)
KNOWN_PROOF_METHODS: Final = frozenset(
    {"signed-jwt", "hmac", "api-key", "bearer", "mtls", "oidc", "saml", "custom"}
)
# The scalar identity columns; any of them set declares an identity.
IDENTITY_SCALARS: Final = (
    "identity_principal", "identity_run_as", "identity_attestation", "identity_ref",
    "identity_subject_kind", "identity_subject_principal", "identity_trust_level",
    "identity_delegation_mode",
)
# The run columns the outcomes are persisted in (reference §14.2).
OUTCOME_COLUMNS: Final = (
    "identity_resolved", "trust_evaluation", "authorization_decision",
    "authorization_proof_verification", "evidence_record", "credential_handoff_summary",
)
PROVIDER: Final = "provider"
PROVIDER_ERROR: Final = "provider-error"

Decision = Literal["permit", "warn", "deny"]
AuthDecision = Literal["permit", "deny", "escalate"]
Json = dict[str, Any]


# -- trust levels ----------------------------------------------------------------------------


def _trust_index(level: object) -> int:
    return TRUST_LEVELS.index(level) if isinstance(level, str) and level in TRUST_LEVELS else -1


def compare_trust_levels(a: object, b: object) -> int:
    """-1, 0 or 1 as ``a`` is lower than, equal to or higher than ``b``. Unknown levels rank
    below every known one; two unknown levels are equal."""
    ai, bi = _trust_index(a), _trust_index(b)
    if ai == bi:
        return 0
    return -1 if ai < bi else 1


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """A JSON declaration column: ``value`` when it parsed, ``error`` (the parser's message)
    when it did not; both None when the column is empty."""

    value: Any = None
    error: str | None = None

    @property
    def obj(self) -> dict[str, Any] | None:
        return self.value if isinstance(self.value, dict) else None


def parse_json(text: object) -> Parsed:
    if text is None or text == "":
        return Parsed()
    if not isinstance(text, str):
        return Parsed(value=text)
    try:
        return Parsed(value=json.loads(text))
    except (ValueError, RecursionError) as exc:
        return Parsed(error=str(exc))


def _text(value: object) -> str | None:
    """A declared value the way the reference's ``a || b`` sees it: a non-empty string, else
    absent (non-string values are not levels, principals or modes)."""
    return value if isinstance(value, str) and value else None


def _first(*values: object) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def get_path(mapping: object, *path: str) -> object:
    """``mapping[path[0]][path[1]]…``, None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _blank(value: object) -> bool:
    return value is None or value == ""


# -- identity (§10.2) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A resolved identity: structural (from the declaration) or from a provider's session."""

    subject_kind: str
    principal: str | None
    trust_level: str | None
    delegation_mode: str | None
    raw: Any = None
    provider: str | None = None
    session: Mapping[str, Any] | None = None  # provider sessions only; carries credentials
    source: str | None = None  # "provider", or None for a structural identity

    def as_json(self, session: Mapping[str, Any] | None = None) -> Json:
        """The reference's shape; ``session`` replaces the live one (a redacted copy)."""
        base: Json = {"subject_kind": self.subject_kind, "principal": self.principal,
                      "trust_level": self.trust_level, "delegation_mode": self.delegation_mode,
                      "raw": self.raw}
        if self.source != PROVIDER:
            return base
        return {"provider": self.provider, "session": dict(session or self.session or {}),
                "source": PROVIDER, **base}


@dataclass(frozen=True)
class IdentityFailure:
    """A provider-backed identity that could not be resolved: the run fails closed."""

    provider: str
    error: str
    transient: bool

    source: str = PROVIDER_ERROR

    def as_json(self) -> Json:
        return {"provider": self.provider, "error": self.error, "transient": self.transient,
                "source": PROVIDER_ERROR}


@dataclass(frozen=True)
class IdentityRequest:
    """The declaration names a provider: ask it ``resolve_session`` with these."""

    provider: str
    profile: dict[str, Any]
    instance_id: str
    scope: str | None

    def request(self) -> Json:
        return {"profile": self.profile, "instanceId": self.instance_id, "scope": self.scope}


def has_identity_declaration(job: Mapping[str, Any]) -> bool:
    return any(job.get(name) is not None for name in ("identity", *IDENTITY_SCALARS))


def needs_identity(job: Mapping[str, Any]) -> bool:
    """Identity is resolved when the job declares one, a trust requirement or an authorization."""
    return (has_identity_declaration(job) or bool(job.get("contract_required_trust_level"))
            or bool(job.get("authorization")) or bool(job.get("authorization_ref")))


def provider_of(blob: object) -> str | None:
    """The provider an identity declaration names (``provider`` or ``auth.provider``)."""
    return _first(get_path(blob, "provider"), get_path(blob, "auth", "provider"))


def scope_of(blob: object) -> str | None:
    scopes = get_path(blob, "auth", "scopes")
    first = scopes[0] if isinstance(scopes, list) and scopes else None
    return _first(get_path(blob, "scope"), first)


def identity_request(job: Mapping[str, Any]) -> IdentityRequest | None:
    """The provider call a job's identity declaration asks for, or None (structural)."""
    blob = parse_json(job.get("identity")).obj
    name = provider_of(blob)
    if blob is None or name is None:
        return None
    return IdentityRequest(name, blob, str(job.get("id") or ""), scope_of(blob))


def identity_from_session(name: str, session: Mapping[str, Any], blob: object) -> Identity:
    return Identity(
        subject_kind=_first(get_path(session, "subject", "kind")) or "unknown",
        principal=_first(get_path(session, "subject", "principal")),
        trust_level=_first(get_path(session, "trust", "effective_level"), get_path(blob, "trust", "level")),
        delegation_mode=_first(get_path(blob, "subject", "delegation_mode")),
        raw=blob, provider=name, session=session, source=PROVIDER,
    )


def identity_from_provider(request: IdentityRequest, result: object) -> Identity | IdentityFailure:
    """The answer of ``resolve_session``: ``{ok: true, session}`` or ``{ok: false, error, transient}``."""
    if not isinstance(result, Mapping) or not result.get("ok"):
        error = get_path(result, "error")
        transient = get_path(result, "transient")
        return IdentityFailure(request.provider, str(error) if error else "provider error",
                               transient if isinstance(transient, bool) else True)
    session = result.get("session")
    return identity_from_session(request.provider, session if isinstance(session, Mapping) else {},
                                 request.profile)


def identity_provider_missing(name: str) -> IdentityFailure:
    return IdentityFailure(name, f"identity provider not loaded: {name}", transient=False)


def identity_provider_raised(name: str, error: str) -> IdentityFailure:
    return IdentityFailure(name, error, transient=True)


def structural_identity(job: Mapping[str, Any]) -> Identity | None:
    """The identity a job declares without a provider: the JSON blob's fields, falling back to
    the scalar columns; None when nothing is declared."""
    text = job.get("identity")
    parsed = parse_json(text)
    if parsed.error is not None:
        raw = {"error": f"identity JSON parse failed: {parsed.error}"}
        scalar = _from_scalars(job)
        if scalar is None:
            return Identity("unknown", None, None, None, raw=raw)
        return Identity(scalar.subject_kind, scalar.principal, scalar.trust_level,
                        scalar.delegation_mode, raw=raw)
    blob = parsed.obj
    if blob is None:
        return _from_scalars(job)
    return Identity(
        subject_kind=_first(blob.get("subject_kind"), blob.get("identity_subject_kind"),
                            job.get("identity_subject_kind")) or "unknown",
        principal=_first(blob.get("principal"), blob.get("identity_principal"),
                         job.get("identity_principal")),
        trust_level=_first(blob.get("trust_level"), blob.get("identity_trust_level"),
                           job.get("identity_trust_level")),
        delegation_mode=_first(blob.get("delegation_mode"), blob.get("identity_delegation_mode"),
                               job.get("identity_delegation_mode")),
        raw=blob,
    )


def _from_scalars(job: Mapping[str, Any]) -> Identity | None:
    if all(job.get(name) is None for name in IDENTITY_SCALARS):
        return None
    return Identity(
        subject_kind=_first(job.get("identity_subject_kind")) or "unknown",
        principal=_first(job.get("identity_principal"), job.get("identity_subject_principal")),
        trust_level=_first(job.get("identity_trust_level")),
        delegation_mode=_first(job.get("identity_delegation_mode")),
    )


# -- credential handoff (§10.3) --------------------------------------------------------------

HANDOFF_SHELL_ONLY: Final = "Credential handoff presentation is only supported for shell jobs"


@dataclass(frozen=True)
class HandoffSummary:
    mode: str | None
    bindings_count: int
    cleanup_required: bool
    error: str | None = None

    @property
    def declared(self) -> bool:
        return self.mode is not None or self.bindings_count > 0

    def as_json(self) -> Json:
        out: Json = {"mode": self.mode, "bindings_count": self.bindings_count,
                     "cleanup_required": self.cleanup_required}
        if self.error is not None:
            out["error"] = self.error
        return out


def presentation_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """The identity declaration's ``presentation`` block ({} when none)."""
    presentation = get_path(parse_json(job.get("identity")).obj, "presentation")
    return presentation if isinstance(presentation, dict) else {}


def summarize_credential_handoff(job: Mapping[str, Any]) -> HandoffSummary | None:
    parsed = parse_json(job.get("identity"))
    if parsed.error is not None:
        return HandoffSummary(None, 0, False, error=f"identity JSON parse failed: {parsed.error}")
    blob = parsed.obj
    if blob is None:
        return None
    plan = blob.get("presentation") or blob.get("credential_handoff")
    if not isinstance(plan, dict):
        return None
    mode = _text(plan.get("mode"))
    listed = plan.get("bindings")
    bindings: list[Any] = listed if isinstance(listed, list) else []
    cleanup = (plan.get("cleanup") is True or plan.get("cleanup_required") is True
               or any(isinstance(b, dict) and b.get("cleanup") is True for b in bindings))
    if mode is None and not bindings:
        return None
    return HandoffSummary(mode, len(bindings), cleanup)


# -- child credential policy (§10.4) ---------------------------------------------------------

DOWNSCOPE_NOT_APPLIED: Final = "parent session unavailable or handoff did not produce a downscoped session"


def effective_child_policy(child: Mapping[str, Any], parent: Mapping[str, Any]) -> str:
    return (_text(child.get("child_credential_policy"))
            or _text(parent.get("child_credential_policy")) or ChildCredentialPolicy.NONE.value)


def identity_trust_level(identity: object) -> str | None:
    """The trust level anything identity-shaped carries (a resolved identity, a session, a
    declaration), looked for where the reference looks."""
    if not isinstance(identity, Mapping):
        return None
    return _first(
        identity.get("trust_level"), get_path(identity, "trust", "effective_level"),
        get_path(identity, "trust", "level"), get_path(identity, "session", "trust", "effective_level"),
        get_path(identity, "session", "trust", "level"), get_path(identity, "raw", "trust_level"),
        get_path(identity, "raw", "trust", "effective_level"), get_path(identity, "raw", "trust", "level"),
    )


def job_trust_level(job: Mapping[str, Any]) -> str | None:
    return identity_trust_level(parse_json(job.get("identity")).obj) or _text(
        job.get("identity_trust_level"))


def elevates(child_level: str | None, parent_level: str | None) -> bool:
    """Both known and the child's is higher: a handoff or an independent child escalated."""
    return bool(child_level and parent_level and compare_trust_levels(child_level, parent_level) > 0)


def downscope_failure(provider_name: str | None, loaded: bool, can_hand_off: bool) -> str:
    if not loaded:
        return f"Downscope credential policy failed: identity provider {provider_name or '(none)'} not loaded"
    if not can_hand_off:
        return f"Downscope credential policy failed: provider {provider_name} does not support prepareHandoff"
    return f"Downscope credential policy failed: {DOWNSCOPE_NOT_APPLIED}"


def independent_refusal(child_level: str | None, parent_level: str | None) -> str | None:
    if not elevates(child_level, parent_level):
        return None
    return f'Independent child trust level "{child_level}" exceeds parent trust level "{parent_level}"'


def downscoped_identity(name: str, session: Mapping[str, Any], child_blob: object) -> Identity:
    """The child's identity after a successful handoff (its trust level: the new session's)."""
    return Identity(
        subject_kind=_first(get_path(session, "subject", "kind")) or "unknown",
        principal=_first(get_path(session, "subject", "principal")),
        trust_level=identity_trust_level({"session": session}),
        delegation_mode=None, raw=child_blob, provider=name, session=session, source=PROVIDER,
    )


# -- trust evaluation (§10.5) ----------------------------------------------------------------


@dataclass(frozen=True)
class TrustEvaluation:
    effective_level: str | None
    required_level: str | None
    decision: Decision
    reason: str

    def as_json(self) -> Json:
        return {"effective_level": self.effective_level, "required_level": self.required_level,
                "decision": self.decision, "reason": self.reason}


def normalized_enforcement(value: object) -> str:
    """advisory → warn, strict → block (agentcli's words and the runtime's), default none."""
    text = _text(value) or "none"
    return {"advisory": "warn", "strict": "block"}.get(text, text)


def _by_enforcement(enforcement: str, effective: str | None, required: str, reason: str,
                    *, none_reason: str | None = None) -> TrustEvaluation:
    if enforcement == "block":
        return TrustEvaluation(effective, required, "deny", reason)
    if enforcement == "warn":
        return TrustEvaluation(effective, required, "warn", reason)
    return TrustEvaluation(effective, required, "permit", none_reason or reason)


def evaluate_trust(job: Mapping[str, Any], identity: Identity | None) -> TrustEvaluation:
    required = _text(job.get("contract_required_trust_level"))
    own_level = identity.trust_level if identity is not None else None
    if required is None:
        return TrustEvaluation(own_level, None, "permit", "no trust requirement declared")
    effective = own_level or _text(job.get("identity_trust_level"))
    if _trust_index(required) < 0:
        return TrustEvaluation(effective, required, "permit",
                               f"unrecognized required trust level: {required}")
    enforcement = normalized_enforcement(job.get("contract_trust_enforcement"))
    if effective is None:
        return _by_enforcement(enforcement, None, required,
                               f"no trust level declared; enforcement is {enforcement}")
    if _trust_index(effective) < 0:
        return _by_enforcement(enforcement, effective, required,
                               f"unrecognized effective trust level: {effective}")
    if _trust_index(effective) >= _trust_index(required):
        return TrustEvaluation(effective, required, "permit", "trust level meets or exceeds requirement")
    below = f"trust level {effective} is below required {required}"
    return _by_enforcement(enforcement, effective, required, below,
                           none_reason=f"{below}; enforcement is none")


def trust_blocked(evaluation: TrustEvaluation) -> str:
    return f"Trust enforcement blocked dispatch: {evaluation.reason}"


# -- authorization proof (§10.6) -------------------------------------------------------------


@dataclass(frozen=True)
class ProofVerification:
    verified: bool
    method: str | None
    ref: str | None
    error: str | None = None
    source: str | None = None
    provider: str | None = None

    def as_json(self) -> Json:
        out: Json = {"verified": self.verified, "method": self.method, "ref": self.ref}
        out.update({k: v for k, v in (("error", self.error), ("source", self.source),
                                      ("provider", self.provider)) if v is not None})
        return out


@dataclass(frozen=True)
class ProofRequest:
    """An inline proof object: verified by ``verifier`` when it names one, else structurally."""

    proof: dict[str, Any]
    method: str | None
    ref: str | None
    verifier: str | None
    job_id: str

    def request(self) -> Json:
        return {"proof": self.proof, "ref": self.ref, "jobId": self.job_id}


def proof_request(job: Mapping[str, Any]) -> ProofVerification | ProofRequest | None:
    """None when no proof is declared; a final verdict when the declaration alone decides."""
    text, ref = job.get("authorization_proof"), _text(job.get("authorization_proof_ref"))
    if text is None and job.get("authorization_proof_ref") is None:
        return None
    if _blank(text):
        return ProofVerification(False, None, ref, "authorization_proof is empty; only ref provided")
    parsed = parse_json(text)
    if parsed.error is not None:
        return ProofVerification(False, None, ref,
                                 f"authorization_proof JSON parse failed: {parsed.error}")
    blob = parsed.obj
    if blob is None:
        return ProofVerification(False, None, ref, "authorization_proof must be a JSON object")
    return ProofRequest(blob, _text(blob.get("method")), _first(blob.get("ref"), ref),
                        _first(blob.get("verifier"), blob.get("provider")), str(job.get("id") or ""))


def structural_proof(request: ProofRequest) -> ProofVerification:
    """No cryptographic check: a known ``method`` is all the structural rule asks."""
    if request.method is None:
        return ProofVerification(False, None, request.ref,
                                 'authorization_proof missing required "method" field')
    if request.method not in KNOWN_PROOF_METHODS:
        return ProofVerification(False, request.method, request.ref,
                                 f"unrecognized proof method: {request.method}")
    return ProofVerification(True, request.method, request.ref)


def proof_verifier_missing(request: ProofRequest) -> ProofVerification:
    return ProofVerification(False, request.method, request.ref,
                             f"proof verifier not loaded: {request.verifier}", PROVIDER_ERROR,
                             request.verifier)


def proof_verifier_raised(request: ProofRequest, error: str) -> ProofVerification:
    return ProofVerification(False, request.method, request.ref, error, PROVIDER_ERROR,
                             request.verifier)


def proof_from_verifier(request: ProofRequest, result: object) -> ProofVerification:
    error = get_path(result, "error")
    return ProofVerification(bool(get_path(result, "verified")), request.method, request.ref,
                             str(error) if error else None, PROVIDER, request.verifier)


def proof_failed(verification: ProofVerification) -> str:
    return ("Authorization proof verification failed: "
            + (verification.error or "verification returned false"))


# -- authorization (§10.7) -------------------------------------------------------------------

AUTHORIZATION_DECISIONS: Final = ("permit", "deny", "escalate")
REF_ONLY_REASON: Final = (
    "authorization_ref present but external policy resolution is not yet implemented; provide "
    "an inline authorization blob or remove authorization_ref"
)


@dataclass(frozen=True)
class AuthorizationDecision:
    decision: AuthDecision
    reason: str
    ref: str | None
    source: str | None = None
    provider: str | None = None
    advisory: bool = False

    def as_json(self) -> Json:
        out: Json = {"decision": self.decision, "reason": self.reason, "ref": self.ref}
        out.update({k: v for k, v in (("source", self.source), ("provider", self.provider))
                    if v is not None})
        if self.advisory:
            out["advisory"] = True
        return out


@dataclass(frozen=True)
class AuthorizationRequest:
    policy: dict[str, Any]
    ref: str | None
    provider: str | None
    job_id: str

    def request(self, identity: Identity | IdentityFailure | None,
                trust: TrustEvaluation | None) -> Json:
        """What ``authorize`` is given: the identity without its session's credentials (a
        policy decides on who and how trusted, never on the secret itself)."""
        shown = None
        if isinstance(identity, Identity):
            shown = identity.as_json(session=without_credentials(identity.session))
        elif identity is not None:
            shown = identity.as_json()
        return {"policy": self.policy, "identity": shown,
                "trust": None if trust is None else trust.as_json(),
                "ref": self.ref, "jobId": self.job_id}


def authorization_request(job: Mapping[str, Any]) -> AuthorizationDecision | AuthorizationRequest | None:
    text, ref = job.get("authorization"), _text(job.get("authorization_ref"))
    if text is None and job.get("authorization_ref") is None:
        return None
    if _blank(text):
        return AuthorizationDecision("deny", REF_ONLY_REASON, ref)
    parsed = parse_json(text)
    if parsed.error is not None:
        return AuthorizationDecision("deny", f"authorization JSON parse failed: {parsed.error}", ref)
    blob = parsed.obj
    if blob is None:
        return AuthorizationDecision("deny", "authorization must be a JSON object", ref)
    return AuthorizationRequest(blob, _first(blob.get("ref"), ref),
                                _first(blob.get("provider"), blob.get("authorization_provider")),
                                str(job.get("id") or ""))


def structural_authorization(request: AuthorizationRequest, identity: Identity | None,
                             trust: TrustEvaluation | None) -> AuthorizationDecision:
    policy, ref = request.policy, request.ref
    reason = _text(policy.get("reason"))
    if policy.get("decision") == "deny":
        return AuthorizationDecision("deny", reason or "explicit deny in authorization policy", ref)
    if policy.get("decision") == "escalate":
        return AuthorizationDecision("escalate", reason or "explicit escalate in authorization policy", ref)
    if policy.get("depends_on_trust") is not False and trust is not None and trust.decision == "deny":
        return AuthorizationDecision("deny", f"trust evaluation denied: {trust.reason}", ref)
    if policy.get("requires_identity") and identity is None:
        return AuthorizationDecision("deny", "authorization requires identity but none was resolved", ref)
    return AuthorizationDecision(
        "permit", reason or "authorization policy permits (structural check only)", ref)


def authorization_provider_missing(request: AuthorizationRequest) -> AuthorizationDecision:
    return AuthorizationDecision("deny", f"authorization provider not loaded: {request.provider}",
                                 request.ref, PROVIDER_ERROR, request.provider)


def authorization_provider_raised(request: AuthorizationRequest, error: str) -> AuthorizationDecision:
    return AuthorizationDecision("deny", f"authorization provider error: {error}", request.ref,
                                 PROVIDER_ERROR, request.provider)


def authorization_from_provider(request: AuthorizationRequest, result: object) -> AuthorizationDecision:
    """Only permit, deny and escalate are decisions; anything else denies, saying why."""
    name = request.provider
    raw = get_path(result, "decision")
    raw_text = raw if isinstance(raw, str) else None
    advisory = get_path(result, "advisory") is True
    if raw_text in AUTHORIZATION_DECISIONS:
        decision: AuthDecision = raw_text  # type: ignore[assignment]
        reason = _text(get_path(result, "reason")) or f"provider {name} returned {decision}"
    elif raw_text is None:
        decision, reason = "deny", f"authorization provider {name} returned no decision"
    else:
        decision, reason = "deny", f'authorization provider {name} returned unsupported decision "{raw_text}"'
    return AuthorizationDecision(decision, reason, request.ref, PROVIDER, name, advisory=advisory)


def authorization_refusal(decision: AuthorizationDecision) -> str | None:
    if decision.decision == "deny":
        return f"Authorization denied: {decision.reason}"
    if decision.decision == "escalate":
        return f"Authorization requires escalation: {decision.reason or 'provider requested escalation'}"
    return None


# -- materialisation (§10.8) -----------------------------------------------------------------


def materialization_refused(name: str | None) -> str:
    return (f"Credential materialization failed for provider {name}: provider returned "
            "materialized=false")


def materialization_raised(name: str | None, error: str) -> str:
    return f"Credential materialization error for provider {name}: {error}"


def materialization_unsupported(name: str | None) -> str:
    return (f"Job declares credential presentation but provider {name or '(none)'} does not "
            "support materialization")


def without_credentials(session: Mapping[str, Any] | None) -> dict[str, Any]:
    """A session copy without its ``credentials`` (when the provider cannot describe it)."""
    return {k: v for k, v in (session or {}).items() if k != "credentials"}


# -- evidence (§10.9) ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceRecord:
    """A metadata envelope: no hash binds it to the run's output (``integrity: none``)."""

    evidence_ref: str | None
    created_at: str
    payload_summary: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> Json:
        return {"evidence_ref": self.evidence_ref, "created_at": self.created_at, "hash": None,
                "integrity": "none", "payload_summary": self.payload_summary}


def generate_evidence(job: Mapping[str, Any], run_id: str, status: str,
                      outcomes_present: list[str], created_at: str) -> EvidenceRecord | None:
    text, ref = job.get("evidence"), _text(job.get("evidence_ref"))
    if text is None and job.get("evidence_ref") is None:
        return None
    parsed = parse_json(text)
    if parsed.error is not None:
        return EvidenceRecord(ref, created_at, {"error": f"evidence JSON parse failed: {parsed.error}"})
    blob = parsed.obj or {}
    summary: dict[str, Any] = {key: blob[key] for key in ("collect", "retention", "format")
                               if blob.get(key)}
    summary.update(run_id=run_id, run_status=status, outcome_fields_present=outcomes_present)
    return EvidenceRecord(_first(blob.get("ref"), ref), created_at, summary)
