"""The execution journal's write transaction (`record_executions`), on SQLite and PostgreSQL: what it writes,
that a refused or conflicting entry writes nothing of its own, and that it stays inside its tenant."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from store_builders import T0, make_write

from breakdesk.approvals.requests import plan_request
from breakdesk.store import AuditRow, EventRow, NotFound, Store, StoreError
from breakdesk.store.executions import ClaimLost, ExecutionRecord, JournalEntry, StatusChanged


def _claim(exception_id: str, index: int, attempt: int = 1) -> ExecutionRecord:
    return ExecutionRecord(
        exception_id, index, "step", attempt, f"s{index}", "act", "STARTED", False, T0,
        idempotency_key=f"k:{exception_id}:{index}", args={"ref": "R1"}, deadline=T0 + timedelta(seconds=15),
    )


def _outcome(claim: ExecutionRecord) -> ExecutionRecord:
    return ExecutionRecord(
        claim.exception_id, claim.step_index, claim.phase, claim.attempt, claim.step_id, claim.tool, "SUCCEEDED",
        True, claim.started_at, idempotency_key=claim.idempotency_key, args=claim.args,
        output={"ok": True, "n": 1e300}, status_code=200, latency_ms=1.25, finished_at=T0 + timedelta(seconds=1),
    )


def _logged(exception_id: str, what: str) -> dict[str, Any]:
    return {
        "events": [EventRow(exception_id, "tool.attempt", T0, None, {"what": what})],
        "audits": [AuditRow("executor", "tool.attempt", exception_id, T0, {"what": what})],
    }


async def _open(store: Store, tenant: str, *ids: str, status: str = "IN_PROGRESS") -> None:
    await store.write_batch(tenant, [make_write(tenant, x, n, status=status) for n, x in enumerate(ids)])


async def _scalar(store: Store, sql: str, **params: object) -> Any:
    async with store.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


@pytest.fixture
async def other_tenant(store: Store, new_tenant_id: Callable[[], str]) -> str:
    tenant_id = new_tenant_id()
    await store.create_tenant(tenant_id, "Tenant B")
    return tenant_id


async def test_claim_then_settle_writes_rows_events_and_a_verifiable_chain(
    store: Store, tenant: str, other_tenant: str
) -> None:
    await _open(store, tenant, "E1")
    await _open(store, other_tenant, "E1")  # same id in another tenant: must never be touched
    other_head = await store.audit_head(other_tenant)
    events_before = len(await store.get_events(tenant, "E1"))
    claim = _claim("E1", 0)

    await store.record_execution(tenant, JournalEntry("E1", inserts=[claim], **_logged("E1", "claim")))
    [row] = await store.execution_records(tenant, "E1")
    assert (row.status, row.final, row.deadline) == ("STARTED", False, claim.deadline)

    await store.record_execution(tenant, JournalEntry("E1", settles=[_outcome(claim)], **_logged("E1", "settle")))
    [row] = await store.execution_records(tenant, "E1")
    assert (row.status, row.final, row.status_code, row.latency_ms) == ("SUCCEEDED", True, 200, 1.25)
    assert row.output == {"ok": True, "n": 1e300}
    events = await store.get_events(tenant, "E1")
    assert [e["payload"] for e in events[events_before:]] == [{"what": "claim"}, {"what": "settle"}]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await store.verify_audit(tenant)).ok
    assert [e.detail for e in (await store.get_audit(tenant, limit=1000))[-2:]] == [
        {"what": "claim"}, {"what": "settle"}
    ]

    assert await store.execution_records(other_tenant, "E1") == []
    assert await store.audit_head(other_tenant) == other_head
    assert (await store.get_exception(other_tenant, "E1") or {})["status"] == "IN_PROGRESS"


async def test_a_settle_without_its_claim_rolls_back_the_whole_entry(store: Store, tenant: str) -> None:
    await _open(store, tenant, "E1")
    head = await store.audit_head(tenant)
    events = len(await store.get_events(tenant, "E1"))
    entry = JournalEntry("E1", inserts=[_claim("E1", 1)], settles=[_outcome(_claim("E1", 0))],
                         fields={"status": "RESOLVED"}, **_logged("E1", "x"))
    with pytest.raises(ClaimLost):
        await store.record_execution(tenant, entry)
    assert await store.execution_records(tenant, "E1") == []
    assert len(await store.get_events(tenant, "E1")) == events
    assert await store.audit_head(tenant) == head
    assert (await store.get_exception(tenant, "E1") or {})["status"] == "IN_PROGRESS"


async def test_a_lost_claim_in_a_group_does_not_stop_the_others(store: Store, tenant: str) -> None:
    await _open(store, tenant, "E1", "E2")
    await store.record_execution(tenant, JournalEntry("E1", inserts=[_claim("E1", 0)]))
    results = await store.record_executions(tenant, [
        JournalEntry("E1", inserts=[_claim("E1", 0)], **_logged("E1", "again")),  # another runner's claim
        JournalEntry("E2", inserts=[_claim("E2", 0)], **_logged("E2", "mine")),
    ])
    assert isinstance(results[0], ClaimLost) and results[1] is None
    assert [r.key for r in await store.execution_records(tenant, "E2")] == [(0, "step", 1)]
    assert [e["payload"] for e in await store.get_events(tenant, "E1")].count({"what": "again"}) == 0
    assert (await store.verify_audit(tenant)).ok


async def test_refused_entries_write_nothing_and_status_changes_apply_in_order(store: Store, tenant: str) -> None:
    await _open(store, tenant, "E1", "E2")
    await _open(store, tenant, "E3", status="TRIAGED")
    fp = "fp-E1"
    sql = "SELECT open_exception_id FROM fingerprints WHERE tenant_id = :t AND fingerprint = :f"
    assert await _scalar(store, sql, t=tenant, f=fp) == "E1"
    results = await store.record_executions(tenant, [
        JournalEntry("E1", decisions=[_outcome(_claim("E1", 0))], fields={"status": "RESOLVED", "resolved_at": T0},
                     **_logged("E1", "done")),
        JournalEntry("E1", inserts=[_claim("E1", 1)]),  # the entry before it resolved E1
        JournalEntry("NOPE", inserts=[_claim("NOPE", 0)]),
        JournalEntry("E3", inserts=[_claim("E3", 0)]),
        JournalEntry("E2", inserts=[_claim("E2", 0)]),
    ])
    assert results[0] is None and results[4] is None
    assert isinstance(results[1], StatusChanged)
    assert isinstance(results[2], NotFound)
    assert isinstance(results[3], StatusChanged)
    e1 = await store.get_exception(tenant, "E1") or {}
    assert (e1["status"], e1["resolved_at"]) == ("RESOLVED", T0)
    assert await _scalar(store, sql, t=tenant, f=fp) is None  # a closed exception no longer holds its fingerprint
    assert [r.key for r in await store.execution_records(tenant, "E1")] == [(0, "step", 1)]
    assert await store.execution_records(tenant, "E3") == []
    assert len(await store.execution_records(tenant, "E2")) == 1
    assert (await store.verify_audit(tenant)).ok


async def test_a_pause_writes_its_approval_request(store: Store, tenant: str, other_tenant: str) -> None:
    await _open(store, tenant, "E1")
    request = plan_request(tenant_id=tenant, exception_id="E1", plan={"steps": []}, evidence={}, requested_by="executor",
                           roles=["approver"], needed=1, now=T0, ttl=timedelta(hours=1))
    with pytest.raises(StoreError, match="needs an audit entry"):  # a status change outside the chain
        await store.record_execution(tenant, JournalEntry("E1", fields={"status": "PENDING_APPROVAL"},
                                                          approval=request))
    assert await store.get_approval(tenant, request.approval_id) is None
    await store.record_execution(tenant, JournalEntry("E1", fields={"status": "PENDING_APPROVAL"}, approval=request,
                                                      **_logged("E1", "pause")))
    stored = await store.get_approval(tenant, request.approval_id)
    assert stored is not None and (stored.status, stored.allowed_roles) == ("PENDING", ("approver",))

    foreign = plan_request(tenant_id=other_tenant, exception_id="E1", plan={}, evidence={}, requested_by="executor",
                           roles=["approver"], needed=1, now=T0)
    await _open(store, tenant, "E2")
    with pytest.raises(StoreError):
        await store.record_execution(tenant, JournalEntry("E2", inserts=[_claim("E2", 0)], approval=foreign))
    assert await store.execution_records(tenant, "E2") == []
    assert await store.get_approval(other_tenant, foreign.approval_id) is None


async def test_an_unknown_tenant_is_not_found(store: Store, new_tenant_id: Callable[[], str]) -> None:
    with pytest.raises(NotFound):
        await store.record_execution(new_tenant_id(), JournalEntry("E1", inserts=[_claim("E1", 0)]))


async def test_the_portable_path_writes_the_same_journal(store: Store, tenant: str) -> None:
    """Drivers without a fast path run the same statements through SQLAlchemy (forced here)."""
    store._write_program = lambda program, **_: store._write_program_sqlalchemy(program)  # type: ignore[method-assign]
    await _open(store, tenant, "E1")
    claim = _claim("E1", 0)
    await store.record_execution(tenant, JournalEntry("E1", inserts=[claim], **_logged("E1", "claim")))
    with pytest.raises(ClaimLost):
        await store.record_execution(tenant, JournalEntry("E1", settles=[_outcome(_claim("E1", 5))]))
    await store.record_execution(tenant, JournalEntry("E1", settles=[_outcome(claim)], fields={"status": "RESOLVED"},
                                                      **_logged("E1", "settle")))
    [row] = await store.execution_records(tenant, "E1")
    assert (row.status, row.output) == ("SUCCEEDED", {"ok": True, "n": 1e300})
    assert (await store.get_exception(tenant, "E1") or {})["status"] == "RESOLVED"
    assert (await store.verify_audit(tenant)).ok


async def test_a_small_entry_takes_the_short_path_and_writes_a_verifiable_chain(
    store: Store, tenant: str, other_tenant: str
) -> None:
    """A claim with its predecessor's outcome, several events and audit entries: one statement on PostgreSQL
    (the server hashes the chain), one transaction on the event loop's thread on SQLite."""
    await _open(store, tenant, "E1")
    await _open(store, other_tenant, "E1")
    other_head = await store.audit_head(other_tenant)
    first = _claim("E1", 0)
    await store.record_execution(tenant, JournalEntry("E1", inserts=[first]))
    calls: list[dict[str, Any]] = []
    write = store._write_program

    async def spy(program: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await write(program, **kwargs)

    store._write_program = spy  # type: ignore[method-assign]
    events_before = len(await store.get_events(tenant, "E1"))
    details = [{"what": "settle", "n": 1e300}, {"what": "claim", "s": "\"quoted\" é"}, {"what": "third"}]
    entry = JournalEntry(
        "E1", inserts=[_claim("E1", 1), _claim("E1", 2)], settles=[_outcome(first)],
        events=[EventRow("E1", "tool.attempt", T0, None, d) for d in details[:2]],
        audits=[AuditRow("executor", "tool.attempt", "E1", T0, d) for d in details],
    )
    await store.record_execution(tenant, entry)
    assert calls == [{"single": True}] if store.dialect == "postgresql" else [{"inline": True}]
    records = await store.execution_records(tenant, "E1")
    assert [(r.key, r.status, r.final) for r in records] == [
        ((0, "step", 1), "SUCCEEDED", True), ((1, "step", 1), "STARTED", False), ((2, "step", 1), "STARTED", False)
    ]
    assert records[0].output == {"ok": True, "n": 1e300} and records[1].deadline == _claim("E1", 1).deadline
    events = await store.get_events(tenant, "E1")
    assert [e["payload"] for e in events[events_before:]] == details[:2]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await store.verify_audit(tenant)).ok
    assert [e.detail for e in (await store.get_audit(tenant, limit=1000))[-3:]] == details
    assert await store.audit_head(other_tenant) == other_head
    assert await store.execution_records(other_tenant, "E1") == []


async def test_a_refused_small_entry_writes_nothing(store: Store, tenant: str) -> None:
    """The short paths refuse like the general one: unknown exception, wrong status, settle without claim."""
    await _open(store, tenant, "E1")
    await _open(store, tenant, "E2", status="TRIAGED")
    head = await store.audit_head(tenant)
    events = len(await store.get_events(tenant, "E1"))
    results = await store.record_executions(tenant, [JournalEntry("NOPE", inserts=[_claim("NOPE", 0)],
                                                                  **_logged("NOPE", "x"))])
    assert isinstance(results[0], NotFound)
    with pytest.raises(StatusChanged):
        await store.record_execution(tenant, JournalEntry("E2", inserts=[_claim("E2", 0)], **_logged("E2", "x")))
    with pytest.raises(ClaimLost):  # the settle finds no STARTED row: the claim beside it is not written
        await store.record_execution(tenant, JournalEntry("E1", inserts=[_claim("E1", 1)],
                                                          settles=[_outcome(_claim("E1", 0))], **_logged("E1", "x")))
    await store.record_execution(tenant, JournalEntry("E1", inserts=[_claim("E1", 0)]))
    with pytest.raises(ClaimLost):  # another runner's claim of the same attempt
        await store.record_execution(tenant, JournalEntry("E1", inserts=[_claim("E1", 0)], **_logged("E1", "x")))
    assert [r.key for r in await store.execution_records(tenant, "E1")] == [(0, "step", 1)]
    assert await store.execution_records(tenant, "E2") == []
    assert len(await store.get_events(tenant, "E1")) == events
    assert await store.audit_head(tenant) == head


async def test_the_event_loop_never_waits_for_another_sqlite_writer(tmp_path: Path) -> None:
    """While another connection holds SQLite's write lock, a journal write waits off the event loop's thread
    (the loop keeps running) and commits once the lock is released."""
    path = tmp_path / "locked.db"
    async with await Store.open(f"sqlite+aiosqlite:///{path}") as store:
        await store.create_tenant("t1", "T")
        await _open(store, "t1", "E1")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            write = asyncio.create_task(store.record_execution("t1", JournalEntry("E1", inserts=[_claim("E1", 0)])))
            await asyncio.sleep(0.2)
            # the loop ran on while the write waits: a write waiting on the loop's own thread would hold the
            # loop until SQLite's busy timeout gave up, so the sleep would end with the write done (failed)
            assert not write.done()
            other.execute("COMMIT")
            await asyncio.wait_for(write, 10)
        finally:
            other.close()
        assert [r.key for r in await store.execution_records("t1", "E1")] == [(0, "step", 1)]
        await store.record_execution("t1", JournalEntry("E1", inserts=[_claim("E1", 1)]))  # the lock is free:
        inline = store._inline._conn if store._inline is not None else None
        assert inline is not None and inline.total_changes == 1  # that one ran on the loop's own connection
        assert (await store.verify_audit("t1")).ok
