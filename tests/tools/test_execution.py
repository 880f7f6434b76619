"""Playbook execution through the real pipeline, store and tool server: step order, conditions on earlier
outputs, on-failure policies, compensation, dry runs and the checks repeated at execution time."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from tool_fixtures import Stack
from tool_harness import (
    ToolServer,
    domain_pack,
    playbook,
    setup_tenant,
    stages,
    step,
    submit,
    tenant_policy,
    tool,
    uid,
)

from breakdesk.pipeline.execution import ExecutionService
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store

OK_OUT = {"type": "object", "properties": {"ok": {"type": "boolean"}, "count": {"type": "integer"}},
          "required": ["ok"]}


async def journal(store: Store, tenant: str, eid: str) -> list[tuple[int, str, int, str, bool]]:
    return [(r.step_index, r.phase, r.attempt, r.status, r.final) for r in await store.execution_records(tenant, eid)]


async def test_steps_run_in_order_with_conditions_on_earlier_outputs(
    db_stack: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    store = db_stack.store
    a, b, c, d = uid(), uid(), uid(), uid()
    tools = {
        "lookup": tool(f"{tool_server.base}/ok/{a}", method="GET", effect="read", output=OK_OUT),
        "act": tool(f"{tool_server.base}/ok/{b}", idempotent=False),
        "never": tool(f"{tool_server.base}/ok/{c}"),
        "report": tool(f"{tool_server.base}/ok/{d}"),
    }
    dom = domain_pack(tools, [playbook("pb", [
        step("lookup", "lookup"),
        step("act", "act", when="steps.lookup.output.ok == true",
             args={"ref": "${normalizedContext.ref}", "note": "seen ${steps.lookup.output.count} time(s)"}),
        step("never", "never", when="steps.lookup.output.ok == false"),
        step("report", "report", args={"ref": "${steps.act.output.name}"}),
    ])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    eid, report = await submit(db_stack.orch, tenant_id, "R-1")
    assert report.by_status["RESOLVED"] == 1 and report.by_status["IN_PROGRESS"] == 0
    row = await store.get_exception(tenant_id, eid)
    assert row is not None and row["status"] == "RESOLVED" and row["resolved_at"] is not None
    assert row["record"]["resolutionStatus"] == "RESOLVED"
    assert tool_server.counts[a] == tool_server.counts[b] == tool_server.counts[d] == 1
    assert tool_server.counts[c] == 0
    assert [json.loads(x) for x in tool_server.bodies[b]] == [{"ref": "R-1", "note": "seen 1 time(s)"}]
    assert [json.loads(x) for x in tool_server.bodies[d]] == [{"ref": b}]
    assert await journal(store, tenant_id, eid) == [
        (0, "step", 1, "SUCCEEDED", True), (1, "step", 1, "SUCCEEDED", True),
        (2, "step", 0, "SKIPPED", True), (3, "step", 1, "SUCCEEDED", True),
    ]
    events = await store.get_events(tenant_id, eid)
    assert stages(events)[7:] == ["tool.attempt", "tool.attempt", "execution.step", "tool.attempt", "execution"]
    final = events[-1]
    assert final["payload"]["status"] == "RESOLVED"
    assert [s["status"] for s in final["payload"]["steps"]] == ["SUCCEEDED", "SUCCEEDED", "SKIPPED", "SUCCEEDED"]
    attempt = events[8]["payload"]
    assert attempt["tool"] == "act" and attempt["attempt"] == 1 and attempt["statusCode"] == 200
    assert attempt["latencyMs"] > 0 and attempt["idempotencyKey"] == f"{tenant_id}:{eid}:act"
    audit = [e for e in await store.get_audit(tenant_id, subject=eid, limit=100) if e.action == "tool.attempt"]
    assert [(e.detail["tool"], e.detail["attempt"], e.detail["statusCode"]) for e in audit] == [
        ("lookup", 1, 200), ("act", 1, 200), ("report", 1, 200)]
    assert all(e.detail["args"] and e.detail["error"] is None for e in audit)
    assert (await store.verify_audit(tenant_id)).ok
    again = await db_stack.execution.run(tenant_id, eid)  # nothing left to do, nothing re-sent
    assert not again.executed and tool_server.counts[b] == 1


async def test_dry_runs_record_the_plan_and_call_nothing(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    store = stack_sqlite.store
    n = uid()
    dom = domain_pack({"act": tool(f"{tool_server.base}/ok/{n}")}, [playbook("pb", [step("act", "act")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    eid, _ = await submit(stack_sqlite.orch, tenant_id, "R-DRY", dry_run=True)
    row = await store.get_exception(tenant_id, eid)
    assert row is not None and row["status"] == "IN_PROGRESS"
    outcome = await stack_sqlite.execution.run(tenant_id, eid)
    assert not outcome.executed and "dry run" in outcome.reason
    # a tenant whose policy says dryRun: planned (not dry) but never executed
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, version="1.0.1", dryRun=True))
    eid2, _ = await submit(stack_sqlite.orch, tenant_id, "R-DRY-2")
    assert (await store.get_exception(tenant_id, eid2) or {})["status"] == "IN_PROGRESS"
    assert "dryRun" in (await stack_sqlite.execution.run(tenant_id, eid2)).reason
    assert tool_server.counts[n] == 0
    assert await store.execution_records(tenant_id, eid2) == []


async def test_failure_policies(stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str) -> None:
    store = stack_sqlite.store
    ok1, ok2, bad = uid(), uid(), uid()
    tools = {
        "ok1": tool(f"{tool_server.base}/ok/{ok1}"),
        "ok2": tool(f"{tool_server.base}/ok/{ok2}"),
        "bad": tool(f"{tool_server.base}/fail/{bad}", idempotent=False),
    }
    dom = domain_pack(tools, [
        playbook("cont", [step("bad", "bad", onFailure="continue"), step("ok1", "ok1")], "CONT"),
        playbook("esc", [step("bad", "bad"), step("ok2", "ok2")], "ESC"),
    ], types=("CONT", "ESC"))
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    cont, _ = await submit(stack_sqlite.orch, tenant_id, "R-C", etype="CONT")
    esc, _ = await submit(stack_sqlite.orch, tenant_id, "R-E", etype="ESC")
    cont_row, esc_row = await store.get_exception(tenant_id, cont), await store.get_exception(tenant_id, esc)
    assert cont_row is not None and cont_row["status"] == "RESOLVED"  # a "continue" failure does not block
    assert esc_row is not None and esc_row["status"] == "ESCALATED"
    assert tool_server.counts[ok1] == 1 and tool_server.counts[ok2] == 0 and tool_server.counts[bad] == 2
    last = (await store.get_events(tenant_id, esc))[-1]
    assert last["stage"] == "execution" and "step bad (bad) failed: HTTP 500" in last["payload"]["reason"]
    assert last["decision"]["nextStep"] == "human_review"


async def test_on_failure_retry_is_bounded_by_max_auto_retries(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    store = stack_sqlite.store
    n = uid()
    dom = domain_pack({"submit": tool(f"{tool_server.base}/fail/{n}", idempotent=False, retries=0)},
                      [playbook("pb", [step("submit", "submit", onFailure="retry")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, guardrails={"maxAutoRetries": 2}))
    eid, _ = await submit(stack_sqlite.orch, tenant_id, "R-RETRY")
    row = await store.get_exception(tenant_id, eid)
    assert row is not None and row["status"] == "ESCALATED"
    assert tool_server.counts[n] == 3
    keys = {tool_server.headers[n]["idempotency-key"]}
    assert keys == {f"{tenant_id}:{eid}:submit"}
    assert await journal(store, tenant_id, eid) == [(0, "step", 1, "FAILED", False), (0, "step", 2, "FAILED", False),
                                                    (0, "step", 3, "FAILED", True)]
    assert "retries exhausted" in (await store.get_events(tenant_id, eid))[-1]["payload"]["reason"]


async def test_compensation(stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str) -> None:
    store = stack_sqlite.store
    bad, undo, undo_bad = uid(), uid(), uid()
    tools = {
        "apply": tool(f"{tool_server.base}/fail/{bad}", idempotent=False, compensation="undo"),
        "undo": tool(f"{tool_server.base}/ok/{undo}"),
        "undoBroken": tool(f"{tool_server.base}/fail/{undo_bad}"),
    }
    dom = domain_pack(tools, [
        playbook("comp", [step("apply", "apply", onFailure="compensate",
                               compensateArgs={"ref": "${normalizedContext.ref}", "note": "undo ${normalizedContext.ref}"})],
                 "COMP"),
        playbook("comp2", [step("apply", "apply", onFailure="compensate", compensate="undoBroken",
                                compensateArgs={"ref": "${normalizedContext.ref}"})], "COMP2"),
    ], types=("COMP", "COMP2"))
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    good, _ = await submit(stack_sqlite.orch, tenant_id, "R-COMP", etype="COMP")
    row = await store.get_exception(tenant_id, good)
    assert row is not None and row["status"] == "FAILED"  # failed, cleanly undone
    assert tool_server.counts[undo] == 1
    assert [json.loads(x) for x in tool_server.bodies[undo]] == [{"ref": "R-COMP", "note": "undo R-COMP"}]
    assert tool_server.headers[undo]["idempotency-key"] == f"{tenant_id}:{good}:apply:compensate"
    assert (0, "compensate", 1, "SUCCEEDED", True) in await journal(store, tenant_id, good)
    assert "compensated with undo" in (await store.get_events(tenant_id, good))[-1]["payload"]["reason"]
    broken, _ = await submit(stack_sqlite.orch, tenant_id, "R-COMP2", etype="COMP2")
    row2 = await store.get_exception(tenant_id, broken)
    assert row2 is not None and row2["status"] == "ESCALATED"  # the undo failed too: a person must look
    assert tool_server.counts[undo_bad] == 1  # compensation tools are retried like any tool (retries: 0 here)
    assert "compensation undoBroken failed" in (await store.get_events(tenant_id, broken))[-1]["payload"]["reason"]


async def test_policy_is_checked_again_at_execution_time(
    stack_sqlite: Stack, executor: Any, tool_server: ToolServer, tenant_id: str
) -> None:
    """Plans made while a tool was allowed do not run once the tenant blocks it, nor once the playbook is no
    longer approved, nor after the playbook changed."""
    store = stack_sqlite.store
    stack_sqlite.execution.packs_ttl = 0  # re-read the policy on every run (the default allows 1 s of staleness)
    n1, n2 = uid(), uid()
    tools = {"first": tool(f"{tool_server.base}/ok/{n1}"), "second": tool(f"{tool_server.base}/ok/{n2}")}
    dom = domain_pack(tools, [playbook("pb", [step("first", "first"), step("second", "second")])])
    planner = Orchestrator(store)  # plans only (no execution service)
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    blocked, _ = await submit(planner, tenant_id, "R-B1")
    unapproved, _ = await submit(planner, tenant_id, "R-B2")
    changed, _ = await submit(planner, tenant_id, "R-B3")
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, version="1.1.0",
                                                            guardrails={"blockedTools": ["second"]}))
    out = await stack_sqlite.execution.run(tenant_id, blocked)
    assert out.status == "ESCALATED" and "refused at execution" in out.reason
    assert [s.status for s in out.steps] == ["SUCCEEDED", "FAILED"]
    assert tool_server.counts[n2] == 0
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, version="1.2.0", approvedPlaybooks=[]))
    out = await stack_sqlite.execution.run(tenant_id, unapproved)
    assert out.status == "ESCALATED" and "no longer approved" in out.reason
    dom2 = copy.deepcopy(dom)
    dom2["version"] = "1.1.0"
    dom2["playbooks"][0]["steps"].insert(0, step("zero", "first"))
    await setup_tenant(store, tenant_id, dom2, tenant_policy(tenant_id, dom2, version="1.3.0"))
    out = await stack_sqlite.execution.run(tenant_id, changed)
    assert out.status == "ESCALATED" and "planned again" in out.reason
    assert tool_server.counts[n1] == 1  # only the first exception's first step ever ran


async def test_manual_steps_escalate_after_the_automated_ones(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    store = stack_sqlite.store
    n = uid()
    dom = domain_pack({"gather": tool(f"{tool_server.base}/ok/{n}", output=OK_OUT)}, [playbook("pb", [
        step("gather", "gather"),
        step("fix", None, description="A person fixes the booking."),
        step("check", None, when="steps.gather.output.ok == false", description="Only if the lookup failed."),
    ])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    eid, _ = await submit(stack_sqlite.orch, tenant_id, "R-MAN")
    row = await store.get_exception(tenant_id, eid)
    assert row is not None and row["status"] == "ESCALATED"
    last = (await store.get_events(tenant_id, eid))[-1]["payload"]
    assert last["reason"] == "automated steps done; left for a person: fix"
    assert [s["status"] for s in last["steps"]] == ["SUCCEEDED", "MANUAL", "SKIPPED"]


async def test_concurrent_runs_send_each_step_once(
    stack_sqlite: Stack, executor: Any, tool_server: ToolServer, tenant_id: str
) -> None:
    store = stack_sqlite.store
    n1, n2 = uid(), uid()
    tools = {"charge": tool(f"{tool_server.base}/ok/{n1}", idempotent=False),
             "confirm": tool(f"{tool_server.base}/ok/{n2}", idempotent=False)}
    dom = domain_pack(tools, [playbook("pb", [step("charge", "charge"), step("confirm", "confirm")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    eid, _ = await submit(Orchestrator(store), tenant_id, "R-CONC")
    runners = [ExecutionService(store, executor) for _ in range(5)]  # five "workers"
    outcomes = await asyncio.gather(*(r.run(tenant_id, eid) for r in runners for _ in range(2)))
    assert tool_server.counts[n1] == 1 and tool_server.counts[n2] == 1
    assert sum(o.status == "RESOLVED" and o.executed for o in outcomes) == 1
    assert (await store.get_exception(tenant_id, eid) or {})["status"] == "RESOLVED"
    assert (await store.verify_audit(tenant_id)).ok


async def test_scheduler_resumes_stalled_runs_but_never_dry_ones(
    db_stack: Stack, executor: Any, tool_server: ToolServer, tenant_id: str
) -> None:
    """Plans written by a process that died before executing them are picked up by the scheduler once they
    have been idle long enough; dry-run plans never are."""
    from datetime import UTC, datetime, timedelta

    from breakdesk.approvals.scheduler import Scheduler

    store = db_stack.store
    n = uid()
    dom = domain_pack({"act": tool(f"{tool_server.base}/ok/{n}", idempotent=False)},
                      [playbook("pb", [step("act", "act")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    planner = Orchestrator(store)  # writes plans, executes nothing: a worker that died right after the batch
    stalled, _ = await submit(planner, tenant_id, "R-STALLED")
    dry, _ = await submit(planner, tenant_id, "R-DRY", dry_run=True)
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert await store.stalled_executions(tenant_id, datetime.now(UTC) - timedelta(minutes=2)) == []
    assert await store.stalled_executions(tenant_id, later - timedelta(minutes=2)) == [stalled]
    # limited to this test's tenant: the PostgreSQL database is shared with concurrently running tests
    scheduler = Scheduler(store, db_stack.approvals, db_stack.execution, clock=lambda: later, tenants=[tenant_id])
    report = await scheduler.tick()
    assert [(o.exception_id, o.status) for o in report.resumed] == [(stalled, "RESOLVED")]
    assert (await scheduler.tick()).resumed == []
    assert tool_server.counts[n] == 1
    assert (await store.get_exception(tenant_id, dry) or {})["status"] == "IN_PROGRESS"


async def test_concurrent_runs_share_one_read_of_the_current_packs(
    stack_sqlite: Stack, executor: Any, tool_server: ToolServer, tenant_id: str
) -> None:
    """Every run re-checks the tenant's current packs; runs that start together must not each re-read the
    catalog (a worker's batch would otherwise cost one catalog read per exception at every refresh)."""
    store = stack_sqlite.store
    name = uid()
    dom = domain_pack({"look": tool(f"{tool_server.base}/ok/{name}")}, [playbook("pb", [step("look", "look")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    orch = Orchestrator(store)
    ids = [(await submit(orch, tenant_id, f"R-PK-{i}"))[0] for i in range(12)]
    reads = 0

    async def packs_for(tenant: str) -> Any:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0)  # a real read yields to the loop: the other runs arrive meanwhile
        return await orch.active_packs(tenant)

    svc = ExecutionService(store, executor, packs=packs_for)
    outcomes = await svc.run_many(tenant_id, ids)
    assert [o.status for o in outcomes] == ["RESOLVED"] * 12 and reads == 1
    assert tool_server.counts[name] == 12


async def test_an_exception_put_back_to_waiting_for_its_approval_is_audited(stack_sqlite: Stack, tool_server: ToolServer,
                                                                            tenant_id: str) -> None:
    """Run while its plan approval is still pending, an IN_PROGRESS exception goes back to PENDING_APPROVAL:
    a status change, so in the audit chain (which the memory's indexer follows to re-render its case)."""
    from breakdesk.memory import Memory
    from breakdesk.memory.indexer import MemoryIndexer

    store = stack_sqlite.store
    act = uid("act")
    dom = domain_pack({"act": tool(f"{tool_server.base}/ok/{act}", idempotent=False)},
                      [playbook("pb", [step("act", "act")])])
    rule = {"id": "everything", "approverRoles": ["approver"], "approvalsNeeded": 1}
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom, approvalRules=[rule]))
    eid, report = await submit(stack_sqlite.orch, tenant_id, "R-1")
    assert report.by_status["PENDING_APPROVAL"] == 1
    indexer = MemoryIndexer(store, Memory(store), packs=stack_sqlite.orch.active_packs)
    await store.update_exception(tenant_id, eid, status="IN_PROGRESS")  # e.g. set by hand, approval pending
    await indexer.run_once(tenant_id)
    outcome = await stack_sqlite.execution.run(tenant_id, eid)
    assert outcome.status == "PENDING_APPROVAL" and tool_server.counts[act] == 0
    entries = await store.get_audit(tenant_id, limit=1000)
    assert [e for e in entries if e.subject == eid][-1].action == "execution.waiting"
    await indexer.run_once(tenant_id)
    assert (await store.get_case(tenant_id, eid)).status == "PENDING_APPROVAL"  # type: ignore[union-attr]
