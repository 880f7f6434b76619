"""`recurrence` at execution, for exceptions of one fingerprint decided by two batches at once."""

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
