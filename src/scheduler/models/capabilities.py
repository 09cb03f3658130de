"""What ``openclaw-scheduler capabilities`` advertises: the reference's keys, with values true of
this build (docs/cli.md, docs/trust.md).

This is the one table to change when a feature lands. Agents (agentcli) read it to decide which
v0.2 fields a scheduler honours, so a ``True`` here must mean the runtime does it.
"""

from __future__ import annotations

from typing import Final

HANDOFF_VERSION: Final = "2"

# Implemented on this branch (the runtime does what the value says).
RUNTIME_FEATURES: Final[dict[str, str | bool]] = {
    "approvals": "runtime",  # approval_required gates runs (docs/workflows.md)
    "model_policy": "model+thinking",  # payload_model sent; payload_thinking as the prompt note
    "execution_intent": "runtime",  # the plan/read-only prompt note
    "output_hints": "runtime",  # output_*_limit_bytes, offload, trim (docs/jobs.md)
    "timeout_support": "runtime",  # run_timeout_ms, payload_timeout_seconds
    "context_retrieval": "runtime",  # prior-run context in the prompt
    "runtime_execution": True,
    "identity_declaration": True,  # identity fields validated and stored
}

# The v0.2 trust runtime (engine/trust.py, models/trust.py; docs/trust.md). Delegation chains are
# not validated (a provider's session may report its own delegation_validation; nothing checks
# it), as in the reference.
TRUST_FEATURES: Final[dict[str, bool]] = {
    "runtime_identity_resolution": True,
    "trust_evaluation": True,
    "authorization_proof_verification": True,
    "authorization_hook": True,
    "evidence_generation": True,
    "delegation_validation": False,
    "credential_handoff": True,
    "audit_export": True,  # the v0.2 outcome columns on every run (runs get --json)
}

# Ours, beyond the reference's keys (its consumers parse JSON and ignore keys they do not know).
# contract_network is filled in at run time: "namespace" where a network namespace can be made
# here, "refused" where it cannot (such jobs then fail, never run with network).
COST_CAP_MODE: Final = "when-reported"  # enforced when the gateway's reply carries a cost


def features(contract_network: str) -> dict[str, str | bool]:
    """Every feature, in the reference's order, then ours."""
    return {**RUNTIME_FEATURES, **TRUST_FEATURES, "contract_network": contract_network,
            "contract_max_cost_usd": COST_CAP_MODE}
