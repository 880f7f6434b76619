"""The intake outbox: idempotent enqueue, leased claims, done/rejected."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from breakdesk.store import IntakeItem, NotFound, Store


async def test_enqueue_claim_done_cycle(store: Store, tenant: str) -> None:
    items = [IntakeItem({"n": i}, f"k{i}") for i in range(3)] + [IntakeItem({"n": "anon"})]
    queued = await store.enqueue(tenant, items)
    assert [q.duplicate for q in queued] == [False] * 4
    assert len({q.id for q in queued}) == 4

    again = await store.enqueue(
        tenant, [IntakeItem({"n": 1}, "k1"), IntakeItem({"n": 9}, "k9"), IntakeItem({"n": 9}, "k9")]
    )
    assert again[0].duplicate and again[0].id == queued[1].id
    assert not again[1].duplicate
    assert again[2].duplicate and again[2].id == again[1].id  # duplicate within one call
    assert await store.queue_counts(tenant) == {"PENDING": 5, "DONE": 0, "REJECTED": 0}

    first = await store.claim(2, tenant_id=tenant)
    assert [c.id for c in first] == [queued[0].id, queued[1].id]
    assert all(c.attempts == 1 and c.state == "PENDING" and c.tenant_id == tenant for c in first)
    assert first[0].payload == {"n": 0}
    rest = await store.claim(10, tenant_id=tenant)
    assert {c.id for c in rest} == {
        queued[2].id,
        queued[3].id,
        again[1].id,
    }  # leased items are not handed out twice
    assert await store.claim(10, tenant_id=tenant) == []

    assert await store.mark_done(tenant, [c.id for c in first]) == 2
    assert await store.mark_done(tenant, [first[0].id]) == 0  # already done
    await store.mark_rejected(tenant, rest[0].id, "payload is not an exception")
    with pytest.raises(NotFound):
        await store.mark_rejected(tenant, rest[0].id, "twice")
    assert await store.queue_counts(tenant) == {"PENDING": 2, "DONE": 2, "REJECTED": 1}
    rejected = await store.get_queue_item(tenant, rest[0].id)
    assert rejected is not None and (rejected.state, rejected.error) == (
        "REJECTED",
        "payload is not an exception",
    )

    # A key stays deduped after its item is finished.
    [dup] = await store.enqueue(tenant, [IntakeItem({"n": 0}, "k0")])
    assert dup.duplicate and dup.id == queued[0].id


async def test_expired_lease_is_claimed_again(store: Store, tenant: str) -> None:
    [item] = await store.enqueue(tenant, [IntakeItem({"n": 1}, "k")])
    [c1] = await store.claim(1, tenant_id=tenant, lease_seconds=-1)  # a worker that died at once
    [c2] = await store.claim(1, tenant_id=tenant)
    assert c1.id == c2.id == item.id
    assert c2.attempts == 2


async def test_claim_spans_tenants_unless_restricted(
    store: Store, tenant: str, new_tenant_id: Callable[[], str]
) -> None:
    other = new_tenant_id()
    await store.create_tenant(other)
    await store.enqueue(tenant, [IntakeItem({"t": "a"})])
    await store.enqueue(other, [IntakeItem({"t": "b"})])
    mine = await store.claim(10, tenant_id=other)
    assert [c.tenant_id for c in mine] == [other]
    everyone = await store.claim(1000)
    assert tenant in {c.tenant_id for c in everyone}
    assert other not in {c.tenant_id for c in everyone}  # still leased


async def test_enqueue_for_unknown_tenant(store: Store, new_tenant_id: Callable[[], str]) -> None:
    with pytest.raises(NotFound):
        await store.enqueue(new_tenant_id(), [IntakeItem({})])


async def test_enqueue_empty_and_claim_zero(store: Store, tenant: str) -> None:
    assert await store.enqueue(tenant, []) == []
    assert await store.claim(0) == []


async def test_each_returned_id_holds_its_own_item(store: Store, tenant: str,
                                                   new_tenant_id: Callable[[], str]) -> None:
    other = new_tenant_id()
    await store.create_tenant(other)
    await store.enqueue(other, [IntakeItem({"other": i}) for i in range(7)])  # ids of another tenant in between
    items = [IntakeItem({"n": i}, f"key-{i}" if i % 3 else None) for i in range(250)]
    queued = await store.enqueue(tenant, items[:120])
    await store.enqueue(other, [IntakeItem({"other": "late"})])
    queued += await store.enqueue(tenant, items[100:])  # 20 keyed or not: keyed ones are duplicates
    claimed = {c.id: c.payload for c in await store.claim(1000, tenant_id=tenant)}
    by_id = [claimed[q.id] for q in queued]
    assert by_id == [i.payload for i in items[:120]] + [i.payload for i in items[100:]]
    dup = [q.duplicate for q in queued[120:140]]
    assert dup == [n % 3 != 0 for n in range(100, 120)]
