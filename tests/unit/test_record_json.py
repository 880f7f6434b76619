"""The orchestrator's hand-built JSON forms must equal pydantic's own serialization of the same models."""

from __future__ import annotations

from datetime import UTC, datetime

from breakdesk.domain.models import AgentDecision, AuditTrailEntry, Evidence, ExceptionRecord, Severity
from breakdesk.pipeline.orchestrator import _decision_dict, record_json


def test_record_json_matches_model_dump() -> None:
    rec = ExceptionRecord(
        exception_id="e1", tenant_id="t", source_system="s", exception_type="X", severity=Severity.HIGH,
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), raw_payload={"a": [1, {"b": None}]},
        normalized_context={"k": "v"}, detected_rules=("r1",), suggested_actions=("s1",),
        audit_trail=(AuditTrailEntry(at=datetime(2026, 1, 2, tzinfo=UTC), actor="me", action="x"),),
    )
    assert record_json(rec) == rec.model_dump(mode="json", by_alias=True)
    updated = rec.model_copy(update={"severity": Severity.LOW, "detected_rules": ("r2",)})
    assert record_json(rec, severity="LOW", detected_rules=["r2"]) == updated.model_dump(mode="json", by_alias=True)


def test_decision_dict_matches_model_dump() -> None:
    d = AgentDecision(
        decision="x", confidence=0.5, next_step="y",
        evidence=(Evidence(kind="k", message="m"), Evidence(kind="k2", message="m2", ref="r", data={"a": 1})),
    )
    assert _decision_dict(d) == d.model_dump(mode="json", by_alias=True, exclude_none=True)
