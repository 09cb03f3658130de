"""``openclaw-scheduler capabilities``: the reference's shape, with values true of this build."""

from __future__ import annotations

import json
import sys

import pytest

from scheduler import __version__
from scheduler.models.capabilities import RUNTIME_FEATURES, TRUST_FEATURES

# The reference's feature keys, in its order (cli.js `capabilities`).
REFERENCE_KEYS = [
    "approvals", "model_policy", "execution_intent", "output_hints", "timeout_support",
    "context_retrieval", "runtime_execution", "identity_declaration", "runtime_identity_resolution",
    "trust_evaluation", "authorization_proof_verification", "authorization_hook",
    "evidence_generation", "delegation_validation", "credential_handoff", "audit_export",
]


@pytest.mark.parametrize("json_mode", [True, False])
def test_the_reference_shape_in_json_with_or_without_the_flag(cli, json_mode: bool) -> None:
    code, _, stdout, stderr = cli("capabilities", json_mode=json_mode)
    assert code == 0, stderr
    out = json.loads(stdout)
    assert list(out) == ["scheduler_version", "schema_version", "handoff_version", "features"]
    assert out["scheduler_version"] == __version__
    assert out["schema_version"] == 23  # the reference's: MAX(version) of schema_migrations
    assert out["handoff_version"] == "2"
    features = out["features"]
    assert list(features)[:len(REFERENCE_KEYS)] == REFERENCE_KEYS
    assert features["runtime_execution"] is True and features["identity_declaration"] is True
    assert features["delegation_validation"] is False
    assert features["contract_max_cost_usd"] == "when-reported"
    assert {k: features[k] for k in TRUST_FEATURES} == TRUST_FEATURES
    assert {k: features[k] for k in RUNTIME_FEATURES} == RUNTIME_FEATURES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux-only")
def test_contract_network_says_whether_a_namespace_can_be_made_here(cli) -> None:
    code, out, _, _ = cli("capabilities")
    assert code == 0 and out["features"]["contract_network"] == "namespace"
    code, out, _, _ = cli("capabilities", env={"SCHEDULER_NETWORK_ISOLATION": "off"})
    assert code == 0 and out["features"]["contract_network"] == "refused"


def test_an_unusable_database_is_one_line_and_a_non_zero_exit(cli, tmp_path) -> None:
    code, out, stdout, stderr = cli("capabilities", env={"SCHEDULER_DB": str(tmp_path)})
    assert code != 0
    assert out == {"ok": False, "error": f"cannot open {tmp_path}: check that its directory exists "
                   "and is writable"}
    code, _, stdout, stderr = cli("capabilities", json_mode=False, env={"SCHEDULER_DB": str(tmp_path)})
    assert code != 0 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr


def test_extra_arguments_are_refused(cli) -> None:
    code, out, _, _ = cli("capabilities", "now")
    assert code != 0 and "usage: openclaw-scheduler capabilities" in out["error"]
