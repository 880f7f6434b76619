"""The pure pipeline stages: intake, triage, policy, resolution, supervisor, feedback and `stages.decide`.

Every test runs the real stage functions over packs compiled from tests/data/unit/desk-*.yaml (or small
variations of them); nothing of ours is mocked, except where a test is about a stage that raises.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breakdesk.domain.models import UNCLASSIFIED, Actionability, ResolutionStatus, Severity
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy
from breakdesk.pipeline import stages
from breakdesk.pipeline.context import condition_context
from breakdesk.pipeline.feedback import final_status
from breakdesk.pipeline.intake import ENVELOPE_KEYS, IntakeRejected, fingerprint_of
from breakdesk.pipeline.policy import decide_policy
from breakdesk.pipeline.resolution import plan_resolution
from breakdesk.pipeline.stages import Decided, decide, needed_vars
from breakdesk.pipeline.supervisor import DEFAULT_MIN_CONFIDENCE, check_plan, check_policy
from breakdesk.pipeline.triage import SEVERITY_CONFIDENCE, priority_score, similar_evidence, triage
from breakdesk.pipeline.types import (
    IntakeResult,
    Plan,
    PlanStep,
    PolicyResult,
    RecurrenceInfo,
    SimilarCase,
    TriageResult,
)

from .packkit import (
    RECEIVED,
    desk_domain_data,
    desk_tenant_data,
    domain_from,
    messages,
    run,
    submit,
    tenant_from,
)

#: Module-level compiled pack for the property tests (hypothesis reports stay readable without fixtures).
_DESK = domain_from(desk_domain_data())

BREAK_BIG = {
    "exceptionType": "BREAK",
    "sourceSystem": "recon",
    "rawPayload": {"orderId": "O1", "amount": 5000},
}
BREAK_SMALL = {
    "exceptionType": "BREAK",
    "sourceSystem": "recon",
    "rawPayload": {"orderId": "O2", "amount": 50},
}


def tenant_with(domain: CompiledDomainPack, **changes: Any) -> CompiledTenantPolicy:
    data = desk_tenant_data()
    data.update(changes)
    return tenant_from(data, domain)


def domain_with(mutate: Any) -> CompiledDomainPack:
    data = desk_domain_data()
    mutate(data)
    return domain_from(data)


def stage_inputs(
    domain: CompiledDomainPack, tenant: CompiledTenantPolicy, data: dict[str, Any]
) -> tuple[IntakeResult, TriageResult, Any]:
    """Intake and triage, plus the context policy and planning read (as `decide` builds it)."""
    ir = submit(domain, data, tenant.tenant_id)
    etype = ir.record.exception_type
    tctx = condition_context(ir.record, needed_vars(domain, tenant, etype, "triage"))
    tri = triage(ir, tctx, domain, tenant)
    pctx = condition_context(
        ir.record,
        needed_vars(domain, tenant, etype, "policy"),
        severity=tri.severity.value,
        confidence=tri.confidence,
    )
    return ir, tri, pctx


def policy_for(
    domain: CompiledDomainPack, tenant: CompiledTenantPolicy, data: dict[str, Any]
) -> PolicyResult:
    ir, tri, pctx = stage_inputs(domain, tenant, data)
    return decide_policy(ir, tri, pctx, domain, tenant)


def steps_by_id(out: Decided) -> dict[str, PlanStep]:
    assert out.plan is not None
    return {s.step_id: s for s in out.plan.steps}


# =============================================================================================== intake


class TestIntake:
    def test_explicit_type(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, BREAK_BIG)
        assert ir.record.exception_type == "BREAK"
        assert (ir.type_source, ir.type_confidence) == ("explicit", 1.0)
        assert ir.decision.decision == "BREAK (explicit)"
        assert ir.decision.confidence == 1.0
        assert ir.decision.next_step == "triage"
        assert "type BREAK given by the source" in messages(ir.decision)
        assert ir.record.tenant_id == "t1" and ir.record.exception_id == "ex-1"
        assert ir.record.source_system == "recon"
        assert ir.record.resolution_status == ResolutionStatus.RECEIVED

    def test_type_from_the_payload_type_field(self, desk_domain: CompiledDomainPack) -> None:
        # desk's intake.typeField is "kind"
        ir = submit(desk_domain, {"rawPayload": {"kind": "LATE", "delayMinutes": 5}})
        assert (ir.record.exception_type, ir.type_source) == ("LATE", "explicit")

    def test_envelope_type_wins_over_payload_type_field(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"kind": "LATE"}})
        assert ir.record.exception_type == "INFO"

    def test_unknown_type_falls_back_to_detection(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"exceptionType": "WHATEVER", "rawPayload": {"failReason": "oom"}})
        assert ir.record.exception_type == "FAIL"
        assert (ir.type_source, ir.type_confidence) == ("detected", 0.6)
        msgs = messages(ir.decision)
        assert "type 'WHATEVER' is not in the taxonomy" in msgs
        assert "type FAIL detected by rule fail-detect: has(rawPayload.failReason)" in msgs
        assert ir.decision.decision == "FAIL (detected)"
        assert ir.decision.next_step == "triage"

    def test_first_matching_detection_rule_wins(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"rawPayload": {"failReason": "x", "delayMinutes": 100}})
        assert ir.record.exception_type == "FAIL"
        ir = submit(desk_domain, {"rawPayload": {"delayMinutes": 100}})
        assert (ir.record.exception_type, ir.type_confidence) == ("LATE", 0.9)

    def test_detection_condition_that_errors_does_not_match(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"rawPayload": {"delayMinutes": "soon"}})  # string > int: no overload
        assert ir.record.exception_type == UNCLASSIFIED

    @pytest.mark.parametrize("given", [None, "NOPE", ""])
    def test_nothing_matches_unclassified(self, desk_domain: CompiledDomainPack, given: str | None) -> None:
        data: dict[str, Any] = {"rawPayload": {"something": 1}}
        if given is not None:
            data["exceptionType"] = given
        ir = submit(desk_domain, data)
        assert ir.record.exception_type == UNCLASSIFIED
        assert (ir.type_source, ir.type_confidence) == ("unclassified", 0.0)
        assert ir.decision.confidence == 0.0
        assert ir.decision.next_step == "escalate"
        assert ir.decision.decision == "UNCLASSIFIED (unclassified)"
        assert "no detection rule matched: UNCLASSIFIED" in messages(ir.decision)

    def test_non_string_type_is_ignored_with_evidence(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"exceptionType": 7, "rawPayload": {"failReason": "x"}})
        assert ir.record.exception_type == "FAIL"
        assert "exceptionType of type int ignored" in messages(ir.decision)

    def test_envelope_submission(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(
            desk_domain,
            {
                "exceptionType": "BREAK",
                "sourceSystem": "recon",
                "tenantId": "t1",
                "rawPayload": {"orderId": "O1", "sourceSystem": "ignored"},
            },
        )
        assert ir.record.raw_payload == {"orderId": "O1", "sourceSystem": "ignored"}
        assert ir.record.source_system == "recon"

    def test_payload_only_submission_strips_envelope_keys(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(
            desk_domain,
            {
                "exceptionType": "BREAK",
                "sourceSystem": "recon",
                "idempotencyKey": "k1",
                "sourceId": "s1",
                "tenantId": "t1",
                "orderId": "O1",
                "amount": 7,
            },
        )
        assert ir.record.raw_payload == {"orderId": "O1", "amount": 7}
        assert ir.record.exception_type == "BREAK"
        assert ir.record.source_system == "recon"
        assert ir.idempotency_key == "k1"
        assert ir.source_id == "s1"
        assert ir.record.normalized_context["orderId"] == "O1"
        assert set(ENVELOPE_KEYS) >= {
            "exceptionType",
            "sourceSystem",
            "idempotencyKey",
            "sourceId",
            "tenantId",
        }

    def test_source_system_from_payload_or_unknown(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"rawPayload": {"sourceSystem": "erp", "orderId": "O"}})
        assert ir.record.source_system == "erp"
        ir = submit(desk_domain, {"rawPayload": {"orderId": "O"}})
        assert ir.record.source_system == "unknown"
        assert "no sourceSystem given; recorded as 'unknown'" in messages(ir.decision)

    def test_tenant_id_mismatch_is_rejected(self, desk_domain: CompiledDomainPack) -> None:
        with pytest.raises(IntakeRejected, match="tenantId 't2' does not match the tenant 't1'"):
            submit(desk_domain, {"tenantId": "t2", "rawPayload": {"a": 1}}, tenant_id="t1")
        assert submit(desk_domain, {"tenantId": " t1 ", "rawPayload": {"a": 1}}).record.tenant_id == "t1"

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"rawPayload": [1, 2]}, "rawPayload must be a JSON object, got list"),
            ({"rawPayload": "text"}, "rawPayload must be a JSON object, got str"),
            ({"rawPayload": None}, "rawPayload must be a JSON object, got NoneType"),
            ({"exceptionType": "BREAK", "sourceSystem": "x"}, "carries no payload"),
            ({}, "carries no payload"),
            ({"tenantId": ["t1"], "rawPayload": {}}, "tenantId must be a string, got list"),
            ({"tenantId": 5, "rawPayload": {}}, "tenantId '5' does not match"),
            ({"sourceSystem": {"a": 1}, "rawPayload": {"a": 1}}, "sourceSystem must be a string"),
            ({"idempotencyKey": "k" * 201, "rawPayload": {"a": 1}}, "idempotencyKey is longer than 200"),
            ({"sourceId": True, "rawPayload": {"a": 1}}, "sourceId must be a string, got bool"),
        ],
    )
    def test_rejected_submissions(
        self, desk_domain: CompiledDomainPack, data: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(IntakeRejected, match=message):
            submit(desk_domain, data)

    def test_non_object_submission_is_rejected(self, desk_domain: CompiledDomainPack) -> None:
        with pytest.raises(IntakeRejected, match="must be a JSON object, got list"):
            submit(desk_domain, [1, 2])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
            ("2026-01-02T03:04:05z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
            ("2026-01-02T03:04:05+02:00", datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)),
            ("2026-01-02T03:04:05-05:30", datetime(2026, 1, 2, 8, 34, 5, tzinfo=UTC)),
            ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),  # naive = UTC
            ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
            ("2026-01-02T03:04:05.250Z", datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
            (1767323045, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),  # epoch seconds
            (1767323045.5, datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
            (1767323045000, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),  # epoch milliseconds
            ("1767323045", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),  # digits string
            ("1767323045000", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
            (" 2026-01-02T03:04:05Z ", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
            (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ],
    )
    def test_timestamps_are_normalized_to_utc(
        self, desk_domain: CompiledDomainPack, value: Any, expected: datetime
    ) -> None:
        ir = submit(desk_domain, {"timestamp": value, "rawPayload": {"a": 1}})
        assert ir.record.timestamp == expected
        assert ir.record.timestamp.utcoffset() == timedelta(0)
        assert not [m for m in messages(ir.decision) if m.startswith("timestamp ignored")]

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("garbage", "not an ISO-8601 timestamp"),
            ("", "timestamp is empty"),
            ("   ", "timestamp is empty"),
            (True, "not a boolean"),
            ([2026], "got list"),
            ({"at": 1}, "got dict"),
            (1e20, "out of range"),
            (float("nan"), "out of range"),
            ("2026-01-02T03:04:05+25:00", "not an ISO-8601 timestamp"),
            ("2026-13-45", "not an ISO-8601 timestamp"),
            ("0001-01-01T00:00:00+01:00", "out of range"),  # valid ISO 8601, before the first UTC instant
            ("9999-12-31T23:59:59-01:00", "out of range"),
        ],
    )
    def test_bad_timestamp_uses_receive_time_with_evidence(
        self, desk_domain: CompiledDomainPack, value: Any, why: str
    ) -> None:
        ir = submit(desk_domain, {"timestamp": value, "rawPayload": {"a": 1}})
        assert ir.record.timestamp == RECEIVED
        ignored = [m for m in messages(ir.decision) if m.startswith("timestamp ignored")]
        assert len(ignored) == 1 and why in ignored[0] and ignored[0].endswith("using receive time")

    def test_missing_timestamp_uses_receive_time_silently(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"rawPayload": {"a": 1}})
        assert ir.record.timestamp == RECEIVED
        assert not [m for m in messages(ir.decision) if "timestamp" in m]

    def test_timestamp_from_the_payload_field(self, desk_domain: CompiledDomainPack) -> None:
        # desk's intake.timestampField is the nested path meta.at
        ir = submit(desk_domain, {"rawPayload": {"meta": {"at": "2025-05-05T05:05:05+01:00"}}})
        assert ir.record.timestamp == datetime(2025, 5, 5, 4, 5, 5, tzinfo=UTC)
        ir = submit(desk_domain, {"timestamp": 0, "rawPayload": {"meta": {"at": "2025-05-05T05:05:05Z"}}})
        assert ir.record.timestamp == datetime(1970, 1, 1, tzinfo=UTC)  # the envelope wins

    @pytest.mark.parametrize("value", ["9" * 400, 10**400], ids=["digit-string", "big-int"])
    def test_huge_epoch_uses_receive_time(self, desk_domain: CompiledDomainPack, value: Any) -> None:
        ir = submit(desk_domain, {"timestamp": value, "rawPayload": {"a": 1}})
        assert ir.record.timestamp == RECEIVED

    def test_source_id(self, desk_domain: CompiledDomainPack) -> None:
        assert (
            submit(desk_domain, {"sourceId": "S-1", "rawPayload": {"meta": {"id": "P"}}}).source_id == "S-1"
        )
        assert (
            submit(desk_domain, {"rawPayload": {"meta": {"id": "P-9"}}}).source_id == "P-9"
        )  # sourceIdField
        assert submit(desk_domain, {"rawPayload": {"meta": {"id": 42}}}).source_id == "42"
        assert submit(desk_domain, {"rawPayload": {"meta": {"id": True}}}).source_id is None
        assert submit(desk_domain, {"rawPayload": {"meta": {"id": "  "}}}).source_id is None
        assert submit(desk_domain, {"rawPayload": {"a": 1}}).source_id is None
        assert submit(desk_domain, {"rawPayload": {"a": 1}}).idempotency_key is None

    def test_normalized_context_from_intake_fields(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(desk_domain, {"rawPayload": {"orderId": "O7", "amount": 12.5, "account": {"id": 3}}})
        assert ir.record.normalized_context == {
            "orderId": "O7",
            "amount": 12.5,
            "account": {"id": 3},
            "ref": "ord-O7",
        }

    def test_missing_key_fields_are_listed_in_evidence(self, desk_domain: CompiledDomainPack) -> None:
        # Only the fields that identify this type's problem (fingerprint fields, entity keys) are worth a note:
        # intake.fields spans the whole domain, so most are legitimately absent for any one type.
        ir = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"amount": 5}})
        assert ir.record.normalized_context == {"amount": 5}
        absent = [m for m in messages(ir.decision) if "absent" in m]
        assert absent == ["key fields absent from the payload: orderId"]
        ir = submit(desk_domain, {"exceptionType": "LATE", "rawPayload": {"amount": 5}})
        assert not [m for m in messages(ir.decision) if "absent" in m]

    def test_missing_entity_keys_are_listed_in_evidence(self) -> None:
        def mutate(d: dict[str, Any]) -> None:
            d["entities"] = {"Account": {"keys": ["account"], "attributes": {"account": {}}}}
            d["exceptionTypes"]["INFO"]["entities"] = ["Account"]

        ir = submit(domain_with(mutate), {"exceptionType": "INFO", "rawPayload": {"orderId": "O"}})
        assert [m for m in messages(ir.decision) if "absent" in m] == [
            "key fields absent from the payload: account"
        ]

    def test_null_fields_are_left_out_silently(self, desk_domain: CompiledDomainPack) -> None:
        ir = submit(
            desk_domain,
            {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": None, "account": "A"}},
        )
        assert ir.record.normalized_context == {"orderId": "O", "account": "A", "ref": "ord-O"}
        assert not [m for m in messages(ir.decision) if "absent" in m]

    def test_fingerprint_over_the_types_fingerprint_fields(self, desk_domain: CompiledDomainPack) -> None:
        a = submit(
            desk_domain,
            {"exceptionType": "BREAK", "sourceSystem": "s1", "rawPayload": {"orderId": "O1", "amount": 5}},
        )
        b = submit(
            desk_domain,
            {"exceptionType": "BREAK", "sourceSystem": "s2", "rawPayload": {"orderId": "O1", "amount": 999}},
        )
        c = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O2", "amount": 5}})
        d = submit(desk_domain, {"exceptionType": "SUB_BREAK", "rawPayload": {"orderId": "O1", "amount": 5}})
        assert a.fingerprint == b.fingerprint  # same order: the same problem, whatever the source
        assert a.fingerprint != c.fingerprint
        assert a.fingerprint != d.fingerprint  # the type is part of it
        assert len(a.fingerprint) == 32
        assert "fingerprint over orderId" in messages(a.decision)
        fp_ev = [e for e in a.decision.evidence if e.kind == "fingerprint"]
        assert fp_ev[0].ref == a.fingerprint

    def test_default_fingerprint_uses_id_fields_and_source(self, desk_domain: CompiledDomainPack) -> None:
        # LATE has no fingerprintFields: key ids (fields ending in Id) plus the source system identify it.
        a = submit(
            desk_domain,
            {"exceptionType": "LATE", "sourceSystem": "s1", "rawPayload": {"orderId": "O1", "amount": 1}},
        )
        b = submit(
            desk_domain,
            {"exceptionType": "LATE", "sourceSystem": "s1", "rawPayload": {"orderId": "O1", "amount": 2}},
        )
        c = submit(
            desk_domain, {"exceptionType": "LATE", "sourceSystem": "s2", "rawPayload": {"orderId": "O1"}}
        )
        assert a.fingerprint == b.fingerprint
        assert a.fingerprint != c.fingerprint
        assert "fingerprint over orderId" in messages(a.decision)

    def test_default_fingerprint_without_ids_is_the_payload(self, desk_domain: CompiledDomainPack) -> None:
        a = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"note": "x"}})
        b = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"note": "x"}})
        c = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"note": "y"}})
        assert a.fingerprint == b.fingerprint != c.fingerprint
        assert "fingerprint over payload" in messages(a.decision)

    def test_fingerprint_ignores_payload_key_order(self, desk_domain: CompiledDomainPack) -> None:
        a = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"a": 1, "b": {"c": 2, "d": 3}}})
        b = submit(desk_domain, {"exceptionType": "INFO", "rawPayload": {"b": {"d": 3, "c": 2}, "a": 1}})
        assert a.fingerprint == b.fingerprint

    def test_fingerprint_of_entity_keys(self) -> None:
        def mutate(d: dict[str, Any]) -> None:
            d["entities"] = {"Account": {"keys": ["account"], "attributes": {"account": {}}}}
            d["exceptionTypes"]["INFO"]["entities"] = ["Account"]

        domain = domain_with(mutate)
        fp1, fields = fingerprint_of(domain, "INFO", "s", {"account": "A1", "orderId": "O1"}, {})
        fp2, _ = fingerprint_of(domain, "INFO", "s", {"account": "A1", "orderId": "O2"}, {})
        assert fields == ["account"]
        assert fp1 == fp2  # the entity key, not every *Id field, identifies the problem

    def test_fingerprint_fields_all_missing_do_not_collide(self, desk_domain: CompiledDomainPack) -> None:
        a = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"desk": "rates", "amount": 1}})
        b = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"desk": "equities", "amount": 2}})
        assert a.fingerprint != b.fingerprint

    @pytest.mark.parametrize("payload", [{"note": 10**20}, {"orderId": 10**20}])
    def test_payload_with_a_big_integer(
        self, desk_domain: CompiledDomainPack, payload: dict[str, Any]
    ) -> None:
        ir = submit(
            desk_domain, {"exceptionType": "INFO" if "note" in payload else "BREAK", "rawPayload": payload}
        )
        assert len(ir.fingerprint) == 32

    def test_long_payload_source_system(self, desk_domain: CompiledDomainPack) -> None:
        try:
            ir = submit(desk_domain, {"rawPayload": {"sourceSystem": "s" * 300}})
        except IntakeRejected:
            return
        assert len(ir.record.source_system) <= 200

    _SAFE_LEAF = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    _SAFE_JSON = st.recursive(
        _SAFE_LEAF,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
        max_leaves=12,
    )
    _KEYS = st.sampled_from(
        [
            "exceptionType",
            "sourceSystem",
            "timestamp",
            "rawPayload",
            "tenantId",
            "sourceId",
            "idempotencyKey",
            "orderId",
            "amount",
            "failReason",
            "delayMinutes",
            "kind",
            "meta",
        ]
    )

    @settings(max_examples=300, deadline=None)
    @given(data=st.dictionaries(_KEYS, _SAFE_JSON, max_size=6))
    def test_intake_returns_a_record_or_rejects(self, data: dict[str, Any]) -> None:
        """Property: any JSON object (within the known-bug bounds above) becomes a record or IntakeRejected."""
        desk_domain = _DESK
        try:
            ir = submit(desk_domain, data)
        except IntakeRejected as exc:
            assert str(exc)
            return
        assert ir.record.timestamp.tzinfo is not None and ir.record.timestamp.utcoffset() == timedelta(0)
        assert ir.record.exception_type == UNCLASSIFIED or ir.record.exception_type in desk_domain.types
        assert 0.0 <= ir.type_confidence <= 1.0


# =============================================================================================== triage


class TestTriage:
    def test_highest_matching_rule_wins(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        data = {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 5000, "vip": True}}
        tri = run(desk_domain, desk_tenant, data).triage
        assert tri is not None
        assert tri.severity == Severity.HIGH  # big-break HIGH beats vip-medium MEDIUM, declared later
        assert tri.severity_source == "rule"
        assert tri.matched_rules == ("big-break", "vip-medium")
        msgs = messages(tri.decision)
        assert "rule big-break matched → HIGH" in msgs and "rule vip-medium matched → MEDIUM" in msgs

    def test_highest_wins_even_when_declared_first(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        data = {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 500000}}
        tri = run(desk_domain, desk_tenant, data).triage
        assert tri is not None
        assert tri.severity == Severity.CRITICAL
        assert tri.matched_rules == ("big-break", "huge")

    def test_rule_that_errors_is_evidence_not_a_match(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        tri = run(desk_domain, desk_tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O"}}).triage
        assert tri is not None
        assert tri.severity_source == "type-default"
        assert "rule big-break did not match: missing field 'amount'" in messages(tri.decision)

    def test_type_default(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        tri = run(desk_domain, desk_tenant, BREAK_SMALL).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source, tri.matched_rules) == (Severity.MEDIUM, "type-default", ())
        assert tri.confidence == 0.9
        assert "no rule matched: default of BREAK is MEDIUM" in messages(tri.decision)

    def test_type_default_inherited_from_parent(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        tri = run(
            desk_domain, desk_tenant, {"exceptionType": "SUB_BREAK", "rawPayload": {"amount": 5}}
        ).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.MEDIUM, "type-default")
        assert tri.root_cause_hint == "Stale price feed."  # the parent's hint

    def test_pack_default(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        tri = run(desk_domain, desk_tenant, {"exceptionType": "INFO", "rawPayload": {"note": 1}}).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.LOW, "pack-default")
        assert tri.confidence == 0.7
        assert "no rule matched: pack default LOW" in messages(tri.decision)

    def test_tenant_override_replaces_the_severity(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        tri = run(
            desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": {"failReason": "disk"}}
        ).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.MEDIUM, "override")
        ov = [e for e in tri.decision.evidence if e.kind == "severity-override"]
        assert [(e.message, e.ref) for e in ov] == [
            ("tenant t1 overrides LOW → MEDIUM (disk failures hurt)", "severityOverrides[0]")
        ]
        assert tri.confidence == 1.0

    def test_override_condition_not_met(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        tri = run(
            desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": {"failReason": "net"}}
        ).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.LOW, "pack-default")
        assert not [e for e in tri.decision.evidence if e.kind == "severity-override"]

    def test_override_condition_error_is_evidence(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        tri = run(desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": {"other": 1}}).triage
        assert tri is not None
        assert tri.severity_source == "pack-default"
        assert "override 0 skipped: missing field 'failReason'" in messages(tri.decision)

    def test_last_matching_override_wins_even_over_rules(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            severityOverrides=[
                {"exceptionType": "BREAK", "severity": "CRITICAL"},
                {"exceptionType": "BREAK", "severity": "LOW", "condition": "rawPayload.amount < 10000"},
                {"exceptionType": "BREAK", "severity": "HIGH", "condition": "rawPayload.amount > 10000"},
            ],
        )
        tri = run(desk_domain, tenant, BREAK_BIG).triage  # rule says HIGH
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.LOW, "override")
        refs = [e.ref for e in tri.decision.evidence if e.kind == "severity-override"]
        assert refs == ["severityOverrides[0]", "severityOverrides[1]"]
        assert tri.matched_rules == ("big-break",)  # the rule still matched, and is on record

    def test_override_of_another_type_does_nothing(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain, severityOverrides=[{"exceptionType": "FAIL", "severity": "CRITICAL"}]
        )
        tri = run(desk_domain, tenant, BREAK_SMALL).triage
        assert tri is not None and tri.severity == Severity.MEDIUM

    @pytest.mark.parametrize(
        ("data", "confidence"),
        [
            (BREAK_BIG, 1.0 * 1.0),  # explicit x rule
            (BREAK_SMALL, 1.0 * 0.9),  # explicit x type default
            ({"exceptionType": "INFO", "rawPayload": {"x": 1}}, 1.0 * 0.7),  # explicit x pack default
            ({"rawPayload": {"failReason": "oom"}}, 0.6 * 0.7),  # detected x pack default
            ({"rawPayload": {"failReason": "disk"}}, 0.6 * 1.0),  # detected x override
            ({"rawPayload": {"delayMinutes": 90}}, 0.9 * 0.9),  # detected x type default
            ({"rawPayload": {"delayMinutes": 900}}, 0.9 * 1.0),  # detected x rule
            ({"rawPayload": {"x": 1}}, 0.0),  # unclassified
        ],
    )
    def test_confidence_is_type_times_severity_confidence(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, data: dict[str, Any], confidence: float
    ) -> None:
        tri = run(desk_domain, desk_tenant, data).triage
        assert tri is not None
        assert tri.confidence == pytest.approx(confidence)
        assert tri.decision.confidence == tri.confidence

    def test_severity_confidence_table(self) -> None:
        assert SEVERITY_CONFIDENCE == {"rule": 1.0, "override": 1.0, "type-default": 0.9, "pack-default": 0.7}

    @pytest.mark.parametrize(
        ("severity", "recurrence", "source", "score"),
        [
            (Severity.LOW, 0, "explicit", 20),
            (Severity.MEDIUM, 0, "explicit", 45),
            (Severity.HIGH, 0, "detected", 70),
            (Severity.CRITICAL, 0, "explicit", 90),
            (Severity.MEDIUM, 1, "explicit", 47),
            (Severity.MEDIUM, 3, "explicit", 51),
            (Severity.MEDIUM, 4, "explicit", 53),
            (Severity.MEDIUM, 50, "explicit", 53),  # capped at +8
            (Severity.LOW, 0, "unclassified", 22),
            (Severity.CRITICAL, 10, "unclassified", 100),
            (Severity.LOW, -3, "explicit", 20),
        ],
    )
    def test_priority_formula(self, severity: Severity, recurrence: int, source: str, score: int) -> None:
        assert priority_score(severity, recurrence, source) == score

    def test_priority_reflects_recurrence(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        rec = RecurrenceInfo(
            count=2,
            first_seen=RECEIVED,
            last_seen=RECEIVED,
            last_exception_id="ex-0",
            last_resolution="RESOLVED by PB_BREAK",
        )
        tri = run(desk_domain, desk_tenant, BREAK_SMALL, recurrence=rec).triage
        assert tri is not None
        assert tri.priority == 45 + 4
        ev = [e for e in tri.decision.evidence if e.kind == "recurrence"]
        assert [(e.message, e.ref) for e in ev] == [
            (
                "recurring: occurrence 3 of this fingerprint (threshold 3); last resolution: RESOLVED by PB_BREAK",
                "ex-0",
            )
        ]

    def test_recurrence_below_threshold_is_seen_before(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        rec = RecurrenceInfo(count=1, first_seen=None, last_seen=None, last_exception_id=None)
        tri = run(desk_domain, desk_tenant, BREAK_SMALL, recurrence=rec).triage
        assert tri is not None
        assert "seen before: occurrence 2 of this fingerprint (threshold 3)" in messages(tri.decision)
        none = run(
            desk_domain,
            desk_tenant,
            BREAK_SMALL,
            recurrence=RecurrenceInfo(count=0, first_seen=None, last_seen=None, last_exception_id=None),
        )
        assert none.triage is not None
        assert not [e for e in none.triage.decision.evidence if e.kind == "recurrence"]

    def test_similar_cases_are_evidence(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        similar = (SimilarCase("ex-9", 0.876, "a break", "resolved, playbook PB_BREAK"),
                   SimilarCase("ex-8", 0.5, "another"))
        tri = run(desk_domain, desk_tenant, BREAK_SMALL, similar=similar).triage
        assert tri is not None
        ev = [(e.message, e.ref, e.data) for e in tri.decision.evidence if e.kind.startswith("similar")]
        assert ev == [(
            "similar to ex-9 (0.88): resolved, playbook PB_BREAK; ex-8 (0.50)",
            "ex-9",
            {"cases": [{"exceptionId": "ex-9", "score": 0.876, "resolution": "resolved, playbook PB_BREAK"},
                       {"exceptionId": "ex-8", "score": 0.5}]},
        )]
        alone = run(desk_domain, desk_tenant, BREAK_SMALL).triage
        assert alone is not None and not [e for e in alone.decision.evidence if e.kind.startswith("similar")]

    def test_similar_case_ids_that_are_not_plain_are_quoted_in_the_text(self) -> None:
        """Intake accepts any id: one holding the text's separators, quotes or a line break is shown as a
        JSON string, so the text stays one line and says where each id ends; `data.cases` keeps the id."""
        odd = 'E-1; E-2 (0.99): fixed\n"x"'
        similar = (SimilarCase(odd, 0.9, "s", "closed"), SimilarCase("ex-8", 0.5, "s"),
                   SimilarCase("tab\there", 0.4, "s"))
        item = similar_evidence(similar)
        assert item.message == ('similar to "E-1; E-2 (0.99): fixed\\n\\"x\\"" (0.90): closed; ex-8 (0.50); '
                                '"tab\\there" (0.40)')
        assert item.ref == odd and item.data is not None
        assert [c["exceptionId"] for c in item.data["cases"]] == [odd, "ex-8", "tab\there"]

    @pytest.mark.parametrize("eid", ["EX-000123", "ORD/2026:07#a.b_c+d", "émission-42", "a\\b", "x,y",
                                     "ключ"])
    def test_plain_ids_are_shown_as_they_are(self, eid: str) -> None:
        assert similar_evidence((SimilarCase(eid, 0.5, "s"),)).message == f"similar to {eid} (0.50)"

    @pytest.mark.parametrize("eid", ["a b", "a;b", "a(b", "a)b", 'a"b', '"a"', "a\x00b", "a\x1fb", "a\x7fb",
                                     "a\x85b", "a\xa0b", "a\u2028b", "a\u200bb", "a\u202eb", "a\ufeffb",
                                     "a\rb", "a\u00adb"])
    def test_other_ids_are_json_strings(self, eid: str) -> None:
        message = similar_evidence((SimilarCase(eid, 0.5, "s"),)).message
        assert message == f"similar to {json.dumps(eid)} (0.50)" and message.isprintable()

    def test_summary_and_next_step(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        tri = run(desk_domain, desk_tenant, {**BREAK_BIG, "timestamp": "2026-01-02T03:04:05Z"}).triage
        assert tri is not None
        assert tri.summary.startswith(
            "BREAK from recon at 2026-01-02 03:04 UTC: A reconciliation break. "
            "Severity HIGH because rule(s) big-break matched."
        )
        assert "orderId=O1" in tri.summary and "amount=5000" in tri.summary
        assert tri.summary.endswith("Likely cause: Stale price feed.")
        assert tri.decision.decision == "severity HIGH, priority 70"
        assert tri.decision.next_step == "policy"

    def test_unclassified_triage_escalates(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        tri = run(desk_domain, desk_tenant, {"rawPayload": {"x": 1}}).triage
        assert tri is not None
        assert tri.decision.next_step == "escalate"
        assert tri.priority == 22
        assert "An exception no rule could classify" in tri.summary


# =============================================================================================== policy


class TestPolicy:
    def test_unclassified(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        pol = policy_for(desk_domain, desk_tenant, {"rawPayload": {"x": 1}})
        assert pol.actionability == Actionability.NON_ACTIONABLE_INFO_ONLY
        assert (pol.playbook_id, pol.candidate_playbooks) == (None, ())
        assert pol.escalate is True and pol.approval_required is False
        assert pol.decision.next_step == "escalate"
        assert "unclassified exceptions have no process: escalate" in messages(pol.decision)

    def test_no_candidate_is_information_only(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        pol = policy_for(desk_domain, desk_tenant, {"exceptionType": "INFO", "rawPayload": {"x": 1}})
        assert pol.actionability == Actionability.NON_ACTIONABLE_INFO_ONLY
        assert pol.escalate is False and pol.approval_required is False
        assert pol.decision.next_step == "monitor"
        assert "no playbook handles INFO: information only" in messages(pol.decision)
        assert pol.decision.decision == "NON_ACTIONABLE_INFO_ONLY"

    def test_candidate_not_approved(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvedPlaybooks=["PB_FAIL"])
        pol = policy_for(desk_domain, tenant, {**BREAK_SMALL, "rawPayload": {"orderId": "O", "vip": True}})
        assert pol.actionability == Actionability.ACTIONABLE_NON_APPROVED_PROCESS
        assert pol.playbook_id is None
        assert pol.candidate_playbooks == ("PB_BREAK_VIP", "PB_BREAK")
        assert pol.escalate is True
        assert pol.decision.next_step == "escalate"
        msgs = messages(pol.decision)
        assert "PB_BREAK_VIP matches but is not approved" in msgs
        assert "PB_BREAK matches but is not approved" in msgs
        assert "no approved playbook: a person must handle it" in msgs

    def test_blocked_playbook_is_skipped(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            approvedPlaybooks=["PB_BREAK", "PB_BREAK_VIP"],
            guardrails={"blockedPlaybooks": ["PB_BREAK_VIP"]},
        )
        pol = policy_for(
            desk_domain, tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "vip": True}}
        )
        assert pol.playbook_id == "PB_BREAK"
        assert "PB_BREAK_VIP blocked by tenant guardrails" in messages(pol.decision)
        only = tenant_with(desk_domain, guardrails={"blockedPlaybooks": ["PB_BREAK"]})
        pol = policy_for(desk_domain, only, BREAK_SMALL)
        assert pol.actionability == Actionability.ACTIONABLE_NON_APPROVED_PROCESS

    def test_condition_not_met(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvedPlaybooks=["PB_BREAK", "PB_BREAK_VIP"])
        pol = policy_for(
            desk_domain, tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "vip": False}}
        )
        assert pol.playbook_id == "PB_BREAK"
        assert pol.candidate_playbooks == ("PB_BREAK",)
        assert "PB_BREAK_VIP condition not met" in messages(pol.decision)
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)
        assert "PB_BREAK_VIP condition not met: missing field 'vip'" in messages(pol.decision)

    def test_priority_orders_candidates(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvedPlaybooks=["PB_BREAK", "PB_BREAK_VIP"])
        vip = {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "vip": True}}
        pol = policy_for(desk_domain, tenant, vip)
        assert pol.playbook_id == "PB_BREAK_VIP"  # priority 5 beats 1
        assert "selected PB_BREAK_VIP (priority 5)" in messages(pol.decision)
        pol = policy_for(desk_domain, tenant_with(desk_domain), vip)  # VIP not approved: the next one
        assert pol.playbook_id == "PB_BREAK"
        assert pol.candidate_playbooks == ("PB_BREAK_VIP", "PB_BREAK")

    def test_parent_type_playbook_applies_to_child(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        pol = policy_for(
            desk_domain, desk_tenant, {"exceptionType": "SUB_BREAK", "rawPayload": {"orderId": "O"}}
        )
        assert pol.playbook_id == "PB_BREAK"

    def test_no_approval_needed(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        pol = policy_for(desk_domain, desk_tenant, BREAK_SMALL)
        assert pol.actionability == Actionability.ACTIONABLE_APPROVED_PROCESS
        assert pol.playbook_id == "PB_BREAK"
        assert (pol.approval_required, pol.approval_reasons, pol.escalate) == (False, (), False)
        assert pol.approvers == ("approver",) and pol.approvals_needed == 1
        assert pol.decision.next_step == "plan"
        assert pol.decision.decision == "ACTIONABLE_APPROVED_PROCESS via PB_BREAK"

    def test_approval_rule_by_severity(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        pol = policy_for(desk_domain, desk_tenant, BREAK_BIG)
        assert pol.approval_reasons == ("approval rule writes-on-high",)
        assert pol.approval_required is True
        assert pol.approvers == ("lead",) and pol.approvals_needed == 2
        assert pol.decision.next_step == "await_approval"
        assert pol.decision.decision.endswith(", approval required")
        assert "approval rule writes-on-high" in messages(pol.decision)

    @pytest.mark.parametrize(
        ("rule", "data", "applies"),
        [
            ({"exceptionTypes": ["BREAK"]}, BREAK_SMALL, True),
            ({"exceptionTypes": ["FAIL"]}, BREAK_SMALL, False),
            ({"toolEffects": ["write"]}, BREAK_SMALL, True),  # PB_BREAK writes (fixOrder, notify)
            (
                {"toolEffects": ["write"]},
                {"exceptionType": "GATED", "rawPayload": {}},
                False,
            ),  # audit only reads
            ({"toolEffects": ["read"]}, {"exceptionType": "GATED", "rawPayload": {}}, True),
            ({"confidenceBelow": 0.95}, BREAK_SMALL, True),  # type default: 0.9
            ({"confidenceBelow": 0.9}, BREAK_SMALL, False),  # strictly below
            ({"condition": "rawPayload.amount > 10"}, BREAK_SMALL, True),
            ({"condition": "rawPayload.amount > 100"}, BREAK_SMALL, False),
            ({"condition": "rawPayload.nothing > 100"}, BREAK_SMALL, False),  # missing data: no match
            ({"condition": "severity == 'MEDIUM' && confidence > 0.8"}, BREAK_SMALL, True),
            (
                {"severities": ["MEDIUM"], "exceptionTypes": ["BREAK"], "condition": "false"},
                BREAK_SMALL,
                False,
            ),
            ({}, BREAK_SMALL, True),  # no criteria: matches everything
            (
                {"requireApproval": False},
                BREAK_SMALL,
                False,
            ),  # a rule that does not require approval is ignored
        ],
    )
    def test_approval_rule_criteria(
        self, desk_domain: CompiledDomainPack, rule: dict[str, Any], data: dict[str, Any], applies: bool
    ) -> None:
        tenant = tenant_with(desk_domain, approvalRules=[{"id": "r", **rule}])
        pol = policy_for(desk_domain, tenant, data)
        assert pol.playbook_id is not None
        assert ("approval rule r" in pol.approval_reasons) is applies
        if data is BREAK_SMALL:
            assert pol.approval_required is applies

    def test_several_rules_merge_approvers(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            approvalRules=[
                {"id": "a", "approverRoles": ["lead", "ops"], "approvalsNeeded": 2},
                {"id": "b", "approverRoles": ["ops", "risk"], "approvalsNeeded": 3},
                {"id": "c", "severities": ["CRITICAL"], "approverRoles": ["cro"], "approvalsNeeded": 5},
            ],
        )
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)
        assert pol.approval_reasons == ("approval rule a", "approval rule b")
        assert pol.approvers == ("lead", "ops", "risk")
        assert pol.approvals_needed == 3

    @pytest.mark.parametrize(
        ("domain_list", "tenant_list", "applies"),
        [
            ([], ["MEDIUM"], True),  # the tenant's own
            (["MEDIUM"], None, True),  # the domain's
            (["MEDIUM"], [], True),  # a tenant cannot lower the domain's floor
            (["HIGH"], ["LOW"], False),
            ([], None, False),
        ],
    )
    def test_no_auto_action_severities(
        self, domain_list: list[str], tenant_list: list[str] | None, applies: bool
    ) -> None:
        domain = domain_with(lambda d: d["guardrails"].update(noAutoActionIfSeverityIn=domain_list))
        guard = {} if tenant_list is None else {"noAutoActionIfSeverityIn": tenant_list}
        pol = policy_for(domain, tenant_with(domain, guardrails=guard), BREAK_SMALL)
        reason = "guardrail noAutoActionIfSeverityIn includes MEDIUM"
        assert (reason in pol.approval_reasons) is applies
        assert pol.approval_required is applies

    def test_critical_needs_approval_unless_allowed(self, desk_domain: CompiledDomainPack) -> None:
        data = {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 500000}}
        pol = policy_for(desk_domain, tenant_with(desk_domain, approvalRules=[]), data)
        assert pol.approval_reasons == ("CRITICAL never auto-executes (allowAutoActionOnCritical is false)",)
        allowed = tenant_with(desk_domain, approvalRules=[], guardrails={"allowAutoActionOnCritical": True})
        pol = policy_for(desk_domain, allowed, data)
        assert pol.approval_reasons == ()
        assert pol.approval_required is False

    def test_require_approval_for_types(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        pol = policy_for(
            desk_domain, desk_tenant, {"exceptionType": "GATED", "rawPayload": {}}
        )  # domain list
        assert pol.approval_reasons == ("guardrail requireApprovalForTypes includes GATED",)
        tenant = tenant_with(desk_domain, guardrails={"requireApprovalForTypes": ["BREAK"]})  # tenant list
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)
        assert pol.approval_reasons == ("guardrail requireApprovalForTypes includes BREAK",)

    def test_step_that_always_needs_approval(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        pol = policy_for(
            desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": {"failReason": "x"}}
        )
        assert pol.playbook_id == "PB_FAIL"
        assert pol.approval_reasons == ("step(s) wake always need approval",)

    def test_blocked_tool_is_named_with_its_rule(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, guardrails={"blockedTools": ["notify"]})
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)
        assert pol.playbook_id == "PB_BREAK"
        assert pol.blocked_tools == (("notify", "tenant guardrails.blockedTools (t1@2.0.0)"),)
        assert pol.approval_reasons == ("tool notify blocked: tenant guardrails.blockedTools (t1@2.0.0)",)
        assert pol.approval_required is True

    def test_domain_blocked_tool_is_named_with_its_rule(self) -> None:
        domain = domain_with(lambda d: d["guardrails"].update(blockedTools=["getOrder"]))
        pol = policy_for(domain, tenant_with(domain), BREAK_SMALL)
        assert pol.blocked_tools == (("getOrder", "domain guardrails.blockedTools (desk@1.2.0)"),)

    def test_tool_not_in_the_allow_list_is_blocked(self, desk_domain: CompiledDomainPack) -> None:
        data = desk_tenant_data()
        data["tools"]["allow"] = ["fixOrder", "audit", "page"]
        tenant = tenant_from(data, desk_domain)
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)
        assert pol.blocked_tools == (
            ("getOrder", "not in tools.allow of t1@2.0.0"),
            ("notify", "not in tools.allow of t1@2.0.0"),
        )
        assert pol.approval_reasons == (
            "tool getOrder blocked: not in tools.allow of t1@2.0.0",
            "tool notify blocked: not in tools.allow of t1@2.0.0",
        )

    def test_escalate_below_confidence(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, guardrails={"escalateIfConfidenceBelow": 0.95})
        pol = policy_for(desk_domain, tenant, BREAK_SMALL)  # confidence 0.9
        assert pol.escalate is True
        assert pol.approval_reasons == ("confidence 0.90 below escalateIfConfidenceBelow 0.95",)
        assert pol.decision.next_step == "escalate"
        pol = policy_for(desk_domain, tenant, BREAK_BIG)  # confidence 1.0
        assert pol.escalate is False

    def test_reasons_accumulate_in_a_stable_order(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            approvalRules=[{"id": "all"}],
            guardrails={
                "noAutoActionIfSeverityIn": ["CRITICAL"],
                "requireApprovalForTypes": ["BREAK"],
                "blockedTools": ["notify"],
                "escalateIfConfidenceBelow": 1.0,
            },
        )
        data = {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 500000}}
        pol = policy_for(desk_domain, tenant, data)
        assert pol.approval_reasons == (
            "approval rule all",
            "guardrail noAutoActionIfSeverityIn includes CRITICAL",
            "CRITICAL never auto-executes (allowAutoActionOnCritical is false)",
            "guardrail requireApprovalForTypes includes BREAK",
            "tool notify blocked: tenant guardrails.blockedTools (t1@2.0.0)",
        )
        assert pol.escalate is False  # confidence 1.0 is not below 1.0

    @pytest.mark.parametrize(
        ("data", "routes"),
        [
            (BREAK_SMALL, ("ops-breaks",)),
            (
                {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 500000, "vip": True}},
                ("ops-breaks", "crit", "vip"),
            ),
            ({"exceptionType": "INFO", "rawPayload": {"amount": 500000}}, ("crit",)),
            ({"exceptionType": "INFO", "rawPayload": {}}, ()),
            ({"rawPayload": {"vip": True}}, ("vip",)),  # unclassified exceptions are routed too
        ],
    )
    def test_routes(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, data: dict[str, Any], routes: tuple[str, ...]
    ) -> None:
        pol = policy_for(desk_domain, desk_tenant, data)
        assert pol.routes == routes
        if routes:
            assert f"route to {', '.join(routes)}" in messages(pol.decision)

    def test_routes_are_deduplicated(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            notifications=[{"group": "g"}, {"group": "g", "severities": ["MEDIUM"]}, {"group": "h"}],
        )
        assert policy_for(desk_domain, tenant, BREAK_SMALL).routes == ("g", "h")

    def test_rules_naming_a_parent_type_cover_its_children(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            approvalRules=[{"id": "breaks", "exceptionTypes": ["BREAK"]}],
            guardrails={"requireApprovalForTypes": ["BREAK"]},
        )
        sub = {"exceptionType": "SUB_BREAK", "rawPayload": {"orderId": "O", "amount": 5}}
        pol = policy_for(desk_domain, tenant, sub)
        assert pol.playbook_id == "PB_BREAK"
        assert pol.routes == ("ops-breaks",)
        assert pol.approval_reasons == (
            "approval rule breaks",
            "guardrail requireApprovalForTypes includes BREAK",
        )
        other = policy_for(desk_domain, tenant, {"exceptionType": "GATED", "rawPayload": {}})
        assert "approval rule breaks" not in other.approval_reasons
        assert other.routes == ()

    def test_parent_override_applies_to_the_child(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain,
            severityOverrides=[
                {"exceptionType": "BREAK", "severity": "CRITICAL", "reason": "all breaks"},
            ],
        )
        tri = run(desk_domain, tenant, {"exceptionType": "SUB_BREAK", "rawPayload": {"amount": 5}}).triage
        assert tri is not None
        assert (tri.severity, tri.severity_source) == (Severity.CRITICAL, "override")
        child_last = tenant_with(
            desk_domain,
            severityOverrides=[
                {"exceptionType": "SUB_BREAK", "severity": "LOW"},
                {"exceptionType": "BREAK", "severity": "CRITICAL"},
            ],
        )
        tri = run(desk_domain, child_last, {"exceptionType": "SUB_BREAK", "rawPayload": {"amount": 5}}).triage
        assert tri is not None
        assert tri.severity == Severity.LOW  # the child's own override is applied last


# =========================================================================================== resolution


class TestResolution:
    def test_plan_of_an_approved_playbook(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, BREAK_SMALL)
        assert out.plan is not None and out.plan.playbook_id == "PB_BREAK"
        steps = steps_by_id(out)
        assert list(steps) == ["fetch", "fix", "tell"]
        fetch = steps["fetch"]
        assert (fetch.status, fetch.tool, fetch.effect, fetch.args) == (
            "PLANNED",
            "getOrder",
            "read",
            {"orderId": "O2"},
        )
        assert fetch.requires_approval is False and fetch.description == "call getOrder"
        assert steps["tell"].args == {"channel": "ops", "text": "break on ord-O2"}
        assert out.plan.dry_run is True and out.plan.approval_required is False and out.plan.draft is None

    def test_when_on_earlier_steps_defers_the_condition(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        fix = steps_by_id(run(desk_domain, desk_tenant, BREAK_SMALL))["fix"]
        assert fix.status == "DEFERRED_CONDITION"
        assert fix.args == {"orderId": "O2", "amount": 50}
        assert fix.reason == "when depends on earlier step outputs; decided at execution"
        # The tool's own compensation is revertOrder, which this tenant does not allow: a plan never names it.
        assert fix.compensate is None
        assert fix.on_failure == "escalate"

    def test_deferred_condition_with_incomplete_args(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        fix = steps_by_id(
            run(desk_domain, desk_tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O"}})
        )
        assert fix["fix"].status == "DEFERRED_CONDITION"
        assert fix["fix"].args is None
        assert "arguments not yet complete" in fix["fix"].reason and "'amount'" in fix["fix"].reason

    def test_args_on_earlier_steps_are_rendered_at_execution(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        out = run(desk_domain, desk_tenant, {"rawPayload": {"delayMinutes": 90, "channel": "late"}})
        follow = steps_by_id(out)["follow"]
        assert (follow.status, follow.tool, follow.args) == ("PLANNED", "notify", None)
        assert follow.reason == "arguments use earlier step outputs; rendered at execution"

    def test_manual_step(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": {"failReason": "x"}})
        look = steps_by_id(out)["look"]
        assert (look.status, look.tool, look.effect, look.args) == ("MANUAL", None, None, None)
        assert look.description == "Check the job logs." and look.requires_approval is False

    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            ({"failReason": "x", "retryable": False}, "condition is false"),
            ({"failReason": "x"}, "missing field 'retryable'"),
        ],
    )
    def test_when_false_skips_the_step(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, payload: dict[str, Any], reason: str
    ) -> None:
        step = steps_by_id(run(desk_domain, desk_tenant, {"exceptionType": "FAIL", "rawPayload": payload}))
        skipped = step["retry-note"]
        assert (skipped.status, skipped.args, skipped.requires_approval) == ("SKIPPED", None, False)
        assert skipped.tool == "notify"
        assert skipped.reason == f"when 'rawPayload.retryable == true': {reason}"

    def test_skipped_step_names_no_forbidden_tool(self, desk_domain: CompiledDomainPack) -> None:
        data = desk_tenant_data()
        data["tools"]["allow"] = ["page"]
        tenant = tenant_from(data, desk_domain)
        out = run(desk_domain, tenant, {"exceptionType": "FAIL", "rawPayload": {"failReason": "x"}})
        skipped = steps_by_id(out)["retry-note"]
        assert (skipped.status, skipped.tool) == ("SKIPPED", None)

    def test_when_true_plans_the_step(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(
            desk_domain,
            desk_tenant,
            {"exceptionType": "FAIL", "rawPayload": {"failReason": "x", "retryable": True}},
        )
        assert steps_by_id(out)["retry-note"].status == "PLANNED"
        assert steps_by_id(out)["wake"].requires_approval is True  # requiresApproval: true
        assert out.plan is not None and out.plan.approval_required is True

    def test_invalid_args_missing_field(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, {"rawPayload": {"delayMinutes": 90}})
        tell = steps_by_id(out)["tell"]
        assert (tell.status, tell.args, tell.requires_approval) == ("INVALID_ARGS", None, True)
        assert tell.tool == "notify"
        assert tell.reason == "${rawPayload.channel}: missing field 'channel'"

    def test_invalid_args_schema_error(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, {"rawPayload": {"delayMinutes": 90, "channel": 42}})
        tell = steps_by_id(out)["tell"]
        assert (tell.status, tell.args) == ("INVALID_ARGS", {"channel": 42})
        assert tell.reason == "$.channel: 42 is not of type 'string'"
        assert out.status == ResolutionStatus.ESCALATED  # the supervisor will not run a broken plan

    def test_blocked_tool_step_carries_no_tool(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, guardrails={"blockedTools": ["notify"]})
        tell = steps_by_id(run(desk_domain, tenant, BREAK_SMALL))["tell"]
        assert (tell.status, tell.tool, tell.effect, tell.args) == ("BLOCKED", None, None, None)
        assert tell.requires_approval is True
        assert tell.reason == "tool notify blocked by tenant guardrails.blockedTools (t1@2.0.0)"

    def test_not_allowed_tool_step_carries_no_tool(self, desk_domain: CompiledDomainPack) -> None:
        data = desk_tenant_data()
        data["tools"]["allow"] = ["fixOrder", "notify"]
        tenant = tenant_from(data, desk_domain)
        fetch = steps_by_id(run(desk_domain, tenant, BREAK_SMALL))["fetch"]
        assert (fetch.status, fetch.tool) == ("BLOCKED", None)
        assert fetch.reason == "tool getOrder is not in tools.allow of t1@2.0.0"

    @pytest.mark.parametrize("allow", [[], ["getOrder"], ["notify", "page"], ["fixOrder", "audit"]])
    @pytest.mark.parametrize("blocked", [[], ["notify"], ["getOrder", "fixOrder"]])
    def test_a_plan_never_contains_a_forbidden_tool(
        self, desk_domain: CompiledDomainPack, allow: list[str], blocked: list[str]
    ) -> None:
        data = desk_tenant_data()
        data["tools"]["allow"] = allow
        data["guardrails"] = {"blockedTools": blocked}
        data["approvedPlaybooks"] = list(desk_domain.playbooks)
        tenant = tenant_from(data, desk_domain)
        for payload in (
            BREAK_SMALL,
            {"exceptionType": "FAIL", "rawPayload": {"failReason": "x", "retryable": True}},
            {"rawPayload": {"delayMinutes": 90, "channel": "c"}},
        ):
            out = run(desk_domain, tenant, payload)
            assert out.plan is not None and out.plan.steps
            for s in out.plan.steps:
                if s.tool is not None:
                    assert s.tool in allow and s.tool not in blocked

    def test_a_plan_never_names_a_forbidden_compensation_tool(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        assert "revertOrder" not in desk_tenant.allowed_tools
        out = run(desk_domain, desk_tenant, BREAK_SMALL)
        for s in out.plan.steps if out.plan else ():
            assert s.compensate is None or (
                s.compensate in desk_tenant.allowed_tools and s.compensate not in desk_tenant.blocked_tools
            )

    def test_draft_for_a_non_approved_process(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvedPlaybooks=[])
        out = run(
            desk_domain, tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "vip": True}}
        )
        assert out.plan is not None
        assert out.plan.playbook_id is None and out.plan.steps == ()
        assert out.plan.draft == {
            "id": "PB_BREAK_VIP-draft",
            "basedOn": "PB_BREAK_VIP",
            "approved": False,
            "steps": [
                {"stepId": "vip-note", "tool": "notify", "description": "notify"},
                {"stepId": "call-client", "tool": None, "description": "Call the client."},
            ],
        }
        assert out.plan.approval_required is False
        assert out.status == ResolutionStatus.ESCALATED
        assert out.approval_required is False
        res = next(e for e in out.events if e.stage == "resolution")
        assert "suggested draft PB_BREAK_VIP-draft (approved: false)" in messages(res.decision)

    def test_no_draft_without_candidates(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, {"exceptionType": "INFO", "rawPayload": {}})
        assert out.plan is not None and out.plan.draft is None and out.plan.steps == ()
        assert out.status == ResolutionStatus.TRIAGED

    @pytest.mark.parametrize(
        ("data", "next_step"),
        [
            (BREAK_SMALL, "execute"),
            (BREAK_BIG, "await_approval"),
            ({"exceptionType": "INFO", "rawPayload": {}}, "monitor"),
        ],
    )
    def test_resolution_next_step(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, data: dict[str, Any], next_step: str
    ) -> None:
        out = run(desk_domain, desk_tenant, data)
        res = next(e for e in out.events if e.stage == "resolution")
        assert res.decision.next_step == next_step

    def test_manual_only_plan_and_escalation_next_steps(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(
            desk_domain, approvedPlaybooks=["PB_BREAK_VIP"], guardrails={"blockedTools": ["notify"]}
        )
        ir, tri, pctx = stage_inputs(
            desk_domain, tenant, {"exceptionType": "BREAK", "rawPayload": {"vip": True}}
        )
        pol = decide_policy(ir, tri, pctx, desk_domain, tenant)
        res = plan_resolution(
            pctx, desk_domain, tenant, dataclasses.replace(pol, approval_required=False), True
        )
        assert [s.status for s in res.plan.steps] == ["BLOCKED", "MANUAL"]
        assert res.decision.next_step == "await_approval"  # a blocked step requires approval
        free = tenant_with(desk_domain, approvedPlaybooks=["PB_BREAK_VIP"])
        pol = dataclasses.replace(pol, approval_required=False, escalate=True)
        res = plan_resolution(pctx, desk_domain, free, pol, False)
        assert res.decision.next_step == "escalate"
        assert res.plan.dry_run is False
        assert "dry run" not in " ".join(messages(res.decision))


# =========================================================================================== supervisor


def _low_confidence_domain() -> CompiledDomainPack:
    """desk without the approval-gated step of PB_FAIL: a detected FAIL runs with chain confidence 0.42."""
    return domain_with(lambda d: d["playbooks"][2]["steps"].pop())


class TestSupervisor:
    def test_ok(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        ir, tri, pctx = stage_inputs(desk_domain, desk_tenant, BREAK_SMALL)
        pol = decide_policy(ir, tri, pctx, desk_domain, desk_tenant)
        sup = check_policy(ir, tri, pol, desk_tenant)
        assert (sup.require_approval, sup.escalate, sup.reasons) == (False, False, ())
        assert sup.decision.decision == "supervisor after policy: ok"
        assert sup.decision.next_step == "continue"
        assert sup.decision.confidence == 0.9

    def test_low_confidence_chain_needs_approval(self) -> None:
        domain = _low_confidence_domain()
        tenant = tenant_with(domain)
        out = run(domain, tenant, {"rawPayload": {"failReason": "oom"}})
        assert out.policy is not None and out.policy.approval_required is False
        sup = next(e for e in out.events if e.stage == "supervisor")
        assert messages(sup.decision) == [
            f"confidence chain 0.42 below {DEFAULT_MIN_CONFIDENCE}: a person must approve"
        ]
        assert sup.decision.next_step == "await_approval"
        assert out.status == ResolutionStatus.PENDING_APPROVAL
        assert out.approval_required is True

    def test_tenant_threshold_replaces_the_default(self) -> None:
        domain = _low_confidence_domain()
        tenant = tenant_with(domain, guardrails={"escalateIfConfidenceBelow": 0.4})
        out = run(domain, tenant, {"rawPayload": {"failReason": "oom"}})
        assert out.status == ResolutionStatus.IN_PROGRESS  # 0.42 is not below the tenant's 0.4

    def test_critical_information_only_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        out = run(desk_domain, desk_tenant, {"exceptionType": "INFO", "rawPayload": {"amount": 500000}})
        sup = next(e for e in out.events if e.stage == "supervisor")
        assert messages(sup.decision) == [
            "CRITICAL severity but no process: information-only is not acceptable"
        ]
        assert sup.decision.next_step == "escalate"
        assert out.status == ResolutionStatus.ESCALATED and out.escalated is True

    def test_critical_automatic_action_needs_approval(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvalRules=[])
        ir, tri, pctx = stage_inputs(
            desk_domain, tenant, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O", "amount": 500000}}
        )
        pol = decide_policy(ir, tri, pctx, desk_domain, tenant)
        assert pol.approval_required is True  # policy already gates it ...
        sup = check_policy(
            ir, tri, dataclasses.replace(pol, approval_required=False), tenant
        )  # ... if it did not:
        assert sup.require_approval is True and sup.escalate is False
        assert sup.reasons == ("CRITICAL with automatic action: approval required",)
        allowed = tenant_with(desk_domain, approvalRules=[], guardrails={"allowAutoActionOnCritical": True})
        assert check_policy(ir, tri, dataclasses.replace(pol, approval_required=False), allowed).reasons == ()

    def test_unclassified_with_a_playbook_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        ir, tri, pctx = stage_inputs(desk_domain, desk_tenant, {"rawPayload": {"x": 1}})
        pol = decide_policy(ir, tri, pctx, desk_domain, desk_tenant)
        forged = dataclasses.replace(pol, playbook_id="PB_BREAK", escalate=False)
        sup = check_policy(ir, tri, forged, desk_tenant)
        assert sup.escalate is True
        assert "an unclassified exception cannot run a playbook" in sup.reasons

    def _plan(self, desk_domain: CompiledDomainPack, tenant: Any) -> tuple[Plan, PolicyResult, float]:
        ir, tri, pctx = stage_inputs(desk_domain, tenant, BREAK_SMALL)
        pol = decide_policy(ir, tri, pctx, desk_domain, tenant)
        return plan_resolution(pctx, desk_domain, tenant, pol, True).plan, pol, tri.confidence

    def test_plan_ok(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        plan, pol, conf = self._plan(desk_domain, desk_tenant)
        sup = check_plan(plan, pol, desk_domain, desk_tenant, conf)
        assert (sup.require_approval, sup.escalate, sup.reasons) == (False, False, ())
        assert sup.decision.decision == "supervisor after resolution: ok"

    def test_plan_step_outside_the_playbook_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        plan, pol, conf = self._plan(desk_domain, desk_tenant)
        extra = dataclasses.replace(plan.steps[0], step_id="sneaky", tool="page")
        sup = check_plan(
            dataclasses.replace(plan, steps=(*plan.steps, extra)), pol, desk_domain, desk_tenant, conf
        )
        assert sup.escalate is True
        assert sup.reasons == ("step sneaky calls page, which is not in the approved playbook",)
        assert sup.decision.next_step == "escalate"

    @pytest.mark.parametrize("how", ["not-allowed", "blocked"])
    def test_plan_step_with_a_forbidden_tool_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, how: str
    ) -> None:
        plan, pol, conf = self._plan(desk_domain, desk_tenant)
        if how == "blocked":
            tenant = tenant_with(desk_domain, guardrails={"blockedTools": ["getOrder"]})
        else:
            data = desk_tenant_data()
            data["tools"]["allow"].remove("getOrder")
            tenant = tenant_from(data, desk_domain)
        sup = check_plan(plan, pol, desk_domain, tenant, conf)
        assert sup.escalate is True
        assert sup.reasons == ("step fetch calls getOrder, which the tenant does not allow",)

    def test_plan_with_invalid_args_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        out = run(desk_domain, desk_tenant, {"rawPayload": {"delayMinutes": 90}})
        sup = [e for e in out.events if e.stage == "supervisor"][1]
        assert messages(sup.decision) == ["step(s) tell have invalid arguments: the plan cannot run as is"]
        assert out.status == ResolutionStatus.ESCALATED

    def test_plan_of_another_playbook_escalates(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        plan, pol, conf = self._plan(desk_domain, desk_tenant)
        sup = check_plan(
            plan, dataclasses.replace(pol, playbook_id="PB_FAIL"), desk_domain, desk_tenant, conf
        )
        assert sup.escalate is True
        assert sup.reasons == ("plan playbook differs from the policy decision",)

    def test_empty_plan_is_ok(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        plan = Plan(None, (), True, False)
        ir, tri, pctx = stage_inputs(desk_domain, desk_tenant, {"exceptionType": "INFO", "rawPayload": {}})
        pol = decide_policy(ir, tri, pctx, desk_domain, desk_tenant)
        assert check_plan(plan, pol, desk_domain, desk_tenant, 0.7).reasons == ()


_TENANT_VARIANTS: list[dict[str, Any]] = [
    {},
    {"approvedPlaybooks": []},
    {"approvalRules": [], "guardrails": {"allowAutoActionOnCritical": True}},
    {"guardrails": {"escalateIfConfidenceBelow": 0.85, "blockedTools": ["notify"]}},
    {
        "approvedPlaybooks": ["PB_BREAK_VIP", "PB_BREAK", "PB_FAIL", "PB_LATE_ALT", "PB_GATED"],
        "tools": {"allow": ["getOrder", "audit"]},
        "approvalRules": [],
    },
]
_PAYLOADS = st.fixed_dictionaries(
    {},
    optional={
        "orderId": st.sampled_from(["O1", "O2"]),
        "amount": st.one_of(
            st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3)
        ),
        "vip": st.booleans(),
        "failReason": st.sampled_from(["disk", "oom"]),
        "retryable": st.booleans(),
        "delayMinutes": st.integers(0, 1000),
        "channel": st.one_of(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1)),
    },
)


_VARIANTS = [tenant_with(_DESK, **v) for v in _TENANT_VARIANTS]


@settings(max_examples=300, deadline=None)
@given(
    etype=st.sampled_from([None, "BREAK", "SUB_BREAK", "FAIL", "LATE", "INFO", "GATED", "NOPE"]),
    payload=_PAYLOADS,
    variant=st.integers(0, len(_TENANT_VARIANTS) - 1),
)
def test_supervisors_never_relax_and_plans_stay_safe(
    etype: str | None, payload: dict[str, Any], variant: int
) -> None:
    desk_domain = _DESK
    tenant = _VARIANTS[variant]
    data: dict[str, Any] = {"rawPayload": payload}
    if etype is not None:
        data["exceptionType"] = etype
    ir = submit(desk_domain, data, tenant.tenant_id)
    out = decide(ir, desk_domain, tenant, received_at=RECEIVED, now=RECEIVED)
    assert out.error is None
    assert out.triage is not None and out.policy is not None and out.plan is not None
    pol, tri = out.policy, out.triage
    sup1 = check_policy(ir, tri, pol, tenant)
    sup2 = check_plan(out.plan, pol, desk_domain, tenant, tri.confidence)
    for sup in (sup1, sup2):
        # A supervisor only ever adds caution, and always says why.
        assert (sup.require_approval or sup.escalate) == bool(sup.reasons)
    # Nothing relaxes what policy or a supervisor asked for.
    if pol.escalate or sup1.escalate or sup2.escalate:
        assert out.status == ResolutionStatus.ESCALATED and out.escalated
    if pol.approval_required or out.plan.approval_required or sup1.require_approval or sup2.require_approval:
        assert out.status in (ResolutionStatus.PENDING_APPROVAL, ResolutionStatus.ESCALATED)
    if out.status == ResolutionStatus.IN_PROGRESS:
        assert pol.actionability == Actionability.ACTIONABLE_APPROVED_PROCESS
        assert tri.severity != Severity.CRITICAL or tenant.allow_auto_critical
        assert min(ir.type_confidence, tri.confidence) >= (tenant.escalate_below or DEFAULT_MIN_CONFIDENCE)
    # A plan never carries a tool the tenant may not run, nor one outside its playbook.
    for s in out.plan.steps:
        if s.tool is not None:
            assert s.tool in tenant.allowed_tools and s.tool not in tenant.blocked_tools
            assert s.tool in desk_domain.playbooks[out.plan.playbook_id or ""].tools
    if ir.record.exception_type == UNCLASSIFIED:
        assert out.status == ResolutionStatus.ESCALATED and out.plan.playbook_id is None


# =============================================================================================== decide


@pytest.fixture
def stages_source(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`stages` run from its source file. Compiled (breakdesk.native), `decide` calls the stage functions
    directly, so replacing one to make it fail only works on the interpreted module: the same source."""
    path = Path(stages.__file__ or "").with_name("stages.py")
    spec = importlib.util.spec_from_file_location("breakdesk_stages_from_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_source(module: ModuleType, domain: CompiledDomainPack, tenant: Any, data: dict[str, Any]) -> Decided:
    decided: Decided = module.decide(submit(domain, data, tenant.tenant_id), domain, tenant,
                                     received_at=RECEIVED, now=RECEIVED)
    return decided


class TestDecide:
    def test_events_in_stage_order(self, desk_domain: CompiledDomainPack, desk_tenant: Any) -> None:
        out = run(desk_domain, desk_tenant, BREAK_BIG)
        assert [e.stage for e in out.events] == [
            "intake",
            "triage",
            "policy",
            "supervisor",
            "resolution",
            "supervisor",
            "feedback",
        ]
        assert all(e.decision is not None for e in out.events)
        assert out.events[1].payload == {"severity": "HIGH", "priority": 70, "matchedRules": ["big-break"]}
        assert out.events[2].payload["playbookId"] == "PB_BREAK"
        assert out.events[3].payload == {"after": "policy"} and out.events[5].payload == {
            "after": "resolution"
        }
        assert out.events[4].payload["plan"]["playbookId"] == "PB_BREAK"
        assert out.events[6].payload["status"] == "PENDING_APPROVAL"
        assert out.status == ResolutionStatus.PENDING_APPROVAL
        assert out.approval_required is True and out.escalated is False and out.error is None

    def test_in_progress_when_nothing_holds_it(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any
    ) -> None:
        out = run(desk_domain, desk_tenant, BREAK_SMALL)
        assert out.status == ResolutionStatus.IN_PROGRESS
        assert out.outcome is not None
        assert out.outcome.decision.next_step == "execute"
        assert out.outcome.time_to_triage_ms == 0.0 and out.outcome.time_to_resolution_ms is None

    def test_feedback_learning(self, desk_domain: CompiledDomainPack) -> None:
        tenant = tenant_with(desk_domain, approvedPlaybooks=[])
        rec = RecurrenceInfo(count=5, first_seen=None, last_seen=None, last_exception_id="x")
        ir = submit(desk_domain, {"exceptionType": "BREAK", "rawPayload": {"orderId": "O"}})
        out = decide(
            ir,
            desk_domain,
            tenant,
            received_at=RECEIVED,
            now=RECEIVED + timedelta(milliseconds=250),
            recurrence=rec,
        )
        assert out.outcome is not None
        assert out.outcome.time_to_triage_ms == pytest.approx(250.0)
        assert list(out.outcome.learning) == [
            {"kind": "recurrence", "fingerprint": ir.fingerprint, "occurrences": 6},
            {"kind": "draft-playbook", "draft": "PB_BREAK-draft", "basedOn": "PB_BREAK"},
        ]
        gap = run(desk_domain, tenant, {"exceptionType": "INFO", "rawPayload": {}})
        assert gap.outcome is not None
        assert list(gap.outcome.learning) == [
            {"kind": "rule-gap", "message": "severity fell back to the pack default"}
        ]

    @pytest.mark.parametrize(
        ("actionability", "escalate", "approval", "status"),
        [
            (Actionability.ACTIONABLE_APPROVED_PROCESS, True, True, ResolutionStatus.ESCALATED),
            (Actionability.NON_ACTIONABLE_INFO_ONLY, False, True, ResolutionStatus.TRIAGED),
            (Actionability.NON_ACTIONABLE_INFO_ONLY, True, False, ResolutionStatus.ESCALATED),
            (Actionability.ACTIONABLE_APPROVED_PROCESS, False, True, ResolutionStatus.PENDING_APPROVAL),
            (Actionability.ACTIONABLE_NON_APPROVED_PROCESS, False, False, ResolutionStatus.IN_PROGRESS),
            (Actionability.ACTIONABLE_APPROVED_PROCESS, False, False, ResolutionStatus.IN_PROGRESS),
        ],
    )
    def test_final_status(
        self,
        desk_domain: CompiledDomainPack,
        desk_tenant: Any,
        actionability: Actionability,
        escalate: bool,
        approval: bool,
        status: ResolutionStatus,
    ) -> None:
        pol = dataclasses.replace(
            policy_for(desk_domain, desk_tenant, BREAK_SMALL), actionability=actionability
        )
        assert final_status(pol, Plan(None, (), True, False), escalate, approval) == status

    @pytest.mark.parametrize(
        ("target", "stage"),
        [
            ("triage", "triage"),
            ("decide_policy", "policy"),
            ("check_policy", "supervisor"),
            ("plan_resolution", "resolution"),
            ("check_plan", "supervisor"),
            ("feedback", "feedback"),
            ("condition_context", "triage"),
        ],
    )
    def test_a_failing_stage_escalates_with_the_error_as_evidence(
        self,
        monkeypatch: pytest.MonkeyPatch,
        desk_domain: CompiledDomainPack,
        desk_tenant: Any,
        target: str,
        stage: str,
        stages_source: ModuleType,
    ) -> None:
        def boom(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

        monkeypatch.setattr(stages_source, target, boom)
        out = run_source(stages_source, desk_domain, desk_tenant, BREAK_BIG)
        assert out.status == ResolutionStatus.ESCALATED
        assert out.escalated is True
        assert out.error == f"{stage} failed: RuntimeError: boom"
        last = out.events[-1]
        assert last.stage == stage
        assert last.payload == {"error": out.error}
        assert last.decision is not None
        assert last.decision.decision == f"{stage} failed"
        assert last.decision.confidence == 0.0
        assert last.decision.next_step == "escalate"
        assert [(e.kind, e.message) for e in last.decision.evidence] == [("error", out.error)]
        assert out.events[0].stage == "intake"  # what was decided before the failure is kept

    def test_failure_keeps_earlier_stage_results(
        self,
        monkeypatch: pytest.MonkeyPatch,
        desk_domain: CompiledDomainPack,
        desk_tenant: Any,
        stages_source: ModuleType,
    ) -> None:
        def boom(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("x" * 1000)

        monkeypatch.setattr(stages_source, "plan_resolution", boom)
        out = run_source(stages_source, desk_domain, desk_tenant, BREAK_BIG)
        assert out.triage is not None and out.policy is not None and out.plan is None
        assert [e.stage for e in out.events] == ["intake", "triage", "policy", "supervisor", "resolution"]
        assert out.error is not None and len(out.error) == 500  # bounded

    @pytest.mark.parametrize(
        "data",
        [
            BREAK_BIG,
            BREAK_SMALL,
            {"rawPayload": {"failReason": "disk"}},
            {"rawPayload": {"delayMinutes": 900}},
            {"rawPayload": {"x": 1}},
            {"exceptionType": "INFO", "rawPayload": {"amount": 500000}},
        ],
    )
    def test_determinism(
        self, desk_domain: CompiledDomainPack, desk_tenant: Any, data: dict[str, Any]
    ) -> None:
        rec = RecurrenceInfo(count=3, first_seen=RECEIVED, last_seen=RECEIVED, last_exception_id="e0")
        sim = (SimilarCase("e0", 0.9, "s"),)
        first = run(desk_domain, desk_tenant, data, recurrence=rec, similar=sim)
        # a freshly compiled, equal policy (cold caches) decides the same
        fresh = tenant_from(desk_tenant_data(), domain_from(desk_domain_data()))
        second = run(desk_domain, fresh, data, recurrence=rec, similar=sim)
        third = run(desk_domain, desk_tenant, data, recurrence=rec, similar=sim)
        for other in (second, third):
            assert [(e.stage, e.decision, e.payload) for e in first.events] == [
                (e.stage, e.decision, e.payload) for e in other.events
            ]
            assert first.plan == other.plan
            assert first.status == other.status
            assert first.intake.fingerprint == other.intake.fingerprint
