"""How a resident index follows the rows its own process writes: from the cases the hot path asked to write
(no read-back of their documents), yet exactly as if the rows had been read — and rows that are not what this
process wrote (replaced, resolved, another writer's) are read in full. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from memkit import SMALL, make_tenant, process, sf

from breakdesk.memory import Memory
from breakdesk.store import Store
from breakdesk.store.cases import CaseDoc

MORE = [
    sf("E-7", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "Counterparty short of securities again", "ST-7"),
    sf("E-8", "Barclays Capital Inc.", "SSI_MISMATCH", "Instructions outdated at the custodian", "ST-8"),
]


async def test_case_heads_and_cases_by_ids_are_tenant_scoped_and_in_id_order(store: Store,
                                                                             tenant_factory: Any) -> None:
    a, b = await tenant_factory(), await tenant_factory()
    await process(store, a, SMALL, memory=False)
    await process(store, b, SMALL[:2], memory=False)
    now = datetime(2025, 3, 14, tzinfo=UTC)
    docs = [CaseDoc(exception_id=f"E-{i}", exception_type="SETTLEMENT_FAIL", source_system="custody-feed",
                    status="OPEN", received_at=now, body=f"case {i}", entities={"settleId": f"ST-{i}"},
                    severity="HIGH" if i == 2 else None, fingerprint=f"fp-{i}",
                    resolution={"summary": "fixed"} if i == 3 else None) for i in (1, 2, 3)]
    await store.replace_cases(a, docs)
    await store.replace_cases(b, docs[:1])
    full = await store.cases_after(a, 0)
    heads = await store.case_heads_after(a, 0)
    assert [(h.id, h.exception_id, h.status, h.severity, h.fingerprint, h.resolved) for h in heads] == \
        [(c.id, c.exception_id, c.status, c.severity, c.fingerprint, c.resolution is not None) for c in full]
    assert [h.exception_id for h in heads] == ["E-1", "E-2", "E-3"]
    assert [h.resolved for h in heads] == [False, False, True] and heads[1].severity == "HIGH"
    assert await store.case_heads_after(a, heads[0].id, 1) == heads[1:2]  # keyset page
    # by ids: the tenant's rows only, in id order, unknown ids absent
    b_ids = [c.id for c in await store.cases_after(b, 0)]
    got = await store.cases_by_ids(a, [heads[2].id, heads[0].id, *b_ids, 10**12])
    assert got == [full[0], full[2]]
    assert await store.cases_by_ids(b, [h.id for h in heads]) == []
    assert await store.cases_by_ids(a, []) == []


def snapshot(idx: Any) -> dict[str, Any]:
    """Every case held, and the order of its entities (the order its fields and words are analysed in)."""
    return {eid: (idx.case(eid), list(idx.case(eid).entities)) for eid in idx._slot}


async def test_an_index_following_its_own_writes_equals_one_read_from_the_store(store: Store,
                                                                                tenant_factory: Any) -> None:
    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    reads: list[int] = []
    by_ids = store.cases_by_ids

    async def counted(tenant_id: str, ids: Any) -> Any:
        reads.extend(ids)
        return await by_ids(tenant_id, ids)

    store.cases_by_ids = counted  # type: ignore[method-assign]
    try:
        await process(store, t, MORE, memory=mem)  # its sync indexes SMALL's rows from the docs it wrote
        assert reads == []
        mine = await mem.index(t)  # and now MORE's
        assert reads == []
    finally:
        del store.cases_by_ids
    fresh = await Memory(store).index(t)  # everything read from the store
    assert len(mine) == len(fresh) == 8 and mine.last_case_id == fresh.last_case_id
    assert snapshot(mine) == snapshot(fresh)
    for eid in ("E-1", "E-3", "E-5", "E-7"):
        assert [tuple(h) for h in mine.search(mine.query_for(mine.case(eid)), 5)] == \
            [tuple(h) for h in fresh.search(fresh.query_for(fresh.case(eid)), 5)]


async def test_rows_that_are_not_what_the_process_wrote_are_read(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)  # pending: SMALL's cases, as written
    # before the next sync, the indexer resolves E-1 (a new row) and E-2's row is replaced with another status
    e1, e2 = await store.get_case(t, "E-1"), await store.get_case(t, "E-2")
    assert e1 is not None and e2 is not None
    await store.replace_cases(t, [
        CaseDoc(exception_id="E-1", exception_type=e1.exception_type, source_system=e1.source_system,
                status="RESOLVED", received_at=e1.received_at, body=e1.body + "\nresolved: reissued the SSI",
                entities=e1.entities, severity=e1.severity, fingerprint=e1.fingerprint,
                resolution={"summary": "reissued the SSI"}, resolved_at=e1.received_at),
        CaseDoc(exception_id="E-2", exception_type=e2.exception_type, source_system=e2.source_system,
                status="CLOSED", received_at=e2.received_at, body=e2.body, entities=e2.entities,
                severity=e2.severity, fingerprint=e2.fingerprint),
    ])
    idx = await mem.index(t)
    fresh = await Memory(store).index(t)
    assert snapshot(idx) == snapshot(fresh)
    case = idx.case("E-1")
    assert case is not None and case.status == "RESOLVED" and case.resolution == {"summary": "reissued the SSI"}
    assert idx.case("E-2").status == "CLOSED"  # type: ignore[union-attr]
    q = idx.query_for(idx.case("E-3"))  # type: ignore[arg-type]
    assert [tuple(h) for h in idx.search(q, 6)] == [tuple(h) for h in fresh.search(fresh.query_for(fresh.case("E-3")), 6)]  # type: ignore[arg-type]


async def test_a_closed_store_releases_its_shared_memory(db_url: str) -> None:
    """`Memory.shared` must not keep a store, and its tenants' resident indexes, alive after the store is
    gone: the memory refers to its store weakly (a strong reference from the value kept its own key)."""
    store = await Store.open(db_url)
    tenant = await make_tenant(store, None)
    await process(store, tenant, SMALL)
    memory = Memory.shared(store)
    await memory.index(tenant)
    assert Memory.shared(store) is memory and memory.resident_cases() == len(SMALL)
    gone = weakref.ref(memory)
    await store.close()
    del store, memory
    gc.collect()
    assert gone() is None


async def test_a_replaced_latest_case_gets_a_new_id_and_reaches_a_caught_up_index(store: Store,
                                                                                 tenant_factory: Any) -> None:
    """Readers follow `id > last seen`, so a replaced row must never take an id already handed out — on
    SQLite a plain rowid reuses the largest id once that row is deleted, and the latest case's resolution
    would never reach an index that had indexed the case before."""
    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    idx = await mem.index(t)
    latest = max((idx.case(eid) for eid in idx._slot), key=lambda c: c.id)  # type: ignore[union-attr]
    await store.replace_cases(t, [CaseDoc(
        exception_id=latest.exception_id, exception_type=latest.exception_type,
        source_system=latest.source_system, status="RESOLVED", received_at=latest.received_at,
        body=latest.body, entities=latest.entities, severity=latest.severity, fingerprint=latest.fingerprint,
        resolution={"summary": "reissued the SSI"}, resolved_at=latest.received_at)])
    stored = await store.get_case(t, latest.exception_id)
    assert stored is not None and stored.id > latest.id
    idx = await mem.index(t)
    case = idx.case(latest.exception_id)
    assert case is not None and case.status == "RESOLVED" and case.resolution == {"summary": "reissued the SSI"}


async def test_a_case_committed_after_a_later_id_still_reaches_a_follower(pg_url: str) -> None:
    """PostgreSQL hands out ids when rows are inserted, not when they commit: a transaction that took an id
    and committed after one that took a larger id would hide its row from every reader already past that
    id. Every transaction writing a tenant's cases holds the tenant's write lock from before its ids are
    taken to its commit, so the tenant's ids commit in order: here the indexer's replacement waits for the
    pipeline batch that took its lock first."""
    from breakdesk.store.cases import insert_cases

    store = await Store.open(pg_url)
    try:
        t = await make_tenant(store, None)
        mem = Memory(store)
        await process(store, t, SMALL, memory=mem)
        await mem.index(t)
        e1 = await store.get_case(t, "E-1")
        assert e1 is not None
        batch_open, batch_commit = asyncio.Event(), asyncio.Event()

        async def pipeline_batch() -> None:  # as write_batch: the tenant's lock first, then its case rows
            async with store._write() as conn:
                await store._tenant_head(conn, t)
                await insert_cases(conn, t, [CaseDoc(
                    exception_id="E-NEW", exception_type=e1.exception_type, source_system=e1.source_system,
                    status="OPEN", received_at=e1.received_at, body=e1.body, entities=e1.entities)],
                    datetime.now(UTC))
                batch_open.set()
                await batch_commit.wait()

        batch = asyncio.create_task(pipeline_batch())
        await batch_open.wait()
        resolved = replace(e1, status="RESOLVED", resolution={"summary": "reissued the SSI"})
        indexer = asyncio.create_task(store.replace_cases(t, [CaseDoc(
            exception_id="E-1", exception_type=e1.exception_type, source_system=e1.source_system,
            status="RESOLVED", received_at=e1.received_at, body=e1.body, entities=e1.entities,
            resolution=resolved.resolution, resolved_at=e1.received_at)]))
        await asyncio.sleep(0.3)
        await mem.index(t)  # a follower catching up while the batch is still open
        batch_commit.set()
        await asyncio.gather(batch, indexer)
        idx = await mem.index(t)
        assert "E-NEW" in idx
        case = idx.case("E-1")
        assert case is not None and case.status == "RESOLVED"
    finally:
        await store.close()


def _resolved(eid: str, at: datetime | None, resolution: dict[str, Any] | None = None) -> CaseDoc:
    return CaseDoc(exception_id=eid, exception_type="SETTLEMENT_FAIL", source_system="custody-feed",
                   status="RESOLVED" if resolution else "TRIAGED", received_at=datetime(2025, 3, 1, tzinfo=UTC),
                   body=f"counterparty short of securities ({eid})", entities={"settleId": eid},
                   fingerprint="fp-same", resolution=resolution, resolved_at=at)


async def test_a_fingerprints_last_resolution_is_the_stores_and_survives_a_reopened_case(
        store: Store, tenant_factory: Any) -> None:
    """Resident indexes answer "the last resolution of this fingerprint" as the store does (latest
    resolution time, then row id), however they came to hold the cases; reopening the latest resolved
    case hands the answer back to the one before it."""
    t = await tenant_factory()
    h1, h2, h3 = (datetime(2025, 3, 2, h, tzinfo=UTC) for h in (1, 2, 3))
    following = Memory(store)
    # B is resolved later than A but its row is written first: row order and resolution order disagree
    await store.replace_cases(t, [_resolved("B", h2, {"summary": "B: reissued the SSI"})])
    await store.replace_cases(t, [_resolved("A", h1, {"summary": "A: waited for the cycle"})])
    await store.replace_cases(t, [_resolved("C", None, {"summary": "C: no time recorded"})])

    async def agree(expected: str) -> None:
        stored = (await store.last_resolutions(t, ["fp-same"]))["fp-same"]
        held = (await following.index(t)).last_resolution("fp-same")
        fresh = (await Memory(store).index(t)).last_resolution("fp-same")
        assert (stored.exception_id, held and held.exception_id, fresh and fresh.exception_id) == (expected,) * 3

    await agree("B")
    await store.replace_cases(t, [_resolved("B", None)])  # reopened: no resolution any more
    await agree("A")
    await store.replace_cases(t, [_resolved("D", h3, {"summary": "D: fixed"})])
    await agree("D")


async def test_a_vector_whose_case_is_committed_during_a_sync_is_not_lost(store: Store,
                                                                         tenant_factory: Any) -> None:
    """A sync reads cases, then vectors. A case and its vector committed in between used to be skipped (no
    slot yet) while the vector position moved past it, so the index never got that vector: now vectors
    whose case row the index has not read wait for the next sync. A vector of a replaced version of a case
    is not attached to the newer version, on load or while following."""
    t = await tenant_factory()
    model = "test:model"
    store._pgvector = False  # vectors held in process (as on a PostgreSQL without the pgvector extension)

    async def embed(eid: str, value: float) -> None:
        case = await store.get_case(t, eid)
        assert case is not None
        await store.save_vectors(t, model, [(eid, case.id, np.full(4, value, np.float32))], case.id)

    await store.replace_cases(t, [_resolved("A", None)])
    await embed("A", 1.0)
    mem = Memory(store)
    await mem.index(t, model)
    vectors_after = store.vectors_after
    raced = False

    async def racing(*args: Any, **kw: Any) -> Any:
        nonlocal raced
        if not raced:  # between the sync's two reads: the pipeline writes B, the indexer embeds it
            raced = True
            await store.replace_cases(t, [_resolved("B", None)])
            await embed("B", 2.0)
        return await vectors_after(*args, **kw)

    store.vectors_after = racing  # type: ignore[method-assign]
    try:
        await mem.index(t, model)
    finally:
        del store.vectors_after
    assert raced
    idx = await mem.index(t, model)
    assert idx.vector_of(model, "B") is not None
    # A is replaced (a new row) and not yet embedded again: its old vector belongs to the old row
    await store.replace_cases(t, [_resolved("A", datetime(2025, 3, 2, tzinfo=UTC), {"summary": "fixed"})])
    idx = await mem.index(t, model)
    fresh = await Memory(store).index(t, model)
    for eid in ("A", "B"):
        mine, theirs = idx.vector_of(model, eid), fresh.vector_of(model, eid)
        assert (mine is None) == (theirs is None) and (mine is None or np.array_equal(mine, theirs)), eid
    assert idx.vector_of(model, "A") is None
    await embed("A", 3.0)
    assert (await mem.index(t, model)).vector_of(model, "A") is not None
