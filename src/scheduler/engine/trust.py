"""The v0.2 trust gate of a run (features.md §4.1 step 8, §10): before the work, after it.

Before: resolve the identity (through its provider, or from the declaration), apply the child
credential policy, evaluate trust, verify the authorization proof, authorize, and materialise
credentials for a shell job. Each refusal fails closed: :class:`Prepared` carries the
reference's message, the daemon ends the run ``error`` without doing its work, and the store
fires none of its children (Finish.fail_closed). After: the evidence record, the outcomes as run
columns (credentials removed), the provider's cleanup.

Credentials live only in memory, in :class:`Prepared`: never in a column, never in a log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler.engine.providers import Provider, ProviderCallError, ProviderRegistry
from scheduler.models import trust as model
from scheduler.models.enums import ChildCredentialPolicy, SessionTarget
from scheduler.models.records import Job, Run
from scheduler.store.thread import StoreThread
from scheduler.strategies.shell_env import GATEWAY_TOKEN_VAR

IdentityOutcome = model.Identity | model.IdentityFailure


@dataclass
class Outcomes:
    """What the gate found, in the reference's outcome names."""

    identity: IdentityOutcome | None = None
    handoff: model.HandoffSummary | None = None
    trust: model.TrustEvaluation | None = None
    proof: model.ProofVerification | None = None
    authorization: model.AuthorizationDecision | None = None
    evidence: model.EvidenceRecord | None = None
    effective_auth_profile: str | None = None

    def present(self) -> list[str]:
        named = {"identity_resolved": self.identity, "credential_handoff_summary": self.handoff,
                 "trust_evaluation": self.trust, "authorization_proof_verification": self.proof,
                 "authorization_decision": self.authorization, "evidence_record": self.evidence,
                 "effective_auth_profile": self.effective_auth_profile}
        return [name for name, value in named.items() if value is not None]


@dataclass(frozen=True)
class Cleanup:
    provider: Provider
    state: dict[str, Any]  # the session and the materialisation's answer: holds credentials


@dataclass
class Prepared:
    outcomes: Outcomes = field(default_factory=Outcomes)
    refusal: str | None = None  # why the run may not do its work (the run's error message)
    env: dict[str, str] = field(default_factory=dict)  # materialised variables, shell jobs only
    cleanup: Cleanup | None = None


class Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def declares_trust(job: Job) -> bool:
    """Whether the gate has anything to do for ``job``: a v0.2 declaration, or a parent whose
    credential policy applies to it."""
    row = job.row
    return (model.needs_identity(row) or job.parent_id is not None
            or any(row.get(name) is not None for name in (
                "authorization_proof", "authorization_proof_ref", "evidence", "evidence_ref")))


class TrustGate:
    def __init__(self, registry: ProviderRegistry, db: StoreThread, log: Any) -> None:
        self.registry = registry
        self.db = db
        self.log = log

    # -- before the work ---------------------------------------------------------------------

    async def prepare(self, job: Job, run: Run) -> Prepared:
        prepared = Prepared()
        try:
            await self._evaluate(job, run, prepared)
        except Refused as refused:
            prepared.refusal = refused.message
        except Exception as exc:  # the database, a bug: an unfinished evaluation permits nothing
            self.log.exception("trust.evaluation_failed", run_id=run.id, job_id=job.id)
            prepared.refusal = f"Trust evaluation failed: {exc}"
        if prepared.refusal is not None:
            self.log.warning("trust.refused", run_id=run.id, job_id=job.id, reason=prepared.refusal)
            await self.release(job, prepared)
        return prepared

    async def _evaluate(self, job: Job, run: Run, prepared: Prepared) -> None:
        row, out = job.row, prepared.outcomes
        if model.needs_identity(row):
            out.identity = await self._resolve_identity(row)
        if model.has_identity_declaration(row):
            out.handoff = model.summarize_credential_handoff(row)
        if out.handoff is not None and out.handoff.declared and not _is_shell(job):
            raise Refused(model.HANDOFF_SHELL_ONLY)
        if job.parent_id is not None:
            await self._apply_child_policy(job, out)
        if isinstance(out.identity, model.IdentityFailure):
            raise Refused(f"Identity resolution failed: {out.identity.error or 'provider error'}")
        identity = out.identity
        if (model.has_identity_declaration(row) or row.get("contract_required_trust_level")
                or identity is not None):
            out.trust = model.evaluate_trust(row, identity)
            if out.trust.decision == "warn":
                self.log.warning("trust.warning", run_id=run.id, job_id=job.id, reason=out.trust.reason)
            elif out.trust.decision == "deny":
                raise Refused(model.trust_blocked(out.trust))
        await self._verify_proof(row, out)
        await self._authorize(job, run, out)
        if isinstance(identity, model.Identity) and _is_shell(job):
            await self._materialize(job, identity, prepared)

    async def _resolve_identity(self, row: Mapping[str, Any]) -> IdentityOutcome | None:
        request = model.identity_request(row)
        if request is None:
            return model.structural_identity(row)
        provider = self.registry.identity(request.provider)
        if provider is None:
            return model.identity_provider_missing(request.provider)
        try:
            result = await self.registry.call(provider, "resolve_session", request.request(), _ctx())
        except ProviderCallError as exc:
            return model.identity_provider_raised(request.provider, str(exc))
        return model.identity_from_provider(request, result)

    async def _apply_child_policy(self, job: Job, out: Outcomes) -> None:
        assert job.parent_id is not None
        parent = await self.db.run(self.db.store.get_job, job.parent_id)
        if parent is None:
            return
        policy = model.effective_child_policy(job.row, parent.row)
        if policy == ChildCredentialPolicy.NONE:
            out.identity = None  # nothing of the parent's, nor a credential of its own
        elif policy == ChildCredentialPolicy.INHERIT:
            out.effective_auth_profile = parent.auth_profile
        elif policy == ChildCredentialPolicy.DOWNSCOPE:
            out.identity = await self._downscope(job, parent, await self._parent_identity(parent))
        elif policy == ChildCredentialPolicy.INDEPENDENT:
            parent_level = (model.identity_trust_level(await self._parent_identity(parent))
                            or model.job_trust_level(parent.row))
            own = out.identity.trust_level if isinstance(out.identity, model.Identity) else None
            refusal = model.independent_refusal(own, parent_level)
            if refusal is not None:
                raise Refused(refusal)

    async def _parent_identity(self, parent: Job) -> dict[str, Any] | None:
        text = await self.db.run(self.db.store.latest_ok_identity, parent.id)
        return model.parse_json(text).obj

    async def _downscope(self, job: Job, parent: Job,
                         parent_identity: dict[str, Any] | None) -> model.Identity:
        """The child's identity: the parent's session handed off to the child's scope, never at
        a higher trust level. Fails closed on every path."""
        parent_blob = model.parse_json(parent.row.get("identity")).obj
        name = model.provider_of(parent_blob)
        provider = self.registry.identity(name)
        if provider is None or not provider.has("prepare_handoff"):
            raise Refused(model.downscope_failure(name, provider is not None, False))
        assert name is not None
        session = _mapping(model.get_path(parent_identity, "session"))
        if session is None and provider.has("resolve_session"):
            request = {"profile": parent_blob, "instanceId": parent.id, "scope": model.scope_of(parent_blob)}
            try:
                answer = await self.registry.call(provider, "resolve_session", request, _ctx())
            except ProviderCallError as exc:
                self.log.warning("trust.downscope_parent_unresolved", job_id=job.id, error=str(exc))
                answer = None
            if isinstance(answer, Mapping) and answer.get("ok"):
                session = _mapping(answer.get("session"))
        if session is None:
            raise Refused(model.downscope_failure(name, True, True))
        child_blob = model.parse_json(job.row.get("identity")).obj or {}
        handoff = {"target_scope": model.scope_of(child_blob), "parent_profile": parent_blob}
        try:
            result = await self.registry.call(provider, "prepare_handoff", session, handoff, _ctx())
        except ProviderCallError as exc:
            self.log.warning("trust.downscope_failed", job_id=job.id, error=str(exc))
            raise Refused(model.downscope_failure(name, True, True)) from None
        new_session = _mapping(model.get_path(result, "session"))
        if not (isinstance(result, Mapping) and result.get("prepared")) or new_session is None:
            raise Refused(model.downscope_failure(name, True, True))
        parent_level = (model.identity_trust_level(parent_identity)
                        or model.identity_trust_level({"session": session})
                        or model.job_trust_level(parent.row))
        child_level = model.identity_trust_level({"session": new_session})
        if model.elevates(child_level, parent_level):
            self.log.warning("trust.downscope_elevated", job_id=job.id, parent_level=parent_level,
                             child_level=child_level)
            raise Refused(model.downscope_failure(name, True, True))
        return model.downscoped_identity(name, new_session, child_blob)

    async def _verify_proof(self, row: Mapping[str, Any], out: Outcomes) -> None:
        request = model.proof_request(row)
        if isinstance(request, model.ProofRequest):
            out.proof = await self._proof_of(request)
        else:
            out.proof = request
        if out.proof is not None and not out.proof.verified:
            raise Refused(model.proof_failed(out.proof))

    async def _proof_of(self, request: model.ProofRequest) -> model.ProofVerification:
        if request.verifier is None:
            return model.structural_proof(request)
        verifier = self.registry.proof_verifier(request.verifier)
        if verifier is None:
            return model.proof_verifier_missing(request)
        try:
            result = await self.registry.call(verifier, "verify_proof", request.request(), _ctx())
        except ProviderCallError as exc:
            return model.proof_verifier_raised(request, str(exc))
        return model.proof_from_verifier(request, result)

    async def _authorize(self, job: Job, run: Run, out: Outcomes) -> None:
        request = model.authorization_request(job.row)
        if request is None:
            return
        if isinstance(request, model.AuthorizationDecision):
            out.authorization = request
        else:
            out.authorization = await self._decision_of(request, out)
        refusal = model.authorization_refusal(out.authorization)
        if refusal is not None:
            raise Refused(refusal)
        if out.authorization.advisory:
            self.log.warning("trust.authorization_advisory", run_id=run.id, job_id=job.id,
                             reason=out.authorization.reason)

    async def _decision_of(self, request: model.AuthorizationRequest,
                           out: Outcomes) -> model.AuthorizationDecision:
        identity = out.identity if isinstance(out.identity, model.Identity) else None
        if request.provider is None:
            return model.structural_authorization(request, identity, out.trust)
        provider = self.registry.authorization(request.provider)
        if provider is None:
            return model.authorization_provider_missing(request)
        try:
            result = await self.registry.call(provider, "authorize",
                                              request.request(out.identity, out.trust), _ctx())
        except ProviderCallError as exc:
            return model.authorization_provider_raised(request, str(exc))
        return model.authorization_from_provider(request, result)

    async def _materialize(self, job: Job, identity: model.Identity, prepared: Prepared) -> None:
        """Credentials of a provider session become environment variables of the shell job.
        With a declared presentation, any failure refuses the run; without, it is only logged."""
        if identity.source != model.PROVIDER or not identity.session:
            return
        name = identity.provider
        provider = self.registry.identity(name)
        presentation = model.presentation_of(job.row)
        if provider is None or not provider.has("materialize"):
            if presentation:
                raise Refused(model.materialization_unsupported(name))
            return
        try:
            result = await self.registry.call(provider, "materialize", dict(identity.session),
                                              presentation, _ctx())
        except ProviderCallError as exc:
            if presentation:
                raise Refused(model.materialization_raised(name, str(exc))) from None
            self.log.warning("trust.materialize_failed", job_id=job.id, provider=name, error=str(exc))
            return
        if not (isinstance(result, Mapping) and result.get("materialized")):
            if presentation:
                raise Refused(model.materialization_refused(name))
            return
        prepared.env = _env_vars(result.get("env_vars"), self.log, job.id)
        if result.get("cleanup_required"):
            prepared.cleanup = Cleanup(provider, {"session": dict(identity.session), **result})

    # -- after the work ----------------------------------------------------------------------

    async def columns(self, job: Job, run: Run, prepared: Prepared, status: str) -> dict[str, Any]:
        """The run columns of the outcomes: evidence for a run that did its work, and the
        resolved identity with its session's credentials removed."""
        out = prepared.outcomes
        if prepared.refusal is None:
            created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            out.evidence = model.generate_evidence(job.row, run.id, status, out.present(), created)
        identity_json: dict[str, Any] | None = None
        if isinstance(out.identity, model.Identity):
            identity_json = out.identity.as_json(session=await self._described(out.identity))
        elif out.identity is not None:
            identity_json = out.identity.as_json()
        values = {"identity_resolved": identity_json, "credential_handoff_summary": out.handoff,
                  "trust_evaluation": out.trust, "authorization_proof_verification": out.proof,
                  "authorization_decision": out.authorization, "evidence_record": out.evidence}
        return {name: _json_text(value) for name, value in values.items() if value is not None}

    async def _described(self, identity: model.Identity) -> dict[str, Any]:
        """The session as the provider describes it without secrets (``describe_session``),
        else without its ``credentials``."""
        if identity.source != model.PROVIDER or not identity.session:
            return {}
        provider = self.registry.identity(identity.provider)
        if provider is not None and provider.has("describe_session"):
            try:
                described = await self.registry.call(provider, "describe_session",
                                                     dict(identity.session), _ctx())
            except ProviderCallError as exc:
                self.log.warning("trust.describe_failed", provider=identity.provider, error=str(exc))
            else:
                if isinstance(described, Mapping):
                    return dict(described)
        return model.without_credentials(identity.session)

    async def release(self, job: Job, prepared: Prepared) -> None:
        """The provider's cleanup of materialised credentials (its failure is only logged)."""
        cleanup, prepared.cleanup = prepared.cleanup, None
        if cleanup is None or not cleanup.provider.has("cleanup"):
            return
        try:
            await self.registry.call(cleanup.provider, "cleanup", cleanup.state, _ctx())
        except ProviderCallError as exc:
            self.log.warning("trust.cleanup_failed", job_id=job.id, provider=cleanup.provider.name,
                             error=str(exc))


def _is_shell(job: Job) -> bool:
    return job.session_target == SessionTarget.SHELL and not job.is_watchdog


def _ctx() -> dict[str, Any]:
    """What every provider call gets besides its arguments (the reference's ``{env, cwd}``).
    The environment is the daemon's own minus the gateway token: a plugin has no use for it."""
    return {"env": {k: v for k, v in os.environ.items() if k != GATEWAY_TOKEN_VAR},
            "cwd": os.getcwd()}


def _mapping(value: object) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _env_vars(value: object, log: Any, job_id: str) -> dict[str, str]:
    """The materialised variables that can be environment variables (names only are logged)."""
    if not isinstance(value, Mapping):
        return {}
    kept: dict[str, str] = {}
    for name, text in value.items():
        if (isinstance(name, str) and name and "=" not in name and "\0" not in name
                and name != GATEWAY_TOKEN_VAR and isinstance(text, str) and "\0" not in text):
            kept[name] = text
        else:
            log.warning("trust.env_var_dropped", job_id=job_id, name=str(name)[:100])
    log.info("trust.credentials_materialized", job_id=job_id, variables=sorted(kept))
    return kept


def _json_text(value: Any) -> str:
    data = value if isinstance(value, dict) else value.as_json()
    return json.dumps(data, ensure_ascii=False, default=str)
