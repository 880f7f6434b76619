"""Builders for exception writes used across the store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from breakdesk.store import AuditRow, EventRow, ExceptionRow, ExceptionWrite

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
STAGES = ("intake", "triage", "policy", "supervisor", "resolution", "feedback")


def make_row(tenant_id: str, exception_id: str, n: int = 0, **overrides: Any) -> ExceptionRow:
    at = T0 + timedelta(minutes=n)
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "exception_id": exception_id,
        "source_system": "erp" if n % 2 == 0 else "wms",
        "exception_type": ("PAYMENT_MISMATCH", "STOCK_OUT", "LATE_SHIPMENT")[n % 3],
        "severity": ("LOW", "MEDIUM", "HIGH", "CRITICAL")[n % 4],
        "status": "TRIAGED",
        "received_at": at,
        "record": {"exceptionId": exception_id, "tenantId": tenant_id, "timestamp": at.isoformat(), "n": n},
        "fingerprint": f"fp-{exception_id}",
        "idempotency_key": f"key-{exception_id}",
        "source_id": f"SRC-{n}",
        "confidence": 0.5 + (n % 5) / 10,
        "priority": float(n % 7),
        "summary": f"exception number {n} for {exception_id}",
        "domain_pack": "finance@1.0.0",
        "tenant_policy": f"{tenant_id}@1",
    }
    fields.update(overrides)
    return ExceptionRow(**fields)


def make_write(
    tenant_id: str,
    exception_id: str,
    n: int = 0,
    *,
    events: int = len(STAGES),
    recurrence_of: str | None = None,
    is_new: bool | None = None,
    **overrides: Any,
) -> ExceptionWrite:
    row = make_row(tenant_id, exception_id, n, **overrides)
    at = row.received_at
    decision = {
        "decision": "ok",
        "confidence": 0.9,
        "evidence": [{"kind": "rule", "message": "m"}],
        "nextStep": "next",
    }
    evs = [EventRow(exception_id, STAGES[i % len(STAGES)], at, decision, {"i": i}) for i in range(events)]
    audits = [
        AuditRow(
            "pipeline", f"{STAGES[i % len(STAGES)]}.decided", recurrence_of or exception_id, at, {"i": i}
        )
        for i in range(events)
    ]
    return ExceptionWrite(
        row,
        evs,
        audits,
        is_new=(recurrence_of is None) if is_new is None else is_new,
        recurrence_of=recurrence_of,
    )
