"""Job spec validation, normalisation, insert rows and next-run derivation (features.md §2.1-2.4).

Rule numbers in test names refer to the list in features.md §2.3.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.cron import NEVER_SENTINEL
from scheduler.errors import ValidationError
from scheduler.models.fields import JOB_COLUMNS, JOB_FIELD_RULES
from scheduler.models.job import (
    SCHEDULE_CHANGE_FIELDS,
    derive_next_run_at,
    new_job_row,
    update_needs_new_next_run,
)
from scheduler.models.schemas import DISPATCH_SCHEMA, JOB_SCHEMA, RUN_SCHEMA
from scheduler.models.validation import validate_job_spec

NOW = datetime(2026, 1, 15, 12, 0, 30, tzinfo=UTC)

BASE: dict[str, Any] = {
    "name": "daily report",
    "payload_message": "Summarise yesterday",
    "schedule_cron": "0 9 * * *",
    "run_timeout_ms": 60000,
    "origin": "system",
    "delivery_to": "123456",
}
SHELL: dict[str, Any] = {
    "name": "disk check",
    "payload_message": "df -h",
    "schedule_cron": "*/5 * * * *",
    "session_target": "shell",
    "delivery_mode": "none",
    "run_timeout_ms": 10000,
    "origin": "system",
}
CHILD: dict[str, Any] = {
    "name": "on failure",
    "payload_message": "echo failed",
    "session_target": "shell",
    "delivery_mode": "none",
    "run_timeout_ms": 10000,
    "parent_id": "parent-1",
    "trigger_on": "failure",
}


def create(**changes: Any) -> dict[str, Any]:
    return validate_job_spec({**BASE, **changes}, now=NOW)


def create_from(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return validate_job_spec({**base, **changes}, now=NOW)


def stored(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A full row as the store would hold it after creating ``base``."""
    return new_job_row(validate_job_spec({**base, **changes}, now=NOW), NOW)


def update(current: dict[str, Any], **patch: Any) -> dict[str, Any]:
    return validate_job_spec(patch, current, "update", now=NOW)


def rejects(message: str) -> Any:
    return pytest.raises(ValidationError, match=f"^{re.escape(message)}$")


# --- rule 1: spec must be an object -------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, [], ["name"], "name=x", 5])
def test_rule1_spec_must_be_an_object(spec: object) -> None:
    with rejects("Job spec must be an object"):
        validate_job_spec(spec, now=NOW)


def test_minimal_spec_is_returned_normalised() -> None:
    assert create() == BASE


# --- rule 2: normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["enabled", "execution_read_only", "delete_after_run", "approval_required", "watchdog_self_destruct"],
)
@pytest.mark.parametrize(("given", "expected"), [(True, 1), (False, 0), (1, 1), (0, 0)])
def test_rule2_booleans_become_0_or_1(field: str, given: object, expected: int) -> None:
    result = create(**{field: given})
    assert result[field] == expected
    assert type(result[field]) is int


NULLABLE_TEXT = [
    "delivery_channel",
    "resource_pool",
    "preferred_session_key",
    "payload_model",
    "payload_thinking",
    "auth_profile",
    "delivery_opt_out_reason",
    "identity_principal",
    "identity_run_as",
    "identity_attestation",
    "identity_ref",
    "identity_subject_kind",
    "identity_subject_principal",
    "identity_trust_level",
    "identity_delegation_mode",
    "identity",
    "authorization_proof_ref",
    "authorization_proof",
    "authorization_ref",
    "authorization",
    "evidence_ref",
    "evidence",
    "contract_required_trust_level",
    "contract_trust_enforcement",
    "contract_sandbox",
    "contract_allowed_paths",
    "contract_network",
    "contract_audit",
    "child_credential_policy",
]


@pytest.mark.parametrize("field", NULLABLE_TEXT)
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_rule2_blank_nullable_strings_become_none(field: str, blank: str) -> None:
    assert create(**{field: blank})[field] is None


def test_rule2_blank_delivery_to_trigger_condition_and_origin_become_none() -> None:
    assert create_from(SHELL, delivery_to="  ")["delivery_to"] is None
    assert create_from(CHILD, trigger_condition="")["trigger_condition"] is None
    assert create_from(CHILD, origin=" ")["origin"] is None


# --- rule 3: safe strings -----------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x08", "\x0b", "\x0c", "\x0e", "\x1b", "\x1f", "\x7f"])
def test_rule3_control_characters_are_rejected(char: str) -> None:
    with rejects("payload_message contains unsupported control characters"):
        create(payload_message=f"echo {char}hi")


def test_rule3_tab_newline_and_carriage_return_are_allowed() -> None:
    assert create(payload_message="line 1\r\n\tline 2")["payload_message"] == "line 1\r\n\tline 2"


@pytest.mark.parametrize("field", ["name", "delivery_to", "origin", "agent_id", "watchdog_check_cmd"])
def test_rule3_control_characters_checked_on_every_text_field(field: str) -> None:
    with rejects(f"{field} contains unsupported control characters"):
        create(**{field: "a\x01b"})


SINGLE_LINE_TEXT = [
    name for name, rule in JOB_FIELD_RULES.items()
    if rule.kind == "string" and not rule.multiline
]
MULTI_LINE_TEXT = ["payload_message", "watchdog_check_cmd"]


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x85", "\x9b", "\u2028", "\u2029"])
@pytest.mark.parametrize("field", SINGLE_LINE_TEXT)
def test_difference_g_single_line_fields_reject_line_breaks_and_c1(field: str, char: str) -> None:
    with rejects(f"{field} must be a single line: no tab, line break or other control character"):
        create_from(CHILD, **{field: f"a{char}b"})


def test_difference_g_single_line_fields_are_the_documented_ones() -> None:
    assert {"name", "id", "agent_id", "schedule_cron", "schedule_tz", "delivery_to", "origin",
            "parent_id", "resource_pool", "auth_profile"} <= set(SINGLE_LINE_TEXT)
    assert {name for name, rule in JOB_FIELD_RULES.items() if rule.multiline} == {
        "payload_message", "watchdog_check_cmd", "trigger_condition"}
    assert JOB_SCHEMA["fields"]["name"]["singleLine"] is True
    assert "singleLine" not in JOB_SCHEMA["fields"]["payload_message"]


@pytest.mark.parametrize("field", MULTI_LINE_TEXT)
def test_difference_g_multi_line_fields_keep_tabs_and_line_breaks(field: str) -> None:
    assert create_from(CHILD, **{field: "a\r\n\tb"})[field] == "a\r\n\tb"


def test_difference_g_datetime_text_is_single_line() -> None:
    with rejects("schedule_at must be a single line: no tab, line break or other control character"):
        create(schedule_kind="at", schedule_at="2026-12-01\n09:00:00")


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "\udcff"])
@pytest.mark.parametrize("field", ["name", "payload_message", "delivery_to", "schedule_at", "origin"])
def test_difference_g_lone_surrogates_are_rejected(field: str, surrogate: str) -> None:
    escape = surrogate.encode("unicode_escape").decode()
    with rejects(f"{field} is not valid Unicode text (lone surrogate {escape})"):
        create(**{field: f"x{surrogate}"})


def test_difference_g_lone_surrogate_in_a_json_blob() -> None:
    with rejects("evidence is not valid Unicode text (lone surrogate \\ud800)"):
        create(evidence='"\ud800"')


def test_difference_g_surrogate_in_an_unknown_key_is_escaped() -> None:
    with rejects('unknown field "\\ud800\\x1b[2J"'):
        create(**{"\ud800\x1b[2J": 1})


def test_difference_g_messages_quote_input_escaped() -> None:
    with rejects('Unknown session_target "\\x1b[2J\\n\\"". Valid targets: main, isolated, shell'):
        create(session_target='\x1b[2J\n"')


def test_blob_with_an_integer_of_too_many_digits() -> None:
    with rejects("evidence is not valid JSON: an integer with too many digits"):
        create(evidence="9" * 5000)


def test_blob_nested_beyond_the_recursion_limit() -> None:
    with rejects("evidence is not valid JSON: nested too deeply"):
        create(evidence="[" * 10000 + "]" * 10000)


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 509 + ")" * 509])
def test_regex_beyond_re_limits_is_rejected(pattern: str) -> None:
    with rejects("Invalid trigger_condition regex: pattern too large"):
        create_from(CHILD, trigger_condition="regex:" + pattern)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01"])
def test_datetime_outside_the_utc_years_1_to_9999_is_rejected(value: str) -> None:
    with rejects(
        'schedule_at must be a valid datetime, e.g. "2026-12-01 09:00:00" (UTC) or '
        f'"2026-12-01T09:00:00+01:00"; got "{value}"'
    ):
        create(schedule_kind="at", schedule_at=value)


def test_early_years_are_stored_with_four_digits() -> None:
    assert create(schedule_kind="at", schedule_at="0002-01-01T00:30:00+01:00")["schedule_at"] == (
        "0001-12-31 23:30:00"
    )


TEXT_LIMITS = [
    ("name", 200),
    ("payload_message", 100000),
    ("agent_id", 128),
    ("delivery_channel", 64),
    ("delivery_to", 256),
    ("resource_pool", 128),
    ("preferred_session_key", 512),
    ("payload_model", 256),
    ("payload_thinking", 64),
    ("auth_profile", 256),
    ("origin", 256),
    ("identity_principal", 512),
    ("identity_run_as", 256),
    ("identity_attestation", 256),
    ("identity_ref", 256),
    ("identity_subject_principal", 512),
    ("authorization_proof_ref", 256),
    ("authorization_ref", 256),
    ("evidence_ref", 256),
    ("contract_sandbox", 128),
    ("contract_network", 128),
    ("contract_audit", 128),
    ("watchdog_target_label", 256),
    ("watchdog_check_cmd", 4096),
    ("watchdog_alert_channel", 64),
    ("watchdog_alert_target", 256),
    ("delivery_opt_out_reason", 256),
]


@pytest.mark.parametrize(("field", "limit"), TEXT_LIMITS)
def test_rule3_text_at_its_limit_is_accepted(field: str, limit: int) -> None:
    assert create(**{field: "x" * limit})[field] == "x" * limit


@pytest.mark.parametrize(("field", "limit"), TEXT_LIMITS)
def test_rule3_over_long_text_is_rejected(field: str, limit: int) -> None:
    with rejects(f"{field} exceeds max length of {limit}"):
        create(**{field: "x" * (limit + 1)})


@pytest.mark.parametrize(
    ("field", "limit"), [("schedule_cron", 128), ("schedule_tz", 128), ("schedule_at", 64)]
)
def test_rule3_over_long_schedule_fields_are_rejected(field: str, limit: int) -> None:
    with rejects(f"{field} exceeds max length of {limit}"):
        create(**{field: "1" * (limit + 1)})


def test_rule3_over_long_trigger_condition_is_rejected() -> None:
    with rejects("trigger_condition exceeds max length of 1024"):
        create_from(CHILD, trigger_condition="contains:" + "x" * 1016)
    assert create_from(CHILD, trigger_condition="contains:" + "x" * 1015)["trigger_condition"]


@pytest.mark.parametrize("field", ["name", "payload_message", "agent_id", "schedule_tz"])
def test_rule3_required_text_cannot_be_blank(field: str) -> None:
    with rejects(f"{field} cannot be empty"):
        create(**{field: "  "})


@pytest.mark.parametrize("field", ["name", "payload_message"])
def test_name_and_payload_message_are_required_on_create(field: str) -> None:
    spec = {k: v for k, v in BASE.items() if k != field}
    with rejects(f"{field} is required"):
        validate_job_spec(spec, now=NOW)


# --- rule 4: enums ------------------------------------------------------------------------------


ENUMS = [
    ("schedule_kind", "cron, at"),
    ("overlap_policy", "skip, allow, queue"),
    ("delivery_mode", "announce, announce-always, none"),
    ("payload_scope", "own, global"),
    ("delivery_guarantee", "at-most-once, at-least-once"),
    ("job_class", "standard, pre_compaction_flush"),
    ("approval_auto", "approve, reject"),
    ("context_retrieval", "none, recent, hybrid"),
    ("job_type", "standard, watchdog, dispatch"),
    ("execution_intent", "execute, plan"),
    ("trigger_on", "success, failure, complete"),
    ("payload_kind", "systemEvent, agentTurn, shellCommand"),
]


@pytest.mark.parametrize(("field", "allowed"), ENUMS)
@pytest.mark.parametrize("bad", ["banana", "CRON", 3])
def test_rule4_enum_values_are_checked(field: str, allowed: str, bad: object) -> None:
    with rejects(f"{field} must be one of: {allowed}"):
        create(**{field: bad})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("overlap_policy", "queue"),
        ("delivery_mode", "announce-always"),
        ("payload_scope", "global"),
        ("delivery_guarantee", "at-least-once"),
        ("job_class", "pre_compaction_flush"),
        ("approval_auto", "approve"),
        ("context_retrieval", "hybrid"),
        ("execution_intent", "plan"),
    ],
)
def test_rule4_enum_values_are_accepted(field: str, value: str) -> None:
    assert create(**{field: value})[field] == value


# --- §2.2: session_target / payload_kind --------------------------------------------------------


def test_unknown_session_target() -> None:
    with rejects('Unknown session_target "docker". Valid targets: main, isolated, shell'):
        create(session_target="docker")


@pytest.mark.parametrize(
    ("target", "kind", "allowed"),
    [
        ("main", "agentTurn", "systemEvent"),
        ("shell", "agentTurn", "shellCommand"),
        ("isolated", "shellCommand", "systemEvent, agentTurn"),
    ],
)
def test_invalid_payload_kind_for_target(target: str, kind: str, allowed: str) -> None:
    with rejects(f'Invalid payload_kind "{kind}" for session_target "{target}". Allowed: {allowed}'):
        create(session_target=target, payload_kind=kind)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("main", "systemEvent"),
        ("shell", "shellCommand"),
        ("isolated", "agentTurn"),
        ("isolated", "systemEvent"),
    ],
)
def test_valid_payload_combinations(target: str, kind: str) -> None:
    assert create(session_target=target, payload_kind=kind)["payload_kind"] == kind


def test_update_of_session_target_is_checked_against_stored_payload_kind() -> None:
    current = stored(BASE)
    with rejects('Invalid payload_kind "agentTurn" for session_target "main". Allowed: systemEvent'):
        update(current, session_target="main")


# --- rule 5: child jobs -------------------------------------------------------------------------


def test_rule5_child_requires_trigger_on() -> None:
    with rejects('child jobs require trigger_on ("success", "failure", or "complete")'):
        create_from(CHILD, trigger_on=None)


def test_rule5_child_cannot_be_an_at_job() -> None:
    with rejects(
        'child jobs cannot use schedule_kind "at" -- use trigger_delay_s for delayed chain execution'
    ):
        create_from(CHILD, schedule_kind="at", schedule_at="2026-02-01 10:00:00")


def test_rule5_child_needs_no_cron_and_accepts_trigger_fields() -> None:
    result = create_from(CHILD, trigger_delay_s=30, trigger_condition="contains:ALERT")
    assert result["trigger_delay_s"] == 30
    assert result["trigger_condition"] == "contains:ALERT"


def test_rule5_demoting_a_root_job_to_child() -> None:
    current = stored(SHELL)
    patch = update(current, parent_id="parent-1", trigger_on="success")
    assert patch == {"parent_id": "parent-1", "trigger_on": "success"}
    with rejects('child jobs require trigger_on ("success", "failure", or "complete")'):
        update(current, parent_id="parent-1")


# --- rule 6: child-only fields on root jobs -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "trigger_on",
            "success",
            "trigger_on is a child-only field; set parent_id to make this a child job, "
            "or leave trigger_on unset",
        ),
        (
            "trigger_delay_s",
            5,
            "trigger_delay_s is a child-only field; set parent_id to make this a child "
            "job, or leave trigger_delay_s at 0",
        ),
        (
            "trigger_condition",
            "contains:x",
            "trigger_condition is a child-only field; set parent_id to make "
            "this a child job, or leave trigger_condition unset",
        ),
    ],
)
def test_rule6_child_only_fields_are_rejected_on_root_jobs(field: str, value: object, message: str) -> None:
    with rejects(message):
        create(**{field: value})


def test_rule6_zero_trigger_delay_is_fine_on_root_jobs() -> None:
    assert create(trigger_delay_s=0)["trigger_delay_s"] == 0


def test_rule6_promoting_child_with_trigger_on_still_set() -> None:
    current = stored(CHILD, schedule_cron="0 * * * *")
    with rejects(
        "trigger_on is a child-only field; set parent_id to make this a child job, or leave trigger_on unset"
    ):
        update(current, parent_id=None, origin="system")
    assert update(current, parent_id=None, trigger_on=None, origin="system") == {
        "parent_id": None,
        "trigger_on": None,
        "origin": "system",
    }


# --- rule 7: required schedule ------------------------------------------------------------------


def test_rule7_root_cron_job_requires_schedule_cron() -> None:
    with rejects("schedule_cron is required for root cron jobs"):
        create(schedule_cron=None)
    with rejects("schedule_cron is required for root cron jobs"):
        create(schedule_cron="   ")


def test_rule7_at_job_requires_schedule_at() -> None:
    with rejects("schedule_at is required for at-jobs (use --at or --in)"):
        create(schedule_kind="at", schedule_cron=None)
    with rejects("schedule_at is required for at-jobs (use --at or --in)"):
        create(schedule_kind="at", schedule_at="")


def test_rule7_update_cron_to_at_without_schedule_at() -> None:
    with rejects("schedule_at is required for at-jobs (use --at or --in)"):
        update(stored(BASE), schedule_kind="at")


# --- rule 8: cron expressions and the never-fires sentinel --------------------------------------


def test_rule8_invalid_cron_is_rejected() -> None:
    with rejects('Invalid cron expression "every day": expected 5 fields (minute hour day month weekday)'):
        create(schedule_cron="every day")
    with pytest.raises(ValidationError, match=r'^Invalid cron expression "61 \* \* \* \*": '):
        create(schedule_cron="61 * * * *")


def test_rule8_cron_that_never_fires_is_rejected() -> None:
    with rejects('cron expression "0 0 30 2 *" never fires (no matching date within 50 years)'):
        create(schedule_cron="0 0 30 2 *")


def test_rule8_sentinel_is_rejected_as_a_root_cron() -> None:
    with rejects(
        "schedule_cron cannot use the reserved at-job sentinel for root cron jobs (0 0 31 2 * never fires)"
    ):
        create(schedule_cron=NEVER_SENTINEL)


@pytest.mark.parametrize(
    "spec",
    [
        {**CHILD, "schedule_cron": NEVER_SENTINEL},
        {
            **BASE,
            "schedule_kind": "at",
            "schedule_at": "2026-02-01 10:00:00",
            "schedule_cron": NEVER_SENTINEL,
        },
    ],
)
def test_rule8_sentinel_is_accepted_for_children_and_at_jobs(spec: dict[str, Any]) -> None:
    assert validate_job_spec(spec, now=NOW)["schedule_cron"] == NEVER_SENTINEL


def test_rule8_at_job_turned_cron_with_sentinel_still_in_place() -> None:
    current = stored(BASE, schedule_kind="at", schedule_at="2026-02-01 10:00:00", schedule_cron=None)
    assert current["schedule_cron"] == NEVER_SENTINEL
    with rejects(
        "schedule_cron cannot use the reserved at-job sentinel for root cron jobs (0 0 31 2 * never fires)"
    ):
        update(current, schedule_kind="cron")
    assert update(current, schedule_kind="cron", schedule_cron="0 8 * * *") == {
        "schedule_kind": "cron",
        "schedule_cron": "0 8 * * *",
    }


def test_rule8_cron_is_evaluated_in_the_new_zone() -> None:
    assert create(schedule_cron="30 2 * * *", schedule_tz="Europe/Berlin")["schedule_tz"] == "Europe/Berlin"


def test_rule8_clearing_cron_of_an_at_job_stores_the_sentinel() -> None:
    current = stored(BASE, schedule_kind="at", schedule_at="2026-02-01 10:00:00", schedule_cron="0 8 * * *")
    assert update(current, schedule_cron=None) == {"schedule_cron": NEVER_SENTINEL}


# --- rule 9: schedule_at normalisation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-02-01 10:00:00", "2026-02-01 10:00:00"),
        ("2026-02-01T10:00:00Z", "2026-02-01 10:00:00"),
        ("2026-02-01T10:00:00.750Z", "2026-02-01 10:00:00"),
        ("2026-02-01T10:00:00+02:00", "2026-02-01 08:00:00"),
        ("2026-02-01 10:00", "2026-02-01 10:00:00"),
        ("2026-02-01T10:00:00", "2026-02-01 10:00:00"),
        ("2026-01-31T23:30:00-05:00", "2026-02-01 04:30:00"),
    ],
)
def test_rule9_schedule_at_is_stored_as_utc_text(given: str, expected: str) -> None:
    result = create(schedule_kind="at", schedule_cron=None, schedule_at=given)
    assert result["schedule_at"] == expected


@pytest.mark.parametrize("bad", ["tomorrow", "2026-02-30 10:00:00", "10:00"])
def test_rule9_invalid_schedule_at(bad: str) -> None:
    with rejects(
        'schedule_at must be a valid datetime, e.g. "2026-12-01 09:00:00" (UTC) or '
        f'"2026-12-01T09:00:00+01:00"; got "{bad}"'
    ):
        create(schedule_kind="at", schedule_at=bad)


def test_rule9_next_run_at_given_on_create_is_normalised_too() -> None:
    assert create(next_run_at="2026-02-01T10:00:00+01:00")["next_run_at"] == "2026-02-01 09:00:00"


# --- rule 10: time zones ------------------------------------------------------------------------


@pytest.mark.parametrize("zone_name", ["Mars/Olympus", "Europe/Berln"])
def test_rule10_unknown_zone(zone_name: str) -> None:
    with rejects(
        f'schedule_tz "{zone_name}" is not a valid IANA timezone (e.g. UTC, Europe/Berlin, America/New_York)'
    ):
        create(schedule_tz=zone_name)


@pytest.mark.parametrize("zone_name", ["../etc/passwd", "/etc/localtime"])
def test_rule10_path_like_zone(zone_name: str) -> None:
    with rejects(f'schedule_tz "{zone_name}" is not a valid IANA timezone'):
        create(schedule_tz=zone_name)


def test_rule10_zone_checked_on_update() -> None:
    with rejects(
        'schedule_tz "Nowhere" is not a valid IANA timezone (e.g. UTC, Europe/Berlin, America/New_York)'
    ):
        update(stored(BASE), schedule_tz="Nowhere")
    assert update(stored(BASE), schedule_tz="America/New_York") == {"schedule_tz": "America/New_York"}


# --- rules 11, 12, 21: delivery_to --------------------------------------------------------------

INSERT_MESSAGE = (
    "delivery_to is required on job insert. Set it to the origin chat_id "
    "(e.g. -1001234567890 for a group chat, or 987654321 for a personal DM)."
)
ANNOUNCE_MESSAGE = 'delivery_to is required when delivery_mode is "announce" or "announce-always"'
EXEMPT_MESSAGE = (
    ANNOUNCE_MESSAGE + ' (announce is the default) -- set delivery_to, or set delivery_mode to "none" '
    "if this job should not announce its result"
)


@pytest.mark.parametrize("mode", [None, "announce", "announce-always"])
def test_rule11_delivery_to_required_on_insert(mode: str | None) -> None:
    spec = {k: v for k, v in BASE.items() if k != "delivery_to"}
    if mode is not None:
        spec["delivery_mode"] = mode
    with rejects(INSERT_MESSAGE):
        validate_job_spec(spec, now=NOW)


def test_rule11_delivery_mode_none_needs_no_delivery_to() -> None:
    assert create_from(SHELL)["delivery_mode"] == "none"


@pytest.mark.parametrize(
    "changes",
    [
        {"session_target": "main"},
        {"job_type": "watchdog", "watchdog_check_cmd": "true"},
        {"name": "watchdog: build 42"},
        {"session_target": "main", "delivery_mode": "announce-always"},
    ],
)
def test_rule21_reference_exempt_jobs_still_need_delivery_to_in_announce_modes(
    changes: dict[str, Any],
) -> None:
    spec = {k: v for k, v in BASE.items() if k != "delivery_to"}
    with rejects(EXEMPT_MESSAGE):
        validate_job_spec({**spec, **changes}, now=NOW)


def test_rule21_main_job_without_delivery_is_fine_with_mode_none() -> None:
    spec = {k: v for k, v in BASE.items() if k != "delivery_to"}
    result = validate_job_spec({**spec, "session_target": "main", "delivery_mode": "none"}, now=NOW)
    assert result["delivery_mode"] == "none"


def test_rule12_update_to_announce_without_delivery_to() -> None:
    current = stored(SHELL)
    with rejects(ANNOUNCE_MESSAGE):
        update(current, delivery_mode="announce")
    assert update(current, delivery_mode="announce", delivery_to="42") == {
        "delivery_mode": "announce",
        "delivery_to": "42",
    }


def test_rule12_clearing_delivery_to_of_an_announcing_job() -> None:
    with rejects(ANNOUNCE_MESSAGE):
        update(stored(BASE), delivery_to="")


def test_rule12_unrelated_update_of_a_legacy_row_is_not_blocked() -> None:
    legacy = {
        **stored(SHELL),
        "session_target": "main",
        "payload_kind": "systemEvent",
        "delivery_mode": "announce",
    }
    assert update(legacy, enabled=False) == {"enabled": 0}


# --- rule 13: agentTurn + none needs a reason ---------------------------------------------------

OPT_OUT_MESSAGE = (
    'agentTurn jobs with delivery_mode "none" require delivery_opt_out_reason. '
    "Set delivery_to + delivery_channel, or pass delivery_opt_out_reason to explicitly skip delivery."
)


@pytest.mark.parametrize("changes", [{}, {"payload_kind": "agentTurn"}, {"delivery_opt_out_reason": "  "}])
def test_rule13_agent_turn_with_mode_none_requires_reason(changes: dict[str, Any]) -> None:
    with rejects(OPT_OUT_MESSAGE):
        create(delivery_mode="none", delivery_to=None, **changes)


@pytest.mark.parametrize(
    "spec",
    [
        {**BASE, "delivery_mode": "none", "delivery_opt_out_reason": "internal bookkeeping"},
        {**BASE, "delivery_mode": "none", "payload_kind": "systemEvent"},
        {**BASE, "delivery_mode": "none", "session_target": "main"},
        {**CHILD, "session_target": "isolated"},
        SHELL,
    ],
)
def test_rule13_exempt_cases(spec: dict[str, Any]) -> None:
    assert validate_job_spec(spec, now=NOW)["delivery_mode"] == spec.get("delivery_mode", "announce")


def test_rule13_update_to_none_without_reason() -> None:
    current = stored(BASE)
    with rejects(OPT_OUT_MESSAGE):
        update(current, delivery_mode="none")
    assert (
        update(current, delivery_mode="none", delivery_opt_out_reason="log only")["delivery_mode"] == "none"
    )


# --- rule 14: trigger_condition syntax ----------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("contains:", "trigger_condition contains: pattern cannot be empty"),
        ("regex:", "trigger_condition regex pattern cannot be empty"),
        ("ALERT", 'trigger_condition must start with "contains:" or "regex:"'),
        ("Contains:ALERT", 'trigger_condition must start with "contains:" or "regex:"'),
        ("regex:(", "Invalid trigger_condition regex: missing ), unterminated subpattern at position 0"),
    ],
)
def test_rule14_trigger_condition_syntax(condition: str, message: str) -> None:
    with rejects(message):
        create_from(CHILD, trigger_condition=condition)


def test_rule14_regex_must_compile_with_python_re() -> None:
    # Valid in JavaScript, not in Python: the runtime matcher is Python's re.
    with pytest.raises(ValidationError, match=r"^Invalid trigger_condition regex: unknown extension \?<n"):
        create_from(CHILD, trigger_condition="regex:(?<name>ERR)")


@pytest.mark.parametrize("condition", ["contains:ALERT", "regex:ERROR.*critical", r"regex:\d+%"])
def test_rule14_valid_conditions(condition: str) -> None:
    assert create_from(CHILD, trigger_condition=condition)["trigger_condition"] == condition


# --- rule 15: origin ----------------------------------------------------------------------------

ORIGIN_MESSAGE = (
    "origin is required on job creation -- pass the chat_id or channel identifier where the job was "
    'requested from (e.g. "telegram:<your-user-id>", "telegram:<your-group-id>", '
    '"system" for automated/cron jobs).'
)


@pytest.mark.parametrize("origin", [None, "", "   "])
def test_rule15_root_job_requires_origin(origin: str | None) -> None:
    with rejects(ORIGIN_MESSAGE):
        create(origin=origin)


def test_rule15_child_job_needs_no_origin() -> None:
    assert "origin" not in create_from(CHILD)


def test_rule15_promoting_a_child_requires_origin() -> None:
    current = stored(CHILD, schedule_cron="0 * * * *")
    with rejects(ORIGIN_MESSAGE):
        update(current, parent_id=None, trigger_on=None)
    assert update(current, parent_id=None, trigger_on=None, origin="system")["origin"] == "system"


def test_rule15_update_can_change_origin() -> None:
    assert update(stored(BASE), origin="telegram:-100200000000") == {"origin": "telegram:-100200000000"}


# --- rule 16: v0.2 fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "allowed"),
    [
        ("identity_subject_kind", "agent, service, workload, user, composite, delegated-agent, unknown"),
        ("identity_trust_level", "untrusted, restricted, supervised, autonomous"),
        ("identity_delegation_mode", "none, on-behalf-of, impersonation"),
        ("contract_required_trust_level", "untrusted, restricted, supervised, autonomous"),
        ("contract_trust_enforcement", "none, warn, block, advisory, strict"),
        ("child_credential_policy", "none, inherit, downscope, independent"),
    ],
)
def test_rule16_v02_enums(field: str, allowed: str) -> None:
    with rejects(f"{field} must be one of: {allowed}"):
        create(**{field: "bogus"})
    first = allowed.split(", ")[0]
    assert create(**{field: first})[field] == first


JSON_FIELDS = ["identity", "authorization_proof", "authorization", "evidence", "contract_allowed_paths"]


@pytest.mark.parametrize("field", JSON_FIELDS)
def test_rule16_json_blobs_must_parse(field: str) -> None:
    with rejects(f"{field} is not valid JSON: Expecting value: line 1 column 1 (char 0)"):
        create(**{field: "not json"})
    assert create(**{field: '{"a": [1, 2]}'})[field] == '{"a": [1, 2]}'


@pytest.mark.parametrize("field", JSON_FIELDS)
def test_rule16_json_blobs_must_be_strings(field: str) -> None:
    with rejects(f"{field} must be a JSON string"):
        create(**{field: {"a": 1}})


def test_rule16_json_blob_size_limit() -> None:
    at_limit = '"' + "x" * 32766 + '"'
    assert create(evidence=at_limit)["evidence"] == at_limit
    with rejects("evidence exceeds 32768 byte limit"):
        create(evidence='"' + "é" * 16384 + '"')


def test_rule16_json_blob_rejects_nan() -> None:
    with rejects("evidence is not valid JSON: NaN is not allowed in JSON"):
        create(evidence='{"cost": NaN}')


@pytest.mark.parametrize("bad", [-1, -0.01, float("inf"), float("nan"), "five", True])
def test_rule16_contract_max_cost_usd_rejected(bad: object) -> None:
    with rejects("contract_max_cost_usd must be a non-negative finite number"):
        create(contract_max_cost_usd=bad)


@pytest.mark.parametrize("good", [0, 99.99, None])
def test_rule16_contract_max_cost_usd_accepted(good: float | None) -> None:
    assert create(contract_max_cost_usd=good)["contract_max_cost_usd"] == good


@pytest.mark.parametrize("key", ["presentation", "credential_handoff"])
def test_rule16_credential_handoff_only_on_shell_jobs(key: str) -> None:
    identity = json.dumps({key: {"kind": "env"}})
    with rejects('identity presentation / credential_handoff is only supported for session_target "shell"'):
        create(identity=identity)
    assert create_from(SHELL, identity=identity)["identity"] == identity


def test_rule16_moving_a_handoff_job_off_shell_is_rejected() -> None:
    current = stored(SHELL, identity='{"presentation": {"kind": "env"}}')
    with rejects('identity presentation / credential_handoff is only supported for session_target "shell"'):
        update(current, session_target="isolated", payload_kind="systemEvent")


# --- rule 17: watchdog jobs ---------------------------------------------------------------------


def test_rule17_watchdog_requires_check_command() -> None:
    with rejects("watchdog_check_cmd is required for watchdog jobs"):
        create_from(SHELL, job_type="watchdog")
    with rejects("watchdog_check_cmd is required for watchdog jobs"):
        create_from(SHELL, job_type="watchdog", watchdog_check_cmd=" ")
    result = create_from(
        SHELL, job_type="watchdog", watchdog_check_cmd="pgrep build", watchdog_timeout_min=30
    )
    assert result["watchdog_timeout_min"] == 30


def test_rule17_watchdog_timeout_min_is_at_least_1() -> None:
    with rejects("watchdog_timeout_min must be an integer >= 1"):
        create_from(SHELL, job_type="watchdog", watchdog_check_cmd="true", watchdog_timeout_min=0)


# --- rule 18: integer minimums ------------------------------------------------------------------

MINIMUMS = [
    ("payload_timeout_seconds", 1),
    ("run_timeout_ms", 1),
    ("trigger_delay_s", 0),
    ("max_retries", 0),
    ("approval_timeout_s", 1),
    ("context_retrieval_limit", 1),
    ("consecutive_errors", 0),
    ("max_queued_dispatches", 1),
    ("max_pending_approvals", 1),
    ("max_trigger_fanout", 1),
    ("output_store_limit_bytes", 128),
    ("output_excerpt_limit_bytes", 64),
    ("output_summary_limit_bytes", 64),
    ("output_offload_threshold_bytes", 128),
    ("ttl_hours", 1),
    ("watchdog_timeout_min", 1),
]


@pytest.mark.parametrize(("field", "minimum"), MINIMUMS)
def test_rule18_integer_below_minimum(field: str, minimum: int) -> None:
    with rejects(f"{field} must be an integer >= {minimum}"):
        create_from(CHILD, **{field: minimum - 1})


@pytest.mark.parametrize(("field", "minimum"), MINIMUMS)
def test_rule18_integer_at_minimum(field: str, minimum: int) -> None:
    changes: dict[str, Any] = {field: minimum}
    if field == "output_store_limit_bytes":
        changes["output_excerpt_limit_bytes"] = 64
        changes["output_summary_limit_bytes"] = 64
    if field == "output_summary_limit_bytes":
        changes["output_excerpt_limit_bytes"] = 64
    assert create_from(CHILD, **changes)[field] == minimum


# --- difference (f): every number has a maximum ------------------------------------------------

MAXIMUMS = [
    ("payload_timeout_seconds", 7 * 86400),
    ("run_timeout_ms", 7 * 86400 * 1000),
    ("max_queued_dispatches", 10000),
    ("max_pending_approvals", 10000),
    ("max_trigger_fanout", 10000),
    ("ttl_hours", 87600),
    ("trigger_delay_s", 365 * 86400),
    ("max_retries", 20),
    ("approval_timeout_s", 365 * 86400),
    ("context_retrieval_limit", 1000),
    ("output_store_limit_bytes", 64 * 1024 * 1024),
    ("output_excerpt_limit_bytes", 64 * 1024 * 1024),
    ("output_summary_limit_bytes", 64 * 1024 * 1024),
    ("output_offload_threshold_bytes", 64 * 1024 * 1024),
    ("watchdog_timeout_min", 365 * 1440),
    ("consecutive_errors", 2**31 - 1),
    ("misfire_grace_s", 365 * 86400),
]


def at_maximum(field: str, maximum: int) -> dict[str, Any]:
    """The field at ``maximum``, with the output budgets it is cross-checked against raised."""
    changes: dict[str, Any] = {field: maximum}
    if field == "output_excerpt_limit_bytes":
        changes.update(output_store_limit_bytes=maximum, output_summary_limit_bytes=maximum)
    if field == "output_summary_limit_bytes":
        changes["output_store_limit_bytes"] = maximum
    return changes


@pytest.mark.parametrize(("field", "maximum"), MAXIMUMS)
def test_difference_f_integer_at_maximum_is_accepted(field: str, maximum: int) -> None:
    assert create_from(CHILD, **at_maximum(field, maximum))[field] == maximum


@pytest.mark.parametrize(("field", "maximum"), MAXIMUMS)
@pytest.mark.parametrize("excess", [1, 2**63, 10**4000])
def test_difference_f_integer_above_maximum_is_rejected(field: str, maximum: int, excess: int) -> None:
    changes = at_maximum(field, maximum)
    changes[field] = maximum + excess
    with rejects(f"{field} must be an integer <= {maximum}"):
        create_from(CHILD, **changes)


def test_difference_f_every_number_has_a_maximum_and_the_schema_shows_it() -> None:
    numeric = {name: rule for name, rule in JOB_FIELD_RULES.items() if rule.kind in ("integer", "number")}
    assert set(numeric) == {name for name, _ in MAXIMUMS} | {"queued_count", "contract_max_cost_usd"}
    for name, rule in numeric.items():
        assert rule.maximum is not None, name
        assert JOB_SCHEMA["fields"][name]["max"] == rule.maximum, name
    assert dict(MAXIMUMS) == {name: numeric[name].maximum for name, _ in MAXIMUMS}


def test_difference_f_an_update_is_bounded_too() -> None:
    with rejects("consecutive_errors must be an integer <= 2147483647"):
        update(stored(BASE), consecutive_errors=2**63 - 1)
    with rejects("max_retries must be an integer <= 20"):
        update(stored(BASE), max_retries=21)


@pytest.mark.parametrize("bad", [2**64, 1e10, 1e300, 10**400, 1_000_000_000.5])
def test_difference_f_contract_max_cost_usd_has_a_maximum(bad: float) -> None:
    with rejects("contract_max_cost_usd must be a number <= 1000000000"):
        create(contract_max_cost_usd=bad)
    assert create(contract_max_cost_usd=1_000_000_000)["contract_max_cost_usd"] == 1_000_000_000


# --- rule 19: output budget cross-checks --------------------------------------------------------


def test_rule19_excerpt_cannot_exceed_store() -> None:
    with rejects("output_excerpt_limit_bytes cannot exceed output_store_limit_bytes (4096 > 1024)"):
        create(
            output_store_limit_bytes=1024, output_excerpt_limit_bytes=4096, output_summary_limit_bytes=8192
        )


def test_rule19_summary_cannot_be_smaller_than_excerpt() -> None:
    with rejects("output_summary_limit_bytes cannot be smaller than output_excerpt_limit_bytes (100 < 200)"):
        create(output_excerpt_limit_bytes=200, output_summary_limit_bytes=100)


def test_rule19_checked_against_defaults_that_will_be_stored() -> None:
    # The excerpt default is 2000 bytes: a 1024-byte store would hold less than one excerpt.
    with rejects("output_excerpt_limit_bytes cannot exceed output_store_limit_bytes (2000 > 1024)"):
        create(output_store_limit_bytes=1024)
    with rejects(
        "output_summary_limit_bytes cannot be smaller than output_excerpt_limit_bytes (5000 < 8000)"
    ):
        create(output_excerpt_limit_bytes=8000)


def test_rule19_update_is_checked_against_stored_values() -> None:
    current = stored(BASE)  # store 65536, excerpt 2000, summary 5000
    with rejects(
        "output_summary_limit_bytes cannot be smaller than output_excerpt_limit_bytes (1000 < 2000)"
    ):
        update(current, output_summary_limit_bytes=1000)
    assert update(current, output_excerpt_limit_bytes=5000) == {"output_excerpt_limit_bytes": 5000}


# --- rule 20: run_timeout_ms --------------------------------------------------------------------

RUN_TIMEOUT_MESSAGE = (
    "run_timeout_ms is required and must be > 0 -- this prevents jobs from running indefinitely."
)


@pytest.mark.parametrize("value", ["missing", None])
def test_rule20_run_timeout_required_on_create(value: object) -> None:
    spec = {k: v for k, v in BASE.items() if k != "run_timeout_ms"}
    if value != "missing":
        spec["run_timeout_ms"] = value
    with rejects(RUN_TIMEOUT_MESSAGE):
        validate_job_spec(spec, now=NOW)


def test_rule20_run_timeout_zero_names_the_minimum() -> None:
    with rejects("run_timeout_ms must be an integer >= 1"):
        create(run_timeout_ms=0)


def test_rule20_partial_update_needs_no_run_timeout() -> None:
    assert update(stored(BASE), name="renamed") == {"name": "renamed"}


# --- difference (a): unknown and managed keys ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("schedule", "schedule_tz"),
        ("cron", None),
        ("delivery_target", "delivery_to"),
        ("runTimeoutMs", "run_timeout_ms"),
        ("run_timeout", "run_timeout_ms"),
        ("paylod_message", "payload_message"),
        ("colour", None),
    ],
)
def test_difference_a_unknown_keys_are_rejected(key: str, suggestion: str | None) -> None:
    expected = f'unknown field "{key}"' + (f'; did you mean "{suggestion}"?' if suggestion else "")
    with rejects(expected):
        create(**{key: "x"})


def test_difference_a_unknown_keys_rejected_on_update() -> None:
    with rejects('unknown field "enable"; did you mean "enabled"?'):
        update(stored(BASE), enable=True)


@pytest.mark.parametrize("key", ["queued_count", "created_at", "updated_at"])
@pytest.mark.parametrize("mode", ["create", "update"])
def test_difference_a_managed_columns_cannot_be_set(key: str, mode: str) -> None:
    with rejects(f"{key} is maintained by the scheduler and cannot be set"):
        if mode == "create":
            create(**{key: 0})
        else:
            update(stored(BASE), **{key: 0})


def test_difference_a_id_only_on_create() -> None:
    assert create(id="nightly-backup")["id"] == "nightly-backup"
    with rejects("id cannot be changed; create a new job instead"):
        update(stored(BASE), id="other")


def test_difference_a_run_now_only_on_create() -> None:
    assert create(run_now=True)["run_now"] is True
    assert create(run_now=0)["run_now"] is False
    with rejects('run_now is only accepted on create; use "jobs run <id>" to run a job now'):
        update(stored(BASE), run_now=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "id cannot be empty"),
        ("x" * 129, "id exceeds max length of 128"),
        ("job\x00id", "id contains unsupported control characters"),
        (42, "id must be a string"),
    ],
)
def test_difference_a_id_must_be_a_safe_string(value: object, message: str) -> None:
    with rejects(message):
        create(id=value)


def test_difference_a_state_fields_are_accepted_on_update() -> None:
    patch = update(stored(BASE), last_status="ok", last_run_at="2026-01-15T12:00:00Z", consecutive_errors=2)
    assert patch == {"last_status": "ok", "last_run_at": "2026-01-15 12:00:00", "consecutive_errors": 2}


# --- difference (b): type checks ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, False, 5.0, "5", [5]])
@pytest.mark.parametrize(("field", "minimum"), [("run_timeout_ms", 1), ("max_retries", 0), ("ttl_hours", 1)])
def test_difference_b_integers_must_be_json_integers(field: str, minimum: int, bad: object) -> None:
    with rejects(f"{field} must be an integer >= {minimum}"):
        create(**{field: bad})


@pytest.mark.parametrize("bad", [2, -1, "true", "yes", 1.0, []])
@pytest.mark.parametrize("field", ["enabled", "delete_after_run", "run_now"])
def test_difference_b_booleans_accept_only_true_false_1_0(field: str, bad: object) -> None:
    with rejects(f"{field} must be true, false, 1 or 0"):
        create(**{field: bad})


@pytest.mark.parametrize(("field", "bad"), [("name", 5), ("payload_message", ["echo"]), ("agent_id", True)])
def test_difference_b_required_strings_must_be_strings(field: str, bad: object) -> None:
    with rejects(f"{field} must be a string"):
        create(**{field: bad})


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("auth_profile", 123),
        ("auth_profile", True),
        ("delivery_to", 42),
        ("schedule_cron", 5),
        ("parent_id", 7),
    ],
)
def test_difference_b_nullable_strings_must_be_strings_or_null(field: str, bad: object) -> None:
    with rejects(f"{field} must be a string or null"):
        create(**{field: bad})


def test_difference_b_session_target_must_be_a_string() -> None:
    with rejects("session_target must be a string"):
        create(session_target=1)


# --- null handling ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["enabled", "overlap_policy", "max_retries", "schedule_tz", "agent_id"])
def test_null_means_default_on_create(field: str) -> None:
    normalized = create(**{field: None})
    assert field not in normalized
    row = new_job_row(normalized, NOW)
    assert (
        row[field]
        == {
            "enabled": 1,
            "overlap_policy": "skip",
            "max_retries": 0,
            "schedule_tz": "UTC",
            "agent_id": "main",
        }[field]
    )


@pytest.mark.parametrize("field", ["enabled", "overlap_policy", "max_retries", "name", "run_timeout_ms"])
def test_null_is_rejected_on_update_for_columns_with_values(field: str) -> None:
    with rejects(f"{field} cannot be null"):
        update(stored(BASE), **{field: None})


def test_null_clears_nullable_fields_on_update() -> None:
    current = stored(BASE, ttl_hours=4, resource_pool="gpu")
    assert update(current, ttl_hours=None, resource_pool=None) == {"ttl_hours": None, "resource_pool": None}


# --- update-mode merges -------------------------------------------------------------------------


def test_update_only_checks_rules_touched_by_the_patch() -> None:
    # A legacy row that breaks today's create rules (no origin, no delivery_to) can still be renamed.
    legacy = {**stored(SHELL), "origin": None, "delivery_mode": "announce", "delivery_to": None}
    assert update(legacy, name="renamed", enabled=0) == {"name": "renamed", "enabled": 0}


def test_update_booleans_are_normalised() -> None:
    assert update(stored(BASE), enabled=False, approval_required=True) == {
        "enabled": 0,
        "approval_required": 1,
    }


def test_update_merges_with_current_for_cron_zone() -> None:
    current = stored(BASE, schedule_cron="30 2 * * *")
    assert update(current, schedule_tz="Europe/Berlin") == {"schedule_tz": "Europe/Berlin"}


def test_update_with_empty_patch_is_empty() -> None:
    assert update(stored(BASE)) == {}


def test_update_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="mode must be 'create' or 'update'"):
        validate_job_spec(BASE, None, "upsert", now=NOW)  # type: ignore[arg-type]


# --- new_job_row --------------------------------------------------------------------------------


def test_new_job_row_has_every_column_in_schema_order() -> None:
    row = stored(BASE)
    assert tuple(row) == JOB_COLUMNS
    assert "run_now" not in row


def test_new_job_row_code_defaults() -> None:
    row = stored(BASE)
    generated = uuid.UUID(row["id"])
    assert generated.version == 4 and generated.variant == uuid.RFC_4122
    assert str(generated) == row["id"]
    assert stored(BASE)["id"] != row["id"]
    expected = {
        "enabled": 1,
        "schedule_kind": "cron",
        "schedule_tz": "UTC",
        "session_target": "isolated",
        "agent_id": "main",
        "payload_kind": "agentTurn",
        "payload_timeout_seconds": 120,
        "execution_intent": "execute",
        "execution_read_only": 0,
        "overlap_policy": "skip",
        "max_queued_dispatches": 25,
        "max_pending_approvals": 10,
        "max_trigger_fanout": 25,
        "delivery_mode": "announce",
        "delete_after_run": 0,
        "ttl_hours": None,
        "trigger_delay_s": 0,
        "max_retries": 0,
        "queued_count": 0,
        "payload_scope": "own",
        "delivery_guarantee": "at-most-once",
        "job_class": "standard",
        "approval_required": 0,
        "approval_timeout_s": 3600,
        "approval_auto": "reject",
        "context_retrieval": "none",
        "context_retrieval_limit": 5,
        "output_store_limit_bytes": 65536,
        "output_excerpt_limit_bytes": 2000,
        "output_summary_limit_bytes": 5000,
        "output_offload_threshold_bytes": 65536,
        "job_type": "standard",
        "watchdog_self_destruct": 1,
        "consecutive_errors": 0,
        "created_at": "2026-01-15 12:00:30",
        "updated_at": "2026-01-15 12:00:30",
        "next_run_at": "2026-01-16 09:00:00",
        "parent_id": None,
        "identity": None,
        "contract_max_cost_usd": None,
    }
    assert {key: row[key] for key in expected} == expected


@pytest.mark.parametrize(("target", "kind"), [("main", "systemEvent"), ("shell", "shellCommand")])
def test_new_job_row_derives_payload_kind(target: str, kind: str) -> None:
    assert stored(BASE, session_target=target)["payload_kind"] == kind


def test_new_job_row_keeps_explicit_id_and_values() -> None:
    row = stored(BASE, id="fixed-id", enabled=False, max_retries=3, output_excerpt_limit_bytes=4000)
    assert (row["id"], row["enabled"], row["max_retries"], row["output_excerpt_limit_bytes"]) == (
        "fixed-id",
        0,
        3,
        4000,
    )


def test_new_job_row_at_job_gets_sentinel_and_runs_at_schedule_at() -> None:
    row = stored(BASE, schedule_kind="at", schedule_cron=None, schedule_at="2026-02-01T10:00:00+01:00")
    assert (row["schedule_cron"], row["schedule_at"], row["next_run_at"]) == (
        NEVER_SENTINEL,
        "2026-02-01 09:00:00",
        "2026-02-01 09:00:00",
    )


def test_new_job_row_child_gets_sentinel_and_no_next_run() -> None:
    row = stored(CHILD)
    assert (row["schedule_cron"], row["next_run_at"], row["origin"]) == (NEVER_SENTINEL, None, None)


def test_new_job_row_run_now_is_due_a_second_ago() -> None:
    assert stored(BASE, run_now=True)["next_run_at"] == "2026-01-15 12:00:29"


def test_new_job_row_explicit_next_run_at_wins() -> None:
    assert (
        stored(BASE, run_now=True, next_run_at="2030-01-01 00:00:00")["next_run_at"] == "2030-01-01 00:00:00"
    )


# --- derive_next_run_at -------------------------------------------------------------------------


def test_derive_next_run_at_child_is_none_even_with_run_now() -> None:
    assert derive_next_run_at({"parent_id": "p", "schedule_cron": "* * * * *"}, NOW, run_now=True) is None


def test_derive_next_run_at_cron_in_zone() -> None:
    job = {"schedule_kind": "cron", "schedule_cron": "0 9 * * *", "schedule_tz": "Europe/Berlin"}
    assert derive_next_run_at(job, NOW) == "2026-01-16 08:00:00"  # 09:00 CET


def test_derive_next_run_at_is_strictly_after_now() -> None:
    at_fire = datetime(2026, 1, 15, 9, 0, 0, tzinfo=UTC)
    assert derive_next_run_at({"schedule_cron": "0 9 * * *"}, at_fire) == "2026-01-16 09:00:00"


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            {"schedule_kind": "at", "schedule_at": "2026-03-01 10:00:00", "schedule_cron": NEVER_SENTINEL},
            "2026-03-01 10:00:00",
        ),
        ({"schedule_kind": "at", "schedule_at": None}, None),
        ({"schedule_kind": "cron", "schedule_cron": NEVER_SENTINEL}, None),
        ({"schedule_kind": "cron", "schedule_cron": None}, None),
    ],
)
def test_derive_next_run_at_cases(job: dict[str, Any], expected: str | None) -> None:
    assert derive_next_run_at(job, NOW) == expected


def test_derive_next_run_at_run_now_beats_at() -> None:
    job = {"schedule_kind": "at", "schedule_at": "2026-03-01 10:00:00"}
    assert derive_next_run_at(job, NOW, run_now=True) == "2026-01-15 12:00:29"


# --- update_needs_new_next_run ------------------------------------------------------------------


def test_schedule_change_fields() -> None:
    assert SCHEDULE_CHANGE_FIELDS == (
        "schedule_kind",
        "schedule_at",
        "schedule_cron",
        "schedule_tz",
        "parent_id",
    )


@pytest.mark.parametrize(
    ("current_changes", "patch", "expected"),
    [
        ({}, {"schedule_cron": "0 8 * * *"}, True),
        ({}, {"schedule_tz": "Europe/Berlin"}, True),
        ({}, {"parent_id": "p", "trigger_on": "success"}, True),
        ({}, {"schedule_cron": "0 9 * * *"}, False),  # same value: not a change
        ({}, {"schedule_cron": "0 8 * * *", "next_run_at": "2030-01-01 00:00:00"}, False),
        ({}, {"name": "x"}, False),
        ({"enabled": 0}, {"enabled": 1}, True),
        ({"enabled": 1}, {"enabled": 1}, False),
        ({"enabled": 1}, {"enabled": 0}, False),
        ({"enabled": 0}, {"enabled": 1, "next_run_at": None}, False),
    ],
)
def test_update_needs_new_next_run(
    current_changes: dict[str, Any], patch: dict[str, Any], expected: bool
) -> None:
    current = {**stored(BASE), **current_changes}
    assert update_needs_new_next_run(current, patch) is expected


# --- columns and schemas ------------------------------------------------------------------------


def test_job_columns_match_store_schema_order() -> None:
    schema_sql = Path(__file__).resolve().parents[1] / "src" / "scheduler" / "store" / "sqlite" / "schema.sql"
    if not schema_sql.exists():
        pytest.skip("store/schema.sql not present")
    body = re.search(r"CREATE TABLE IF NOT EXISTS jobs \((.*?)\n\);", schema_sql.read_text(), re.S)
    assert body is not None
    columns = [
        line.split()[0]
        for line in body.group(1).splitlines()
        if re.match(r"^\s+[a-z_]+ (TEXT|INTEGER|REAL)\b", line)
    ]
    assert tuple(columns) == JOB_COLUMNS


def test_job_schema_required_and_run_now() -> None:
    assert JOB_SCHEMA["type"] == "object"
    assert JOB_SCHEMA["required"] == ["name", "payload_message", "run_timeout_ms"]
    fields = JOB_SCHEMA["fields"]
    assert fields["run_now"] == {
        "type": "boolean",
        "default": False,
        "createOnly": True,
        "description": "Create-time flag: make the first run due immediately",
    }
    assert fields["queued_count"]["readOnly"] is True
    assert fields["session_target"]["enum"] == ["main", "isolated", "shell"]
    assert fields["enabled"]["default"] is True
    assert fields["output_excerpt_limit_bytes"]["default"] == 2000
    assert fields["identity"]["format"] == "json"


@pytest.mark.parametrize(("field", "allowed"), ENUMS)
def test_job_schema_enums_match_validator(field: str, allowed: str) -> None:
    assert JOB_SCHEMA["fields"][field]["enum"] == allowed.split(", ")


@pytest.mark.parametrize(("field", "minimum"), MINIMUMS)
def test_job_schema_minimums_match_validator(field: str, minimum: int) -> None:
    assert JOB_SCHEMA["fields"][field]["min"] == minimum


@pytest.mark.parametrize(("field", "limit"), TEXT_LIMITS)
def test_job_schema_max_lengths_match_validator(field: str, limit: int) -> None:
    assert JOB_SCHEMA["fields"][field]["maxLength"] == limit


def test_job_schema_covers_every_accepted_field() -> None:
    assert set(JOB_SCHEMA["fields"]) == {*JOB_COLUMNS, "run_now"}


def test_run_and_dispatch_schemas() -> None:
    assert RUN_SCHEMA["statuses"] == [
        "pending",
        "running",
        "ok",
        "error",
        "timeout",
        "skipped",
        "awaiting_approval",
        "approved",
        "cancelled",
        "crashed",
    ]
    assert RUN_SCHEMA["fields"]["status"]["enum"] == RUN_SCHEMA["statuses"]
    assert RUN_SCHEMA["fields"]["shell_timed_out"] == {"type": "boolean", "default": False}
    assert "job_id" in RUN_SCHEMA["key_fields"]
    # The reference's kinds, then ours: a gated scheduled occurrence waits as a row of its kind.
    assert DISPATCH_SCHEMA["kinds"] == ["manual", "chain", "retry", "cron", "at"]
    assert DISPATCH_SCHEMA["statuses"] == ["pending", "claimed", "awaiting_approval", "done", "cancelled"]
    assert DISPATCH_SCHEMA["fields"]["dispatch_kind"]["required"] is True


# --- messages stay on one line ------------------------------------------------------------------


def test_unknown_field_with_control_characters_is_quoted_on_one_line() -> None:
    with rejects('unknown field "bad\\nkey\\x00"'):
        create(**{"bad\nkey\x00": 1})


def test_unknown_session_target_is_quoted_on_one_line_and_shortened() -> None:
    with rejects('Unknown session_target "a\\nb". Valid targets: main, isolated, shell'):
        create(session_target="a\nb")
    with rejects(f'Unknown session_target "{"x" * 77}...". Valid targets: main, isolated, shell'):
        create(session_target="x" * 500)
