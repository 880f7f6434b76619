"""Audit chain in the database: appended with the events, verified in chunks, tampering located exactly."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import text
from store_builders import make_write

from breakdesk.audit import GENESIS_HASH
from breakdesk.store import NotFound, Store


async def _raw(store: Store, sql: str, **params: object) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text(sql), params)


@pytest.fixture
async def audited(store: Store, tenant: str) -> str:
    await store.write_batch(tenant, [make_write(tenant, f"EXC-{i}", i) for i in range(5)])  # seq 2..31
    return tenant


async def test_chain_links_from_genesis(store: Store, audited: str) -> None:
    entries = await store.get_audit(audited, limit=1000)
    assert [e.seq for e in entries] == list(range(1, 32))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert await store.audit_head(audited) == (31, entries[-1].hash)
    page = await store.get_audit(audited, limit=10, after_seq=10)
    assert [e.seq for e in page] == list(range(11, 21))


@pytest.mark.parametrize("chunk_size", [1, 7, 2000])
async def test_verify_ok_in_any_chunk_size(store: Store, audited: str, chunk_size: int) -> None:
    result = await store.verify_audit(audited, chunk_size=chunk_size)
    assert (result.ok, result.checked, result.first_broken_seq) == (True, 31, None)


async def test_tampered_detail_is_named(store: Store, audited: str) -> None:
    await _raw(
        store,
        "UPDATE audit_entries SET detail = :d WHERE tenant_id = :t AND seq = 17",
        d='{"i": 999}',
        t=audited,
    )
    result = await store.verify_audit(audited, chunk_size=5)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 17, 16)
    assert result.reason is not None and "hash mismatch" in result.reason


async def test_tampered_actor_with_recomputed_hash_breaks_next_link(store: Store, audited: str) -> None:
    from breakdesk.audit import entry_hash

    entry = (await store.get_audit(audited, limit=1, after_seq=8))[0]
    forged_hash = entry_hash(entry.prev_hash, {**entry.body(), "actor": "mallory"})
    await _raw(
        store,
        "UPDATE audit_entries SET actor = 'mallory', hash = :h WHERE tenant_id = :t AND seq = 9",
        h=forged_hash,
        t=audited,
    )
    result = await store.verify_audit(audited)
    assert (result.ok, result.first_broken_seq) == (False, 10)
    assert result.reason is not None and "prev_hash mismatch" in result.reason


async def test_deleted_entry_is_a_gap(store: Store, audited: str) -> None:
    await _raw(store, "DELETE FROM audit_entries WHERE tenant_id = :t AND seq = 12", t=audited)
    result = await store.verify_audit(audited, chunk_size=4)
    assert (result.ok, result.first_broken_seq) == (False, 12)
    assert result.reason is not None and "gap in seq" in result.reason


async def test_truncated_tail_is_a_gap(store: Store, audited: str) -> None:
    await _raw(store, "DELETE FROM audit_entries WHERE tenant_id = :t AND seq >= 30", t=audited)
    result = await store.verify_audit(audited)
    assert (result.ok, result.first_broken_seq) == (False, 30)
    assert result.reason is not None and "gap in seq" in result.reason


async def test_verify_unknown_tenant(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.verify_audit("no-such-tenant")


async def test_appends_continue_the_chain_across_operations(store: Store, audited: str) -> None:
    await store.publish_pack(audited, "domain", "finance", "1.0.0", {"x": 1}, "alice")
    await store.write_batch(audited, [make_write(audited, "EXC-9", 9, events=2)])
    result = await store.verify_audit(audited, chunk_size=3)
    assert result.ok and result.checked == 34
