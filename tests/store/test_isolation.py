"""Tenant isolation: tenant B never sees, changes or counts tenant A's rows, through any method."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
from store_builders import T0, make_write

from breakdesk.store import AuditRow, EventRow, IntakeItem, NotFound, Store

#: Methods that are deliberately not tenant-scoped (platform level) or not repository methods.
#: `get_api_key` is how authentication learns the tenant: it looks a key up by its id alone.
UNSCOPED = {"open", "close", "migrations_current", "list_tenants", "claim", "due_approvals", "get_api_key"}


def test_every_repository_method_takes_tenant_id_first() -> None:
    for name, fn in inspect.getmembers(Store, inspect.isfunction):
        if name.startswith("_") or name in UNSCOPED:
            continue
        params = list(inspect.signature(fn).parameters.values())
        assert params[1].name == "tenant_id", name
        assert params[1].default is inspect.Parameter.empty, name


@pytest.fixture
async def two_tenants(store: Store, new_tenant_id: Callable[[], str]) -> tuple[str, str]:
    a, b = new_tenant_id(), new_tenant_id()
    await store.create_tenant(a)
    await store.create_tenant(b)
    await store.write_batch(
        a, [make_write(a, "EXC-1", 0, fingerprint="fp-shared"), make_write(a, "EXC-2", 1)]
    )
    await store.publish_pack(a, "domain", "finance", "1.0.0", {"x": 1}, "alice")
    await store.activate(a, "domain", "finance", "1.0.0", "alice")
    await store.enqueue(a, [IntakeItem({"n": 1}, "qk")])
    return a, b


async def test_reads_are_tenant_scoped(store: Store, two_tenants: tuple[str, str]) -> None:
    a, b = two_tenants
    # Sanity: A sees its own data.
    assert await store.get_exception(a, "EXC-1") is not None
    assert len((await store.list_exceptions(a))[0]) == 2

    assert await store.get_exception(b, "EXC-1") is None
    assert (await store.list_exceptions(b)) == ([], None)
    for kwargs in (
        {"status": "TRIAGED"},
        {"exception_type": "PAYMENT_MISMATCH"},
        {"severity": "LOW"},
        {"source_system": "erp"},
        {"since": T0},
        {"until": T0.replace(year=2030)},
        {"text": "EXC"},
        {"include_record": True},
    ):
        assert (await store.list_exceptions(b, **kwargs)) == ([], None), kwargs
    _, cursor = await store.list_exceptions(a, limit=1)
    assert cursor is not None
    assert (await store.list_exceptions(b, cursor=cursor)) == ([], None)  # A's cursor reveals nothing to B
    assert await store.get_events(b, "EXC-1") == []
    assert await store.find_by_idempotency_keys(b, ["key-EXC-1"]) == {}
    assert await store.find_open_by_fingerprints(b, ["fp-shared"]) == {}
    assert await store.fingerprint_stats(b, ["fp-shared"]) == {}
    assert [e.subject for e in await store.get_audit(b, limit=1000)] == [f"tenant:{b}"]
    assert await store.get_audit(b, subject="EXC-1") == []
    assert (await store.audit_head(b))[0] == 1
    assert (await store.verify_audit(b)).checked == 1
    assert await store.list_pack_versions(b) == []
    assert await store.get_pack(b, "domain", "finance", "1.0.0") is None
    assert await store.active_pack(b, "domain") is None
    assert await store.activation_history(b) == []
    assert await store.queue_counts(b) == {"PENDING": 0, "DONE": 0, "REJECTED": 0}
    [queued] = await store.claim(10, tenant_id=a)
    assert await store.get_queue_item(b, queued.id) is None
    assert await store.claim(10, tenant_id=b) == []


async def test_writes_cannot_reach_another_tenant(store: Store, two_tenants: tuple[str, str]) -> None:
    a, b = two_tenants
    with pytest.raises(NotFound):
        await store.update_exception(b, "EXC-1", status="CLOSED")
    with pytest.raises(NotFound):
        await store.append_events(
            b, "EXC-1", [EventRow("EXC-1", "human", T0)], [AuditRow("x", "y", "EXC-1", T0)]
        )
    with pytest.raises(NotFound):
        await store.write_batch(b, [make_write(b, "EXC-9", 9, recurrence_of="EXC-1")])
    with pytest.raises(NotFound):
        await store.activate(b, "domain", "finance", "1.0.0", "mallory")
    [queued] = await store.claim(10, tenant_id=a)
    assert await store.mark_done(b, [queued.id]) == 0
    with pytest.raises(NotFound):
        await store.mark_rejected(b, queued.id, "nope")

    # The same ids and keys are free to use in another tenant.
    await store.write_batch(b, [make_write(b, "EXC-1", 0, fingerprint="fp-shared")])
    await store.publish_pack(b, "domain", "finance", "1.0.0", {"different": True}, "bob")
    [mine] = await store.enqueue(b, [IntakeItem({}, "qk")])
    assert not mine.duplicate

    a_row = await store.get_exception(a, "EXC-1")
    assert a_row is not None and a_row["status"] == "TRIAGED" and a_row["tenant_id"] == a
    assert len(await store.get_events(a, "EXC-1")) == 6
    assert (await store.fingerprint_stats(a, ["fp-shared"]))["fp-shared"].occurrences == 1
    pack = await store.get_pack(a, "domain", "finance", "1.0.0")
    assert pack is not None and pack.content == {"x": 1}
    assert (await store.verify_audit(a)).ok and (await store.verify_audit(b)).ok
