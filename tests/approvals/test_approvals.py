"""Human approval: requests created with the exception, four-eyes, roles, N-of-M, edits, rejection, TTL
expiry driven by the scheduler on a fake clock, step approvals and exactly-once resume under concurrency."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tool_fixtures import Stack, make_stack
from tool_harness import (
    ToolServer,
    domain_pack,
    playbook,
    setup_tenant,
    step,
    submit,
    tenant_policy,
    tool,
    uid,
)

from breakdesk.approvals.requests import tenant_ttl
from breakdesk.approvals.scheduler import Scheduler
from breakdesk.approvals.service import (
    ApprovalConflict,
    ApprovalForbidden,
    ApprovalNotFound,
    InvalidDecision,
)
from breakdesk.envvars import APPROVAL_TTL as TTL_ENV
from breakdesk.packs.loader import model_from_data
from breakdesk.packs.problems import PackError
from breakdesk.packs.schema import TenantPolicy
from breakdesk.store import Store
from breakdesk.store.approvals import Approval
from breakdesk.tools.executor import ToolExecutor


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def gated(stack: Stack, server: ToolServer, tenant: str, *, needed: int = 1,
                roles: list[str] | None = None, steps: list[dict[str, Any]] | None = None,
                tools: dict[str, Any] | None = None, **policy: Any) -> dict[str, str]:
    """A tenant whose every plan needs `needed` approvals; returns the tool-server names of its tools."""
    names = {"act": uid("act"), "notify": uid("notify")}
    tools = tools or {
        "act": tool(f"{server.base}/ok/{names['act']}", idempotent=False),
        "notify": tool(f"{server.base}/ok/{names['notify']}"),
    }
    dom = domain_pack(tools, [playbook("pb", steps or [step("act", "act"), step("notify", "notify")])])
    rule = {"id": "everything", "approverRoles": roles or ["approver"], "approvalsNeeded": needed}
    await setup_tenant(stack.store, tenant, dom, tenant_policy(tenant, dom, approvalRules=[rule], **policy))
    return names


async def pending(stack: Stack, tenant: str, ref: str = "R-1") -> tuple[str, Approval]:
    eid, report = await submit(stack.orch, tenant, ref)
    assert report.by_status["PENDING_APPROVAL"] == 1
    items, _ = await stack.approvals.list_approvals(tenant, exception_id=eid)
    assert len(items) == 1
    return eid, items[0]


async def status(store: Store, tenant: str, eid: str) -> str:
    row = await store.get_exception(tenant, eid)
    assert row is not None
    return str(row["status"])


# --------------------------------------------------------------------------------------------- requests


async def test_request_is_created_with_the_exception(stack_sqlite: Stack, tool_server: ToolServer,
                                                     tenant_id: str) -> None:
    names = await gated(stack_sqlite, tool_server, tenant_id, roles=["approver", "risk-officer"], needed=2)
    eid, a = await pending(stack_sqlite, tenant_id)
    assert a.status == "PENDING" and a.scope == "plan" and a.requested_by == "pipeline"
    assert a.allowed_roles == ("approver", "risk-officer") and a.approvals_needed == 2
    assert a.expires_at - a.requested_at == timedelta(hours=24)
    assert [s["stepId"] for s in a.plan["steps"]] == ["act", "notify"]
    assert "approval rule everything" in a.evidence["reasons"] and a.evidence["severity"] == "LOW"
    assert tool_server.counts[names["act"]] == 0
    audit = await stack_sqlite.store.get_audit(tenant_id, subject=eid, limit=50)
    assert [e.detail["approvalId"] for e in audit if e.action == "approval.requested"] == [a.approval_id]
    assert await stack_sqlite.approvals.get(tenant_id, a.approval_id) == a
    with pytest.raises(ApprovalNotFound):
        await stack_sqlite.approvals.get("other-tenant", a.approval_id)
    # a dry run plans the same way but asks nobody
    eid2, _ = await submit(stack_sqlite.orch, tenant_id, "R-DRY", dry_run=True)
    assert (await stack_sqlite.approvals.list_approvals(tenant_id, exception_id=eid2))[0] == []


# --------------------------------------------------------------------------------------- who may decide


async def test_four_eyes_roles_and_automated_actors(stack_sqlite: Stack, executor: ToolExecutor,
                                                    tool_server: ToolServer, tenant_id: str) -> None:
    names = await gated(stack_sqlite, tool_server, tenant_id, roles=["compliance-approver"])
    alice_stack = make_stack(stack_sqlite.store, executor, actor="alice")  # alice submits: she is the requester
    eid, a = await pending(alice_stack, tenant_id)
    svc = stack_sqlite.approvals
    assert a.requested_by == "alice"
    for actor, roles, why in (
        ("alice", ["compliance-approver"], "four-eyes"),
        ("ALICE", ["compliance-approver"], "four-eyes"),
        ("pipeline", ["compliance-approver"], "automated"),
        ("service:reconciler", ["compliance-approver"], "automated"),
        ("bob", ["approver"], "none of the roles"),
        ("bob", ["viewer"], "none of the roles"),
    ):
        with pytest.raises(ApprovalForbidden, match=why):
            await svc.approve(tenant_id, a.approval_id, actor, roles)
    with pytest.raises(ApprovalForbidden, match="automated"):
        await svc.approve(tenant_id, a.approval_id, "bob", ["compliance-approver"], automated=True)
    assert tool_server.counts[names["act"]] == 0 and await status(stack_sqlite.store, tenant_id, eid) == "PENDING_APPROVAL"
    decision = await svc.approve(tenant_id, a.approval_id, "bob", ["compliance-approver"], "checked the break")
    assert decision.outcome == "approved" and decision.approval.decided_by == "bob"
    assert decision.execution is not None and decision.execution.status == "RESOLVED"
    assert tool_server.counts[names["act"]] == 1 and await status(stack_sqlite.store, tenant_id, eid) == "RESOLVED"
    with pytest.raises(ApprovalConflict, match="already APPROVED"):
        await svc.approve(tenant_id, a.approval_id, "carol", ["compliance-approver"])


async def test_admin_counts_as_approver(stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str) -> None:
    await gated(stack_sqlite, tool_server, tenant_id)
    _, a = await pending(stack_sqlite, tenant_id)
    assert (await stack_sqlite.approvals.approve(tenant_id, a.approval_id, "root", ["admin"])).outcome == "approved"


async def test_n_of_m_needs_distinct_people(stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str) -> None:
    names = await gated(stack_sqlite, tool_server, tenant_id, needed=2, roles=["approver", "risk-officer"])
    eid, a = await pending(stack_sqlite, tenant_id)
    svc = stack_sqlite.approvals
    first = await svc.approve(tenant_id, a.approval_id, "bob", ["approver"], "ok by me")
    assert first.outcome == "vote-recorded" and first.approval.status == "PENDING" and first.execution is None
    with pytest.raises(ApprovalConflict, match="already approved"):
        await svc.approve(tenant_id, a.approval_id, "bob", ["approver"])
    assert tool_server.counts[names["act"]] == 0 and await status(stack_sqlite.store, tenant_id, eid) == "PENDING_APPROVAL"
    second = await svc.approve(tenant_id, a.approval_id, "carol", ["risk-officer"])
    assert second.outcome == "approved" and [v["actor"] for v in second.approval.approvers] == ["bob", "carol"]
    assert second.execution is not None and second.execution.status == "RESOLVED"
    assert tool_server.counts[names["act"]] == 1


async def test_an_approval_without_a_comment_is_marked_as_no_ones_words(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    """The event of a vote without a comment shows its decision as evidence, marked as filled in: a
    resolution summary must not take it for what the approver said (memory.resolution)."""
    await gated(stack_sqlite, tool_server, tenant_id, needed=2)
    eid, a = await pending(stack_sqlite, tenant_id, "R-WORDS")
    await stack_sqlite.approvals.approve(tenant_id, a.approval_id, "bob", ["approver"], "ok by me")
    await stack_sqlite.approvals.approve(tenant_id, a.approval_id, "carol", ["approver"], "  ")
    votes = [e["decision"]["evidence"] for e in await stack_sqlite.store.get_events(tenant_id, eid)
             if e["stage"] == "approval"]
    assert votes == [[{"kind": "approval", "message": "ok by me", "ref": a.approval_id}],
                     [{"kind": "approval", "message": "approved by carol", "ref": a.approval_id,
                       "data": {"defaultMessage": True}}]]


# ------------------------------------------------------------------------------------------------ edits


async def test_approval_with_edits_runs_the_edited_plan_and_is_a_learning_fact(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    names = await gated(stack_sqlite, tool_server, tenant_id, needed=2)
    eid, a = await pending(stack_sqlite, tenant_id, "R-ORIG")
    svc = stack_sqlite.approvals
    for bad, why in (({"nope": {"ref": "x"}}, "does not have"), ({"act": {"ref": ""}}, "non-empty"),
                     ({"act": {"ref": "x", "evil": 1}}, "Additional"), ({"act": "x"}, "object")):
        with pytest.raises(InvalidDecision, match=why):
            await svc.approve(tenant_id, a.approval_id, "bob", ["approver"], edits=bad)
    await svc.approve(tenant_id, a.approval_id, "bob", ["approver"])  # a vote for the plan as proposed
    edited = await svc.approve(tenant_id, a.approval_id, "carol", ["approver"], "use the corrected ref",
                               edits={"act": {"ref": "R-FIXED", "note": "corrected by carol"}})
    # the edit changed the plan: bob's vote was for the old one, so one more approval is needed
    assert edited.outcome == "vote-recorded" and tool_server.counts[names["act"]] == 0
    done = await svc.approve(tenant_id, a.approval_id, "bob", ["approver"], "fine with the fix")
    assert done.outcome == "approved" and done.execution is not None and done.execution.status == "RESOLVED"
    assert [json.loads(b) for b in tool_server.bodies[names["act"]]] == [{"ref": "R-FIXED", "note": "corrected by carol"}]
    events = await stack_sqlite.store.get_events(tenant_id, eid)
    facts = [f for e in events if e["stage"] == "feedback" for f in e["payload"].get("learning", [])]
    assert facts[-1]["kind"] == "human-override" and facts[-1]["action"] == "approved-with-edits"
    assert facts[-1]["steps"]["act"] == {"planned": {"ref": "R-ORIG"},
                                         "approved": {"ref": "R-FIXED", "note": "corrected by carol"}}


# -------------------------------------------------------------------------------------------- rejection


async def test_rejection_escalates_or_closes_with_the_reason(stack_sqlite: Stack, tool_server: ToolServer,
                                                             tenant_id: str) -> None:
    names = await gated(stack_sqlite, tool_server, tenant_id)
    svc = stack_sqlite.approvals
    eid, a = await pending(stack_sqlite, tenant_id, "R-REJ")
    with pytest.raises(InvalidDecision, match="reason"):
        await svc.reject(tenant_id, a.approval_id, "bob", ["approver"], "  ")
    rejected = await svc.reject(tenant_id, a.approval_id, "bob", ["approver"], "wrong counterparty")
    assert rejected.approval.status == "REJECTED" and rejected.approval.comment == "wrong counterparty"
    assert await status(stack_sqlite.store, tenant_id, eid) == "ESCALATED"
    events = await stack_sqlite.store.get_events(tenant_id, eid)
    assert events[-2]["stage"] == "approval" and "wrong counterparty" in events[-2]["decision"]["decision"]
    assert events[-1]["payload"]["learning"][0] | {"approvalId": None} == {
        "kind": "human-override", "action": "rejected", "approvalId": None, "by": "bob",
        "reason": "wrong counterparty", "playbookId": "pb", "then": "ESCALATED"}
    eid2, a2 = await pending(stack_sqlite, tenant_id, "R-REJ-2")
    await svc.reject(tenant_id, a2.approval_id, "bob", ["approver"], "duplicate of another case", close=True)
    row = await stack_sqlite.store.get_exception(tenant_id, eid2)
    assert row is not None and row["status"] == "CLOSED" and row["resolved_at"] is not None
    assert tool_server.counts[names["act"]] == 0
    assert (await stack_sqlite.store.verify_audit(tenant_id)).ok


# -------------------------------------------------------------------------------------------------- TTL


async def test_ttl_expiry_escalates_driven_by_the_scheduler(executor: ToolExecutor, store: Store,
                                                            tool_server: ToolServer, tenant_id: str) -> None:
    clock = Clock()
    stack = make_stack(store, executor, clock=clock)
    names = await gated(stack, tool_server, tenant_id)
    eid, a = await pending(stack, tenant_id)
    assert a.requested_at == clock.now and a.expires_at == clock.now + timedelta(hours=24)
    scheduler = Scheduler(store, stack.approvals, stack.execution, clock=clock, tenants=[tenant_id])
    clock.now += timedelta(hours=23, minutes=59)
    assert (await scheduler.tick()).expired == []
    assert await status(store, tenant_id, eid) == "PENDING_APPROVAL"
    clock.now += timedelta(minutes=1)
    report = await scheduler.tick()
    assert [x.approval_id for x in report.expired] == [a.approval_id]
    assert report.expired[0].status == "EXPIRED" and report.expired[0].decided_by == "scheduler"
    assert await status(store, tenant_id, eid) == "ESCALATED"
    last = (await store.get_events(tenant_id, eid))[-1]
    assert last["stage"] == "approval" and "expired" in last["decision"]["decision"]
    assert last["decision"]["evidence"][0]["data"] == {"defaultMessage": True}  # the scheduler is no person
    assert (await scheduler.tick()).expired == []  # once only
    with pytest.raises(ApprovalConflict, match="EXPIRED"):
        await stack.approvals.approve(tenant_id, a.approval_id, "bob", ["approver"])
    assert tool_server.counts[names["act"]] == 0


async def test_an_expired_but_unswept_request_cannot_be_approved(executor: ToolExecutor, store: Store,
                                                                 tool_server: ToolServer, tenant_id: str) -> None:
    clock = Clock()
    stack = make_stack(store, executor, clock=clock)
    await gated(stack, tool_server, tenant_id)
    _, a = await pending(stack, tenant_id)
    clock.now += timedelta(days=2)
    with pytest.raises(ApprovalConflict, match="expired"):
        await stack.approvals.approve(tenant_id, a.approval_id, "bob", ["approver"])


async def test_the_tenant_ttl_wins_over_the_process_default(executor: ToolExecutor, store: Store,
                                                             tool_server: ToolServer, tenant_id: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TTL_ENV, "600")  # the process default: 10 hours
    clock = Clock()
    stack = make_stack(store, executor, clock=clock)
    await gated(stack, tool_server, tenant_id, approvals={"ttlMinutes": 45})
    eid, a = await pending(stack, tenant_id)
    assert a.expires_at == clock.now + timedelta(minutes=45)
    audit = [e for e in await store.get_audit(tenant_id, subject=eid) if e.action == "approval.requested"]
    assert audit[-1].detail["expiresAt"] == a.expires_at.isoformat()
    scheduler = Scheduler(store, stack.approvals, stack.execution, clock=clock, tenants=[tenant_id])
    clock.now += timedelta(minutes=44)
    assert (await scheduler.tick()).expired == []
    clock.now += timedelta(minutes=1)
    assert [x.approval_id for x in (await scheduler.tick()).expired] == [a.approval_id]
    assert await status(store, tenant_id, eid) == "ESCALATED"


async def test_without_a_tenant_ttl_the_environment_default_applies(executor: ToolExecutor, store: Store,
                                                                    tool_server: ToolServer, tenant_id: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TTL_ENV, "90")
    clock = Clock()
    stack = make_stack(store, executor, clock=clock)
    await gated(stack, tool_server, tenant_id)
    _, a = await pending(stack, tenant_id)
    assert a.expires_at == clock.now + timedelta(minutes=90)


async def test_a_step_request_made_at_execution_uses_the_tenant_ttl(executor: ToolExecutor, store: Store,
                                                                     tool_server: ToolServer,
                                                                     tenant_id: str) -> None:
    """The executor's own requests (a step whose arguments were only known at run time) follow the policy
    that is current when they are made."""
    clock = Clock()
    stack = make_stack(store, executor, clock=clock)
    look, act = uid("look"), uid("act")
    tools = {"look": tool(f"{tool_server.base}/ok/{look}", effect="read"),
             "act": tool(f"{tool_server.base}/ok/{act}", idempotent=False)}
    dom = domain_pack(tools, [playbook("pb", [
        step("look", "look"),
        step("act", "act", requiresApproval=True, args={"ref": "${steps.look.output.name}"}),
    ])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, approvals={"ttlMinutes": 15}))
    eid, _ = await submit(stack.orch, tenant_id, "R-STEP-TTL")
    plan_req = (await stack.approvals.list_approvals(tenant_id, exception_id=eid))[0][0]
    assert plan_req.expires_at == clock.now + timedelta(minutes=15)
    clock.now += timedelta(minutes=5)
    first = await stack.approvals.approve(tenant_id, plan_req.approval_id, "bob", ["approver"])
    assert first.execution is not None and first.execution.status == "PENDING_APPROVAL"
    step_req = next(x for x in (await stack.approvals.list_approvals(tenant_id, exception_id=eid))[0]
                    if x.status == "PENDING")
    assert step_req.scope == "step:1" and step_req.expires_at == clock.now + timedelta(minutes=15)


@pytest.mark.parametrize("minutes", [0, -5, 525_601, "soon"])
def test_the_tenant_ttl_is_validated(minutes: Any) -> None:
    dom = domain_pack({"t": tool("http://127.0.0.1/x")}, [playbook("pb", [step("t", "t")])])
    with pytest.raises(PackError, match="ttlMinutes"):
        model_from_data(tenant_policy("acme", dom, approvals={"ttlMinutes": minutes}), "policy.yaml")


def test_tenant_ttl_reads_the_policy_else_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    dom = domain_pack({"t": tool("http://127.0.0.1/x")}, [playbook("pb", [step("t", "t")])])
    monkeypatch.delenv(TTL_ENV, raising=False)
    plain = model_from_data(tenant_policy("acme", dom), "p.yaml")
    short = model_from_data(tenant_policy("acme", dom, approvals={"ttlMinutes": 5}), "p.yaml")
    assert isinstance(plain, TenantPolicy) and isinstance(short, TenantPolicy)
    assert tenant_ttl(plain) == tenant_ttl(None) == timedelta(hours=24)
    assert tenant_ttl(short) == timedelta(minutes=5)
    monkeypatch.setenv(TTL_ENV, "30")
    assert tenant_ttl(plain) == timedelta(minutes=30) and tenant_ttl(short) == timedelta(minutes=5)


# ------------------------------------------------------------------------------------------ concurrency


async def test_twenty_concurrent_approvals_resume_execution_once(db_stack: Stack, tool_server: ToolServer,
                                                                 tenant_id: str) -> None:
    names = await gated(db_stack, tool_server, tenant_id)
    eid, a = await pending(db_stack, tenant_id)
    svc = db_stack.approvals

    async def approve(i: int) -> str:
        try:
            d = await svc.approve(tenant_id, a.approval_id, f"approver-{i}", ["approver"])
        except ApprovalConflict:
            return "conflict"
        return d.outcome

    results = await asyncio.gather(*(approve(i) for i in range(20)))
    assert results.count("approved") == 1 and results.count("conflict") == 19
    assert tool_server.counts[names["act"]] == 1 and tool_server.counts[names["notify"]] == 1
    assert await status(db_stack.store, tenant_id, eid) == "RESOLVED"
    final = await db_stack.approvals.get(tenant_id, a.approval_id)
    assert final.status == "APPROVED" and len(final.approvers) == 1
    assert (await db_stack.store.verify_audit(tenant_id)).ok


# ---------------------------------------------------------------------------------------- step approvals


async def test_a_step_that_always_needs_a_person_pauses_with_the_evidence(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    """The step's arguments depend on an earlier output, so the plan could not show them: execution runs
    up to the step, pauses with NEEDS_APPROVAL and asks for that step, showing what it gathered."""
    look, act = uid("look"), uid("act")
    tools = {"look": tool(f"{tool_server.base}/ok/{look}", effect="read"),
             "act": tool(f"{tool_server.base}/ok/{act}", idempotent=False)}
    dom = domain_pack(tools, [playbook("pb", [
        step("look", "look"),
        step("act", "act", requiresApproval=True, args={"ref": "${steps.look.output.name}"}),
    ])])
    await setup_tenant(stack_sqlite.store, tenant_id, dom, tenant_policy(tenant_id, dom))
    eid, _ = await submit(stack_sqlite.orch, tenant_id, "R-STEP")
    # the policy saw the requiresApproval step: the plan needs approval first
    plan_req = (await stack_sqlite.approvals.list_approvals(tenant_id, exception_id=eid))[0][0]
    first = await stack_sqlite.approvals.approve(tenant_id, plan_req.approval_id, "bob", ["approver"])
    assert first.execution is not None and first.execution.status == "PENDING_APPROVAL"
    assert [s.status for s in first.execution.steps] == ["SUCCEEDED", "NEEDS_APPROVAL"]
    assert tool_server.counts[look] == 1 and tool_server.counts[act] == 0
    step_req = next(x for x in (await stack_sqlite.approvals.list_approvals(tenant_id, exception_id=eid))[0]
                    if x.status == "PENDING")
    assert step_req.scope == "step:1" and step_req.step_id == "act" and step_req.requested_by == "executor"
    assert step_req.plan["steps"][1]["args"] == {"ref": look}
    assert step_req.evidence["outputs"]["look"]["name"] == look
    second = await stack_sqlite.approvals.approve(tenant_id, step_req.approval_id, "carol", ["approver"])
    assert second.execution is not None and second.execution.status == "RESOLVED"
    assert tool_server.counts[look] == 1 and tool_server.counts[act] == 1  # the settled step is not repeated
