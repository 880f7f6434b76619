"""A step condition on `recurrence` decides at execution as it decided at planning, also when two batches of
one fingerprint are decided at once."""

from __future__ import annotations

import asyncio

from tool_fixtures import Stack
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


async def test_a_when_on_recurrence_sees_the_fingerprints_earlier_occurrences_at_execution(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    """`recurrence` is "how many earlier occurrences of the same fingerprint the tenant has recorded"
    (docs/packs.md): the plan is made with it, so the run must not re-decide a step with another number."""
    store = stack_sqlite.store
    a, b = uid(), uid()
    dom = domain_pack({"lookup": tool(f"{tool_server.base}/ok/{a}"), "again": tool(f"{tool_server.base}/ok/{b}")},
                      [playbook("pb", [step("lookup", "lookup"), step("again", "again", when="recurrence >= 1 && steps.lookup.status == 'SUCCEEDED'")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    first, _ = await submit(stack_sqlite.orch, tenant_id, "R-1", n=1)
    assert (await store.get_exception(tenant_id, first))["status"] == "RESOLVED"
    assert tool_server.counts[b] == 0  # the first occurrence: `again` skipped
    second, _ = await submit(stack_sqlite.orch, tenant_id, "R-1", n=2)  # the same fingerprint, once resolved
    assert second != first
    events = await store.get_events(tenant_id, second)
    plan = next(e for e in events if e["stage"] == "resolution")["payload"]["plan"]
    assert [s["status"] for s in plan["steps"]] == ["PLANNED", "DEFERRED_CONDITION"], plan["steps"]
    assert tool_server.counts[b] == 1, [e["payload"] for e in events if e["stage"].startswith("execution")]
    # a run resumed from the store (after a restart, an approval) starts from the same number
    assert (await store.execution_context(tenant_id, second)).recurrence == 1


async def test_a_run_from_the_store_sees_the_recurrence_its_plan_was_made_with(
    stack_sqlite: Stack, tool_server: ToolServer, tenant_id: str
) -> None:
    """Two requests of one tenant decided concurrently both see the fingerprint for the first time (their
    plans are made with `recurrence` 0, and neither is merged into the other): a run resumed from the store
    (after a restart, an approval) must start from that 0, not from the counts written since."""
    store = stack_sqlite.store
    dom = domain_pack({"lookup": tool(f"{tool_server.base}/ok/{uid()}")}, [playbook("pb", [step("lookup", "lookup")])])
    await setup_tenant(store, tenant_id, dom, tenant_policy(tenant_id, dom))
    (x, _), (y, _) = await asyncio.gather(submit(stack_sqlite.orch, tenant_id, "R-9", n=1),
                                          submit(stack_sqlite.orch, tenant_id, "R-9", n=1))
    assert x != y  # both new: decided before either was written
    for eid in (x, y):
        triage = next(e for e in await store.get_events(tenant_id, eid) if e["stage"] == "triage")
        assert "occurrence" not in str(triage["decision"])  # decided as the fingerprint's first occurrence
        assert (await store.execution_context(tenant_id, eid)).recurrence == 0  # type: ignore[union-attr]
