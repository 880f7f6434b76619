"""A new domain pack version re-renders the cases it renders differently, and only those."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from memkit import ROOT, SMALL, Held, close, process, renderings_read, sf
from sqlalchemy import update

from breakdesk.catalog import Catalog
from breakdesk.memory import Memory
from breakdesk.memory import indexer as indexer_module
from breakdesk.memory.index import TenantIndex
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.memory.lookup import memory_status
from breakdesk.memory.text import pack_rendering, type_rendering
from breakdesk.packs.compiler import compile_domain
from breakdesk.packs.loader import model_from_data, read_file
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store
from breakdesk.store.records import AuditRow, EventRow
from breakdesk.store.tables import memory_cases, memory_tenants

NEW_WORDS = "A delivery leg stayed open past its settlement date at the depository"


def finance(version: str = "1.0.0", **type_changes: dict[str, Any]) -> dict[str, Any]:
    """The example finance domain pack's data, as `version`, with some of its types' specs changed."""
    data, _ = read_file(ROOT / "packs/finance/domain.yaml")
    data = copy.deepcopy(data)
    data["version"] = version
    for name, changes in type_changes.items():
        data["exceptionTypes"][name].update(changes)
    return data


async def activate(store: Store, tenant: str, data: dict[str, Any]) -> None:
    await Catalog(store).publish(tenant, data, "domain.yaml", "admin@example.com", activate=True)


async def case_ids(store: Store, tenant: str) -> dict[str, int]:
    return {c.exception_id: c.id for c in await store.cases_after(tenant, 0)}


async def renderings(store: Store, tenant: str) -> dict[str, str | None]:
    return {e: r for _, e, _, r in await store.case_renderings_after(tenant, 0)}


async def indexed(store: Store, tenant_factory: Any) -> tuple[str, MemoryIndexer]:
    t = await tenant_factory()
    indexer = MemoryIndexer(store, Memory(store))
    await process(store, t, SMALL, memory=indexer.memory)
    report = await indexer.run_once(t)
    assert report.rerendered == 0  # the pipeline rendered them with the active pack
    return t, indexer


def test_what_a_type_is_rendered_with_is_what_its_digest_follows() -> None:
    base = compile_domain(model_from_data(finance(), "v1"))
    same = compile_domain(model_from_data(
        finance("1.0.1", SETTLEMENT_FAIL={"rootCauseHint": "Another hint", "defaultSeverity": "LOW"}), "v2"))
    worded = compile_domain(model_from_data(finance("1.0.2", SETTLEMENT_FAIL={"description": NEW_WORDS}), "v3"))
    keyed = compile_domain(model_from_data(
        finance("1.0.3", SETTLEMENT_FAIL={"similarity": {"keyFields": ["counterparty"]}}), "v4"))
    fs = "SETTLEMENT_FAIL"
    assert type_rendering(same, fs) == type_rendering(base, fs) and pack_rendering(same) == pack_rendering(base)
    for changed in (worded, keyed):
        assert type_rendering(changed, fs) != type_rendering(base, fs)
        assert type_rendering(changed, "CASH_BREAK") == type_rendering(base, "CASH_BREAK")
        assert pack_rendering(changed) != pack_rendering(base)
    # a type the pack does not declare reads as its name and the domain's
    assert type_rendering(base, "SOMETHING_NEW") == type_rendering(worded, "SOMETHING_NEW")
    assert type_rendering(base, "SOMETHING_NEW") != type_rendering(None, "SOMETHING_NEW")


async def test_a_new_pack_version_re_renders_the_cases_it_changes(store: Store, tenant_factory: Any) -> None:
    t, indexer = await indexed(store, tenant_factory)
    before = await case_ids(store, t)
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    report = await indexer.run_once(t)
    after = await case_ids(store, t)
    assert report.rerendered == 4 and report.errors == 0
    for eid in ("E-1", "E-2", "E-3", "E-4"):  # the settlement fails: new rows, in the new words
        assert after[eid] > before[eid]
        case = await store.get_case(t, eid)
        assert case is not None and NEW_WORDS in case.body
    assert (after["E-5"], after["E-6"]) == (before["E-5"], before["E-6"])  # cash breaks read the same
    domain = (await indexer.packs(t)).domain
    assert await renderings(store, t) == {c.exception_id: type_rendering(domain, c.exception_type)
                                          for c in await store.cases_after(t, 0)}
    assert (await indexer.run_once(t)).rerendered == 0  # checked against this version: nothing more to do
    # the resident index holds the new rows in place of the old ones
    idx = await indexer.memory.index(t)
    assert len(idx) == 6 and idx.case("E-1") is not None and NEW_WORDS in idx.case("E-1").body  # type: ignore[union-attr]
    assert (await indexer.memory.similar(t, "E-1", k=3)).hits[0].exception_id == "E-2"


async def test_cases_that_read_the_same_are_stamped_not_replaced(store: Store, tenant_factory: Any) -> None:
    """Rows from before the digest existed (migration 0010) are checked once; a case whose text, key fields
    and domain come out the same keeps its row (and so its id, its resident entry and its vectors)."""
    t, indexer = await indexed(store, tenant_factory)
    before = await case_ids(store, t)
    async with store.engine.begin() as conn:
        await conn.execute(update(memory_cases).where(memory_cases.c.tenant_id == t).values(rendering=None))
        await conn.execute(update(memory_tenants).where(memory_tenants.c.tenant_id == t).values(rendered_with=None))
    report = await indexer.run_once(t)
    assert report.rerendered == 0 and await case_ids(store, t) == before
    assert None not in (await renderings(store, t)).values()
    state = await store.memory_state(t)
    assert state is not None and state.rendered_with == pack_rendering((await indexer.packs(t)).domain)


async def test_re_rendering_is_bounded_per_pass_and_goes_on_where_it_stopped(
        store: Store, tenant_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    t, indexer = await indexed(store, tenant_factory)
    before = await case_ids(store, t)
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    read_after = renderings_read(store, monkeypatch)
    first = await indexer.rerender(t, limit=3)
    assert first.rerendered == 3 and read_after == [0]
    second = await indexer.rerender(t, limit=3)  # goes on after the last case it checked, not from the start
    assert second.rerendered == 1 and read_after[1] == before["E-3"]
    assert (await indexer.rerender(t, limit=3)).rerendered == 0
    state = await store.memory_state(t)
    assert state is not None and state.rendered_with == pack_rendering((await indexer.packs(t)).domain)
    # a later pack change starts over, against the pack active then
    await activate(store, t, finance("1.2.0", SETTLEMENT_FAIL={"description": "Settlement failed again"},
                                     CASH_BREAK={"description": "Cash differs between ledger and bank"}))
    assert (await indexer.rerender(t, limit=5)).rerendered == 5
    assert (await indexer.rerender(t, limit=5)).rerendered == 1


async def test_a_pass_reads_a_bounded_number_of_case_rows(store: Store, tenant_factory: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to one type of a large tenant does not read every other case in one pass: each pass reads
    about `scan` rows and the next goes on from there, until the walk reaches the end."""
    t, indexer = await indexed(store, tenant_factory)
    monkeypatch.setattr(indexer_module, "SCAN_PAGE", 2)
    await activate(store, t, finance("1.1.0", CASH_BREAK={"description": NEW_WORDS}))  # E-5 and E-6, last
    target = pack_rendering((await indexer.packs(t)).domain)
    passes = []
    for _ in range(5):
        state = await store.memory_state(t)
        assert state is not None and state.rendered_with != target  # still under way
        passes.append((await indexer.rerender(t, scan=2)).rerendered)
    # E-1/E-2, E-3/E-4, E-5/E-6 (re-rendered, new rows), those new rows (the same now), the end
    assert passes == [0, 0, 2, 0, 0]
    state = await store.memory_state(t)
    assert state is not None and state.rendered_with == target


async def test_going_back_to_the_previous_pack_mid_walk_renders_back_what_the_walk_rendered(
        store: Store, tenant_factory: Any) -> None:
    """A walk stopped partway for a new pack, then a pack that renders as the old one did: the cases the walk
    re-rendered go back to the old text (no pack had every case rendered its way any more)."""
    t, indexer = await indexed(store, tenant_factory)
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    assert (await indexer.rerender(t, limit=3)).rerendered == 3
    await activate(store, t, finance("1.0.1"))  # renders as 1.0.0 did
    assert (await memory_status(store, t)).rerender_pending
    assert (await indexer.run_once(t)).rerendered == 3
    assert not (await memory_status(store, t)).rerender_pending
    assert not any(NEW_WORDS in c.body for c in await store.cases_after(t, 0))
    state = await store.memory_state(t)
    assert state is not None and (state.rerender_for, state.rerender_after) == (None, 0)


async def test_another_tenants_pack_change_leaves_these_cases_alone(store: Store, tenant_factory: Any) -> None:
    mine, indexer = await indexed(store, tenant_factory)
    theirs, _ = await indexed(store, tenant_factory)
    mine_before, theirs_before = await case_ids(store, mine), await case_ids(store, theirs)
    theirs_renderings = await renderings(store, theirs)
    await activate(store, mine, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    assert (await indexer.run_once(theirs)).rerendered == 0
    assert (await indexer.run_once(mine)).rerendered == 4
    assert await case_ids(store, theirs) == theirs_before and await renderings(store, theirs) == theirs_renderings
    assert (await case_ids(store, mine)).keys() == mine_before.keys()
    assert all(NEW_WORDS not in c.body for c in await store.cases_after(theirs, 0))


async def test_without_an_active_domain_pack_nothing_is_re_rendered(store: Store) -> None:
    await store.create_tenant("bare", "bare")
    indexer = MemoryIndexer(store, Memory(store))
    assert (await indexer.rerender("bare")).rerendered == 0
    assert await store.memory_state("bare") is None


async def test_a_batch_decided_under_the_old_pack_and_written_after_the_walk_is_re_rendered(
        store: Store, tenant_factory: Any) -> None:
    """A pipeline batch reads the active packs once, at its start: one that began before a new version was
    activated writes cases rendered with the old one, possibly after the indexer checked every case against
    the new one. The audit chain names them to the indexer, which renders them again."""
    t = await tenant_factory()
    indexer = MemoryIndexer(store, Memory(store))
    await process(store, t, [sf("E-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short at DTC", "ST-1")],
                  memory=indexer.memory)
    await indexer.run_once(t)
    orch = Orchestrator(store, memory=indexer.memory)
    old = await orch.active_packs(t)  # the packs of a batch in flight, read before the activation
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    assert (await indexer.run_once(t)).rerendered == 1  # E-1: every case checked against 1.1.0

    async def old_packs(tenant_id: str) -> Any:
        return old

    orch.active_packs = old_packs  # type: ignore[method-assign]
    sub = sf("E-2", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short again", "ST-2")
    await orch.process(t, [Submission(sub, datetime(2025, 3, 14, 9, 5, tzinfo=UTC), 0)])
    assert NEW_WORDS not in (await store.get_case(t, "E-2")).body  # type: ignore[union-attr]
    await indexer.run_once(t)
    case = await store.get_case(t, "E-2")
    assert case is not None and NEW_WORDS in case.body


async def test_a_slower_re_rendering_does_not_undo_a_newer_change(store: Store, tenant_factory: Any) -> None:
    """Two indexers of one tenant (on SQLite passes are not excluded): the re-rendering one read the exception
    open, the other indexed it closed meanwhile. The older rendering, written last, is dropped: its row was
    replaced since it was read."""
    t = await tenant_factory()
    fast = MemoryIndexer(store, Memory(store))
    await process(store, t, [sf("R-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-R1")],
                  memory=fast.memory)
    await fast.run_once(t)
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    held = Held(store, "exceptions_by_ids", after=True)
    slow = asyncio.create_task(MemoryIndexer(held, Memory(store)).rerender(t))  # type: ignore[arg-type]
    await asyncio.wait_for(held.waiting.wait(), 30)
    await close(store, t, "R-1")
    await fast.catch_up(t)
    assert (await store.get_case(t, "R-1")).status == "CLOSED"  # type: ignore[union-attr]
    held.go.set()
    assert (await slow).rerendered == 0  # its rendering of the open exception is not written
    case = await store.get_case(t, "R-1")
    assert case is not None and case.status == "CLOSED" and case.resolution is not None


async def test_a_process_loading_the_tenant_later_triages_through_the_same_window(store: Store,
                                                                                  tenant_factory: Any) -> None:
    """After status changes and a re-rendering (rows replaced, new ids), the process that followed them and
    one that loads the tenant afterwards look through the same latest cases."""
    t = await tenant_factory()
    mem = Memory(store, triage_window=3)
    indexer = MemoryIndexer(store, mem)
    await process(store, t, SMALL, memory=mem)
    await indexer.run_once(t)
    await mem.index(t)


    async def escalate(*eids: str) -> None:
        now = datetime.now(UTC)
        for eid in eids:
            await store.append_events(t, eid, [EventRow(eid, "human.escalate", now, None, {"action": "escalate"})],
                                      [AuditRow("dana", "exception.escalate", eid, now, {})],
                                      fields={"status": "ESCALATED"})
        await indexer.run_once(t)
        await mem.index(t)

    await escalate("E-1", "E-2", "E-3")
    await activate(store, t, finance("1.1.0", CASH_BREAK={"description": NEW_WORDS}))
    assert (await indexer.run_once(t)).rerendered == 2  # E-5, E-6
    await mem.index(t)
    await escalate("E-6")  # its old slot is now among the last three
    resident = await mem.index(t)
    loaded = await Memory(store, triage_window=3).index(t)
    assert resident.slots > loaded.slots == 6
    queries = [resident.query_for(c).replace(exception_id=None)  # type: ignore[arg-type]
               for c in (resident.case(e) for e in ("E-1", "E-5"))]
    assert [[c.exception_id for c in hits] for hits in resident.similar_many(queries, 5, 3)] == \
        [[c.exception_id for c in hits] for hits in loaded.similar_many(queries, 5, 3)]
    assert latest(resident, 3) == latest(loaded, 3) == ["E-2", "E-3", "E-6"]


def latest(idx: TenantIndex, window: int) -> list[str]:
    """The exception ids in `idx`'s triage window of `window` cases, earliest place first."""
    start, live = idx._window(window)
    return [e for _, e in sorted((int(idx._recent[s]), idx._eids[s])
                                 for s in np.flatnonzero(live[:idx.slots]).tolist() if s >= start)]


async def test_re_rendered_cases_keep_their_place_in_triages_window(store: Store, tenant_factory: Any) -> None:
    """A re-rendered case gets a new row, but keeps its old row's place in the recency order: after a pack
    change, triage's window holds the same latest cases as before, in the process that followed the change
    and in one that loads the tenant afterwards, and a case changed after that moves to the front as any."""
    t = await tenant_factory()
    mem = Memory(store, triage_window=3)
    indexer = MemoryIndexer(store, mem)
    await process(store, t, SMALL, memory=mem)
    await indexer.run_once(t)
    before = latest(await mem.index(t), 3)
    assert before == ["E-4", "E-5", "E-6"]
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    assert (await indexer.run_once(t)).rerendered == 4  # E-1 to E-4: now in the last slots
    resident = await mem.index(t)
    loaded = await Memory(store, triage_window=3).index(t)
    assert resident.slots == 10 and loaded.slots == 6
    assert latest(resident, 3) == latest(loaded, 3) == before
    cases = {c.exception_id: c for c in await store.cases_after(t, 0)}
    assert [e for e, c in cases.items() if c.recency is not None and c.recency < c.id] == ["E-1", "E-2", "E-3", "E-4"]
    queries = [resident.query_for(cases[e]).replace(exception_id=None) for e in ("E-1", "E-5")]
    assert [[c.exception_id for c in hits] for hits in resident.similar_many(queries, 5, 3)] == \
        [[c.exception_id for c in hits] for hits in loaded.similar_many(queries, 5, 3)]
    assert {c.exception_id for hits in resident.similar_many(queries, 5, 3) for c in hits} <= set(before)
    # a status change is a change like any: its case moves to the front
    now = datetime.now(UTC)
    await store.append_events(t, "E-1", [EventRow("E-1", "human.escalate", now, None, {"action": "escalate"})],
                              [AuditRow("dana", "exception.escalate", "E-1", now, {})], fields={"status": "ESCALATED"})
    await indexer.run_once(t)
    again = await store.get_case(t, "E-1")
    assert again is not None and again.recency is None and again.recent == again.id
    assert latest(await mem.index(t), 3) == latest(await Memory(store, triage_window=3).index(t), 3) \
        == ["E-5", "E-6", "E-1"]
