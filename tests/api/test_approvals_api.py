"""Approvals, execution journal, breakers and similar cases over HTTP, with execution on and a real tool server:
an approval resumes the plan exactly once (inline or in the background), four-eyes and N-of-M hold for API
callers, rejection needs a reason, and another tenant's approval is a 404."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from tool_harness import ToolServer, domain_pack, playbook, setup_tenant, step, tenant_policy, tool, uid

from breakdesk.api.auth import create_api_key
from breakdesk.api.rbac import Role

from .conftest import Api, Tenant, break_item


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer().start()
    try:
        yield server
    finally:
        server.stop()


async def gated_tenant(api: Api, server: ToolServer, *, needed: int = 1, act: str = "ok") -> tuple[Tenant, str]:
    """A tenant whose every plan needs `needed` approvals; returns it and the tool-server name of its step."""
    t = await api.tenant(packs=False)
    name = uid("act")
    dom = domain_pack({"act": tool(f"{server.base}/{act}/{name}", idempotent=False)}, [playbook("pb", [step("act", "act")])])
    rule = {"id": "everything", "approverRoles": ["approver"], "approvalsNeeded": needed}
    await setup_tenant(api.store, t.tenant_id, dom, tenant_policy(t.tenant_id, dom, approvalRules=[rule]))
    return t, name


def url(t: Tenant, path: str) -> str:
    return f"/v1/tenants/{t.tenant_id}{path}"


async def pending(api: Api, t: Tenant, ref: str = "R-1") -> tuple[str, str]:
    """Submit one exception; returns (exception id, approval id) of its pending approval."""
    item = {"exceptionType": "BROKEN", "sourceSystem": "tests", "rawPayload": {"ref": ref}}
    r = await api.client.post(url(t, "/exceptions?wait=true"), json=[item], headers=t.headers("operator"))
    assert r.status_code == 200, r.text
    out = r.json()["items"][0]
    assert out["status"] == "PENDING_APPROVAL", out
    r = await api.client.get(url(t, "/approvals"), params={"status": "PENDING", "exceptionId": out["exceptionId"]},
                             headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    [approval] = r.json()["items"]
    assert approval["requestedBy"] == "pipeline" and approval["scope"] == "plan"
    assert [s["stepId"] for s in approval["plan"]["steps"]] == ["act"]
    return out["exceptionId"], approval["approvalId"]


async def status_of(api: Api, t: Tenant, eid: str) -> str:
    r = await api.client.get(url(t, f"/exceptions/{eid}"), headers=t.headers("viewer"))
    assert r.status_code == 200, r.text
    return str(r.json()["exception"]["status"])


async def test_approve_inline_runs_the_plan_once_and_the_journal_shows_it(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server)
        eid, aid = await pending(api, t)
        assert tool_server.counts[name] == 0
        r = await api.client.post(url(t, f"/approvals/{aid}/approve?wait=true"), json={"comment": "looks right"},
                                  headers=t.headers("approver"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["outcome"] == "approved" and body["executionScheduled"] is False
        assert body["approval"]["status"] == "APPROVED" and body["approval"]["votes"][0]["comment"] == "looks right"
        assert body["execution"]["status"] == "RESOLVED"
        assert [(s["stepId"], s["status"]) for s in body["execution"]["steps"]] == [("act", "SUCCEEDED")]
        assert tool_server.counts[name] == 1
        again = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={}, headers=t.headers("admin"))
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        assert tool_server.counts[name] == 1
        assert await status_of(api, t, eid) == "RESOLVED"
        journal = (await api.client.get(url(t, f"/exceptions/{eid}/executions"), headers=t.headers("viewer"))).json()
        assert journal["status"] == "RESOLVED"
        finals = [(e["stepId"], e["status"]) for e in journal["items"] if e["final"]]
        assert finals == [("act", "SUCCEEDED")]
        one = await api.client.get(url(t, f"/approvals/{aid}"), headers=t.headers("viewer"))
        assert one.status_code == 200 and one.json()["decidedBy"] == body["approval"]["decidedBy"]


async def test_approve_in_the_background_resumes_after_the_response(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server)
        eid, aid = await pending(api, t)
        r = await api.client.post(url(t, f"/approvals/{aid}/approve"), headers=t.headers("approver"))  # no body
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "approved" and r.json()["executionScheduled"] is True
        assert r.json()["execution"] is None
        await api.ctx.runs.close()  # wait for the background run instead of sleeping
        assert await status_of(api, t, eid) == "RESOLVED"
        assert tool_server.counts[name] == 1


async def test_n_of_m_counts_distinct_callers_and_operators_cannot_decide(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server, needed=2)
        eid, aid = await pending(api, t)
        denied = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={}, headers=t.headers("operator"))
        assert denied.status_code == 403
        first = await api.client.post(url(t, f"/approvals/{aid}/approve?wait=true"), json={"comment": "one"},
                                      headers=t.headers("approver"))
        assert first.status_code == 200 and first.json()["outcome"] == "vote-recorded", first.text
        same = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={}, headers=t.headers("approver"))
        assert same.status_code == 409 and "already approved" in same.json()["detail"]
        assert tool_server.counts[name] == 0 and await status_of(api, t, eid) == "PENDING_APPROVAL"
        _, second_key = await create_api_key(api.store, t.tenant_id, Role.APPROVER, "second approver", "tests")
        second = await api.client.post(url(t, f"/approvals/{aid}/approve?wait=true"), json={"comment": "two"},
                                       headers={"X-API-Key": second_key})
        assert second.status_code == 200 and second.json()["outcome"] == "approved", second.text
        assert len({v["actor"] for v in second.json()["approval"]["votes"]}) == 2
        assert tool_server.counts[name] == 1 and await status_of(api, t, eid) == "RESOLVED"


async def test_twenty_concurrent_approvals_execute_once(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server)
        eid, aid = await pending(api, t)
        keys = [(await create_api_key(api.store, t.tenant_id, Role.APPROVER, f"a{i}", "tests"))[1] for i in range(20)]
        results = await asyncio.gather(*(
            api.client.post(url(t, f"/approvals/{aid}/approve?wait=true"), json={}, headers={"X-API-Key": k})
            for k in keys
        ))
        codes = sorted(r.status_code for r in results)
        assert codes == [200] + [409] * 19, [r.text for r in results if r.status_code not in (200, 409)]
        assert tool_server.counts[name] == 1 and await status_of(api, t, eid) == "RESOLVED"


async def test_reject_needs_a_reason_and_escalates_or_closes(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server)
        eid, aid = await pending(api, t, "R-1")
        r = await api.client.post(url(t, f"/approvals/{aid}/reject"), json={}, headers=t.headers("approver"))
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "$.comment", r.text
        r = await api.client.post(url(t, f"/approvals/{aid}/reject"), json={"comment": "wrong account"},
                                  headers=t.headers("approver"))
        assert r.status_code == 200 and r.json()["outcome"] == "rejected", r.text
        assert r.json()["approval"]["comment"] == "wrong account"
        assert await status_of(api, t, eid) == "ESCALATED"
        eid2, aid2 = await pending(api, t, "R-2")
        r = await api.client.post(url(t, f"/approvals/{aid2}/reject"), json={"comment": "duplicate", "close": True},
                                  headers=t.headers("admin"))
        assert r.status_code == 200 and await status_of(api, t, eid2) == "CLOSED"
        assert tool_server.counts[name] == 0


async def test_invalid_edits_are_a_422_and_change_nothing(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server)
        eid, aid = await pending(api, t)
        r = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={"edits": {"act": {"ref": ""}}},
                                  headers=t.headers("approver"))
        assert r.status_code == 422, r.text
        r = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={"edits": {"nope": {"ref": "x"}}},
                                  headers=t.headers("approver"))
        assert r.status_code == 422 and "nope" in r.json()["detail"], r.text
        r = await api.client.post(url(t, f"/approvals/{aid}/approve"), json={"unknown": 1}, headers=t.headers("approver"))
        assert r.status_code == 422
        listed = (await api.client.get(url(t, f"/approvals/{aid}"), headers=t.headers("viewer"))).json()
        assert listed["status"] == "PENDING" and listed["votes"] == []
        assert tool_server.counts[name] == 0 and await status_of(api, t, eid) == "PENDING_APPROVAL"


async def test_another_tenants_approval_is_not_found(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        a, name = await gated_tenant(api, tool_server)
        b, _ = await gated_tenant(api, tool_server)
        _, aid = await pending(api, a)
        for method, path, body in (("GET", f"/approvals/{aid}", None), ("POST", f"/approvals/{aid}/approve", {}),
                                   ("POST", f"/approvals/{aid}/reject", {"comment": "mine now"})):
            r = await api.client.request(method, url(b, path), json=body, headers=b.headers("admin"))
            assert r.status_code == 404 and r.json()["detail"] == "no such approval", (path, r.text)
        listed = (await api.client.get(url(b, "/approvals"), headers=b.headers("admin"))).json()
        assert listed["items"] == []
        assert tool_server.counts[name] == 0


async def test_a_failing_tool_shows_in_the_journal_and_the_breakers(make_api: Any, tool_server: ToolServer) -> None:
    async with make_api(execution_enabled=True) as api:
        t, name = await gated_tenant(api, tool_server, act="fail")
        eid, aid = await pending(api, t)
        r = await api.client.post(url(t, f"/approvals/{aid}/approve?wait=true"), json={}, headers=t.headers("approver"))
        assert r.status_code == 200, r.text
        assert r.json()["execution"]["steps"][0]["status"] == "FAILED" and tool_server.counts[name] == 1
        journal = (await api.client.get(url(t, f"/exceptions/{eid}/executions"), headers=t.headers("viewer"))).json()
        assert any(e["statusCode"] == 500 for e in journal["items"]), journal
        breakers = (await api.client.get(url(t, "/tools/breakers"), headers=t.headers("viewer"))).json()["items"]
        assert [(b["tool"], b["state"]) for b in breakers] == [("act", "closed")] and breakers[0]["failures"] >= 1
        other = await api.tenant(packs=False)
        assert (await api.client.get(url(other, "/tools/breakers"), headers=other.headers("viewer"))).json() == {
            "items": []
        }


async def test_similar_cases_over_http(api: Api) -> None:
    a = await api.tenant()
    b = await api.tenant()
    items = [break_item("ORD-7", 50, sourceId=f"s-{i}") for i in range(3)] + [break_item("ORD-9", 80)]
    r = await api.client.post(url(a, "/exceptions?wait=true"), json=items, headers=a.headers("operator"))
    assert r.status_code == 200, r.text
    ids = [i["exceptionId"] for i in r.json()["items"] if i.get("exceptionId")]
    r = await api.client.post(url(b, "/exceptions?wait=true"), json=[break_item("ORD-7", 50)],
                              headers=b.headers("operator"))
    foreign = r.json()["items"][0]["exceptionId"]
    r = await api.client.get(url(a, f"/exceptions/{ids[-1]}/similar"), params={"k": 3}, headers=a.headers("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["exceptionId"] == ids[-1] and body["items"], body
    hit_ids = {h["exceptionId"] for h in body["items"]}
    assert ids[-1] not in hit_ids and foreign not in hit_ids and hit_ids <= set(ids)
    assert all(h["why"] for h in body["items"])
    r = await api.client.get(url(a, f"/exceptions/{ids[-1]}/similar"), params={"type": "NOPE"},
                             headers=a.headers("viewer"))
    assert r.status_code == 200 and r.json()["items"] == []
    r = await api.client.get(url(a, f"/exceptions/{foreign}/similar"), headers=a.headers("viewer"))
    assert r.status_code == 404 and r.json()["detail"] == "no such exception"
    r = await api.client.get(url(a, f"/exceptions/{ids[0]}/similar"), params={"k": 0}, headers=a.headers("viewer"))
    assert r.status_code == 422
