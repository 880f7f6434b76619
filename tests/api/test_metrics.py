"""KPIs from the store on a dataset whose every number is known in advance (and a time window over it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from breakdesk.api import create_app
from breakdesk.store import EventRow, ExceptionRow, ExceptionWrite

from .conftest import Api, api_settings

T0 = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)


def row(tenant_id: str, eid: str, **fields: Any) -> ExceptionWrite:
    received = fields.pop("received_at", T0)
    r = ExceptionRow(
        tenant_id=tenant_id,
        exception_id=eid,
        source_system="ledger",
        exception_type=fields.pop("exception_type"),
        status=fields.pop("status"),
        received_at=received,
        record={"exceptionId": eid, "severity": fields.get("severity")},
        updated_at=received,
        **fields,
    )
    return ExceptionWrite(r, [EventRow(eid, "intake", received, None, {})])


async def dataset(api: Api, tenant_id: str) -> None:
    s = timedelta(seconds=1)
    await api.store.write_batch(
        tenant_id,
        [
            row(tenant_id, "E1", exception_type="A", status="RESOLVED", severity="HIGH", approval_required=False,
                actionability="ACTIONABLE_APPROVED_PROCESS", triaged_at=T0 + 10 * s, resolved_at=T0 + 100 * s),
            row(tenant_id, "E2", exception_type="A", status="RESOLVED", severity="LOW", approval_required=True,
                actionability="ACTIONABLE_APPROVED_PROCESS", triaged_at=T0 + 20 * s, resolved_at=T0 + 300 * s,
                recurrence_count=2),
            row(tenant_id, "E3", exception_type="B", status="PENDING_APPROVAL", severity="MEDIUM",
                approval_required=True, actionability="ACTIONABLE_NON_APPROVED_PROCESS",
                received_at=T0 + 3600 * s, triaged_at=T0 + 3630 * s),
            row(tenant_id, "E4", exception_type="UNCLASSIFIED", status="ESCALATED", received_at=T0 + 7200 * s,
                recurrence_count=1),
        ],
    )


async def test_kpis_on_a_known_dataset(api: Api) -> None:
    t = await api.tenant(packs=False)
    await dataset(api, t.tenant_id)
    for severity in ("HIGH", "CRITICAL"):  # two overrides of one exception count once
        r = await api.client.post(
            f"/v1/tenants/{t.tenant_id}/exceptions/E3/actions",
            json={"action": "override_severity", "severity": severity, "reason": "impact"},
            headers=t.headers("approver"),
        )
        assert r.status_code == 200
    await api.client.post(
        f"/v1/tenants/{t.tenant_id}/exceptions/E1/actions", json={"action": "comment", "text": "fine"},
        headers=t.headers("operator"),
    )
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/metrics", headers=t.headers("viewer"))
    assert r.status_code == 200
    m = r.json()
    assert m == {
        "since": None,
        "until": None,
        "total": 4,
        "autoResolved": 1,
        "autoResolutionRate": 0.25,
        "resolved": 2,
        "mttrSeconds": pytest.approx(200.0),
        "triaged": 3,
        "meanTimeToTriageSeconds": pytest.approx(20.0),
        "overridden": 1,
        "overrideRate": 0.25,
        "recurring": 2,
        "recurrenceRate": 0.5,
        "recurrences": 3,
        "approvalRequired": 2,
        "byStatus": {"RESOLVED": 2, "PENDING_APPROVAL": 1, "ESCALATED": 1},
        "byActionability": {"ACTIONABLE_APPROVED_PROCESS": 2, "ACTIONABLE_NON_APPROVED_PROCESS": 1, "NONE": 1},
        "bySeverity": {"HIGH": 1, "LOW": 1, "CRITICAL": 1, "NONE": 1},
        "byType": {"A": 2, "B": 1, "UNCLASSIFIED": 1},
        "queue": {"pending": 0, "done": 0, "rejected": 0},
    }


async def test_kpis_in_a_time_window(api: Api) -> None:
    t = await api.tenant(packs=False)
    await dataset(api, t.tenant_id)
    await api.client.post(
        f"/v1/tenants/{t.tenant_id}/exceptions/E1/actions",
        json={"action": "override_severity", "severity": "LOW", "reason": "noise"},
        headers=t.headers("admin"),
    )
    params = {"since": (T0 + timedelta(minutes=30)).isoformat(), "until": (T0 + timedelta(hours=3)).isoformat()}
    m = (await api.client.get(f"/v1/tenants/{t.tenant_id}/metrics", params=params, headers=t.headers("viewer"))).json()
    assert (m["total"], m["resolved"], m["mttrSeconds"], m["triaged"], m["overridden"], m["recurring"]) == (
        2, 0, None, 1, 0, 1
    )
    assert m["meanTimeToTriageSeconds"] == pytest.approx(30.0)
    assert m["since"].startswith("2025-06-01T08:30:00")
    empty = (await api.client.get(
        f"/v1/tenants/{t.tenant_id}/metrics", params={"since": "2030-01-01T00:00:00Z"}, headers=t.headers("viewer")
    )).json()
    assert (empty["total"], empty["autoResolutionRate"], empty["mttrSeconds"], empty["byStatus"]) == (0, 0.0, None, {})


async def test_kpis_are_the_same_from_a_fresh_process(api: Api) -> None:
    """Nothing is kept in memory: another app over the same database reports the same numbers."""
    t = await api.tenant()
    r = await api.client.post(
        f"/v1/tenants/{t.tenant_id}/exceptions?wait=true",
        json=[{"exceptionType": "BREAK", "rawPayload": {"orderId": f"M-{n}", "amount": 5000 * (n % 2)}} for n in range(6)],
        headers=t.headers("operator"),
    )
    assert r.status_code == 200
    first = (await api.client.get(f"/v1/tenants/{t.tenant_id}/metrics", headers=t.headers("viewer"))).json()
    assert first["total"] == 6 and first["byStatus"] == {"PENDING_APPROVAL": 3, "IN_PROGRESS": 3}
    assert first["queue"] == {"pending": 0, "done": 6, "rejected": 0}
    other = create_app(api_settings(), api.store)
    transport = httpx.ASGITransport(app=other)
    async with other.router.lifespan_context(other), httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        again = (await client.get(f"/v1/tenants/{t.tenant_id}/metrics", headers=t.headers("viewer"))).json()
    assert again == first
