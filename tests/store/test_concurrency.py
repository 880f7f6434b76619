"""Concurrent writers: the audit head lock serialises them, so seqs and the chain stay intact."""

from __future__ import annotations

import asyncio

from store_builders import make_write

from breakdesk.store import IntakeItem, Store


async def test_concurrent_batches_keep_chain_and_seqs(store: Store, tenant: str) -> None:
    await store.write_batch(tenant, [make_write(tenant, "EXC-0", 0, fingerprint="fp")])

    async def batch(k: int) -> None:
        writes = [make_write(tenant, f"EXC-{k}-{i}", i, events=2) for i in range(20)]
        writes.append(make_write(tenant, f"EXC-R{k}", 1, fingerprint="fp", events=3, recurrence_of="EXC-0"))
        await store.write_batch(tenant, writes)

    await asyncio.gather(*(batch(k) for k in range(6)))
    result = await store.verify_audit(tenant)
    assert result.ok and result.checked == 1 + 6 + 6 * (20 * 2 + 3)
    events = await store.get_events(tenant, "EXC-0")
    assert [e["seq"] for e in events] == list(range(1, 6 + 6 * 3 + 1))
    row = await store.get_exception(tenant, "EXC-0")
    assert row is not None and row["recurrence_count"] == 6
    assert (await store.fingerprint_stats(tenant, ["fp"]))["fp"].occurrences == 7


async def test_concurrent_claims_are_disjoint(store: Store, tenant: str) -> None:
    await store.enqueue(tenant, [IntakeItem({"n": i}) for i in range(40)])
    batches = await asyncio.gather(*(store.claim(7, tenant_id=tenant) for _ in range(8)))
    ids = [item.id for b in batches for item in b]
    assert len(ids) == len(set(ids)) == 40
