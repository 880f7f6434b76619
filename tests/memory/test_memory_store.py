"""The memory over a real store, on SQLite and PostgreSQL: indexing in the exception's transaction, triage
evidence, tenant isolation at every layer, filters, recurrence, and the indexer's catch-up after a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest
from memkit import SMALL, process, sf

from breakdesk.memory import Filters, Memory, NotIndexed
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store


def evidence(events: list[dict[str, Any]], kind: str) -> list[str]:
    out = []
    for e in events:
        if e["stage"] == "triage":
            out.extend(x["message"] for x in e["decision"]["evidence"] if x["kind"] == kind)
    return out


def similar(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The similar cases triage cited (`data.cases` of its one `similar-cases` item), best first."""
    items = [x for e in events if e["stage"] == "triage" for x in e["decision"]["evidence"]
             if x["kind"] == "similar-cases"]
    assert len(items) <= 1
    return items[0]["data"]["cases"] if items else []


async def test_cases_are_indexed_with_their_exceptions_and_shown_in_triage(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory()
    first = await process(store, t, SMALL)
    assert first.processed == 6
    assert await store.count_cases(t) == 6  # written in the same transaction as the exceptions
    assert similar(await store.get_events(t, "E-1")) == []  # empty index: quietly nothing
    await process(store, t, [sf("E-7", "Jefferies LLC", "INSUFFICIENT_SECURITIES",
                                "Jefferies short of securities at the depository", "ST-7")])
    shown = similar(await store.get_events(t, "E-7"))
    assert shown and shown[0]["exceptionId"] in {"E-1", "E-2"} and 0 < shown[0]["score"] <= 1
    (said,) = evidence(await store.get_events(t, "E-7"), "similar-cases")  # in words, best first
    assert said.startswith(f"similar to {shown[0]['exceptionId']} (") and said.count("E-") == len(shown)
    case = await store.get_case(t, "E-7")
    assert case is not None and case.entities["settleId"] == "ST-7" and "jefferies" in case.body.lower()


async def test_tenants_never_see_each_others_cases(store: Store, tenant_factory: Any) -> None:
    a, b = await tenant_factory(), await tenant_factory()
    await process(store, a, SMALL)
    await process(store, b, [sf("B-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES",
                                "Counterparty short of securities at DTC", "ST-1")])
    # store layer
    assert {c.exception_id for c in await store.cases_after(b, 0)} == {"B-1"}
    assert await store.get_case(b, "E-1") is None
    # resident index layer
    mem = Memory(store)
    idx_b = await mem.index(b)
    assert len(idx_b) == 1 and "E-1" not in idx_b
    # query layer: B's exception only finds B's cases (none besides itself), A's never leaks
    res = await mem.similar(b, "B-1", k=10)
    assert res.hits == []
    res_a = await mem.similar(a, "E-1", k=10)
    assert res_a.hits and all(h.exception_id.startswith("E-") for h in res_a.hits)
    with pytest.raises(NotIndexed):
        await mem.similar(b, "E-1")
    # pipeline layer: B's triage never cites A's cases
    await process(store, b, [sf("B-2", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short of securities", "ST-9")])
    assert all(not c["exceptionId"].startswith("E-") for c in similar(await store.get_events(b, "B-2")))


async def test_filters_through_the_service(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory()
    await process(store, t, SMALL)
    mem = Memory(store)
    all_hits = (await mem.similar(t, "E-1", k=10)).hits
    assert {h.exception_type for h in all_hits} >= {"SETTLEMENT_FAIL"}
    only_cash = (await mem.similar(t, "E-5", k=10, filters=Filters(types=("CASH_BREAK",)))).hits
    assert [h.exception_id for h in only_cash] == ["E-6"]
    assert (await mem.similar(t, "E-1", k=10, filters=Filters(resolved_only=True))).hits == []


@pytest.mark.parametrize("similar_cases", [None, 0])
async def test_an_id_that_is_not_plain_is_quoted_in_triage_text(store: Store, tenant_factory: Any,
                                                               similar_cases: int | None) -> None:
    """Intake accepts any id: the recurrence and similar-case texts show one holding their separators or a
    line break as a JSON string (with and without similar cases: the last resolution is found either way)."""
    t = await tenant_factory(None if similar_cases is None else {"similarCases": similar_cases})
    mem = Memory(store)
    odd = "R-1; R-9 (0.99)\nresolved"
    for eid in (odd, "R-2"):
        await process(store, t, [sf(eid, "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-Q")],
                      memory=mem)
        if eid == odd:  # resolved and indexed before the second one arrives
            await store.update_exception(t, odd, status="RESOLVED")
            await MemoryIndexer(store, mem).catch_up(t)
    events = await store.get_events(t, "R-2")
    (msg,) = evidence(events, "recurrence")
    assert msg.endswith(f" ({json.dumps(odd)})") and "\n" not in msg, msg
    if similar_cases is None:
        (said,) = evidence(events, "similar-cases")
        assert said.startswith(f"similar to {json.dumps(odd)} (") and "\n" not in said, said
        assert similar(events)[0]["exceptionId"] == odd


async def test_recurrence_threshold_and_last_resolution(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, [sf("R-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-R")], memory=mem)
    fp = (await store.get_exception(t, "R-1"))["fingerprint"]
    info = await mem.recurrence(t, fp, threshold=3)
    assert info["count"] == 1 and not info["recurring"] and info["lastResolution"] is None
    # the person resolves it; the indexer records the resolution
    await store.update_exception(t, "R-1", status="RESOLVED")
    report = await MemoryIndexer(store, mem).catch_up(t)
    assert report.resolved == 1
    info = await mem.recurrence(t, fp, threshold=3)
    assert info["lastResolution"]["exceptionId"] == "R-1" and info["lastResolution"]["summary"].startswith("resolved")
    # the same problem again (the first one is closed, so this is a new exception): triage names it
    await process(store, t, [sf("R-2", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short again", "ST-R")], memory=mem)
    msgs = evidence(await store.get_events(t, "R-2"), "recurrence")
    assert msgs and "seen before: occurrence 2" in msgs[0] and "last resolution: resolved" in msgs[0] and "R-1" in msgs[0]
    # triage shows how R-1 ended in a few words (its headline), as recurrence and as a similar case
    resolved = await store.get_case(t, "R-1")
    assert resolved is not None and resolved.resolution is not None
    headline = resolved.resolution["headline"]
    assert headline.startswith("resolved") and len(headline) < len(resolved.resolution["summary"])
    assert msgs[0].endswith(f"last resolution: {headline} (R-1)"), msgs[0]
    shown = similar(await store.get_events(t, "R-2"))
    assert {"exceptionId": "R-1", "resolution": headline}.items() <= shown[0].items(), shown
    (said,) = evidence(await store.get_events(t, "R-2"), "similar-cases")
    assert said.startswith("similar to R-1 (") and f"): {headline}" in said, said
    await store.update_exception(t, "R-2", status="RESOLVED")
    await process(store, t, [sf("R-3", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "third time", "ST-R")], memory=mem)
    msgs = evidence(await store.get_events(t, "R-3"), "recurrence")
    assert msgs and msgs[0].startswith("recurring: occurrence 3")  # the pack's threshold is 3
    assert (await mem.recurrence(t, fp, threshold=3))["recurring"]


async def test_indexer_catches_up_after_a_restart(store: Store, tenant_factory: Any, db_url: str) -> None:
    t = await tenant_factory()
    await process(store, t, SMALL[:3], memory=False)  # a process without the memory: nothing indexed
    assert await store.count_cases(t) == 0
    await store.close()
    reopened = await Store.open(db_url)  # "restart"
    try:
        indexer = MemoryIndexer(reopened, Memory(reopened))
        report = await indexer.catch_up(t)
        assert (report.scanned, report.indexed) == (3, 3)
        assert await reopened.count_cases(t) == 3
        assert (await indexer.catch_up(t)).scanned == 0  # the position was saved
        await process(reopened, t, SMALL[3:], memory=False)
        report = await MemoryIndexer(reopened, Memory(reopened)).catch_up(t)
        assert report.indexed == 3 and await reopened.count_cases(t) == 6
        hits = (await Memory(reopened).similar(t, "E-1", k=3)).hits
        assert hits and hits[0].exception_id == "E-2"
    finally:
        await reopened.close()


async def test_a_failing_memory_never_stops_the_pipeline(store: Store, tenant_factory: Any) -> None:
    class Broken:
        async def for_batch(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("index unavailable")

    t = await tenant_factory()
    report = await process(store, t, SMALL[:2], memory=Broken())
    assert report.processed == 2 and await store.count_cases(t) == 0
    assert (await MemoryIndexer(store, Memory(store)).catch_up(t)).indexed == 2  # caught up later


async def test_resident_indexes_are_bounded_least_recently_used_first(store: Store, tenant_factory: Any) -> None:
    a, b, c = await tenant_factory(), await tenant_factory(), await tenant_factory()
    for tenant, items in ((a, SMALL), (b, SMALL[:3]), (c, SMALL[:2])):
        await process(store, tenant, items, memory=False)
        await MemoryIndexer(store, Memory(store)).catch_up(tenant)
    mem = Memory(store, max_resident_cases=8)
    await mem.index(a)
    await mem.index(b)  # 6 + 3 > 8: a, the least recently used, is dropped
    assert mem.resident_cases() == 3
    await mem.index(c)
    assert mem.resident_cases() == 5
    await mem.index(a)  # 6 + 5 > 8: b goes, c (used after b) stays
    assert mem.resident_cases() == 8
    res = await mem.similar(b, "E-1", k=2)  # a dropped index reloads from the store on its next use
    assert res.hits and res.indexed_cases == 3 and mem.resident_cases() <= 8 + 3


async def test_triage_looks_through_the_latest_cases_only(store: Store, tenant_factory: Any) -> None:
    """With a triage window of 3 cases, a new exception's evidence cites only the latest 3, while `similar`
    (API, CLI) still searches every case of the tenant."""
    t = await tenant_factory()
    await process(store, t, SMALL)  # E-1 .. E-6
    mem = Memory(store, triage_window=3)
    await process(store, t, [sf("E-7", "Jefferies LLC", "INSUFFICIENT_SECURITIES",
                                "Jefferies short of securities at the depository", "ST-7")], memory=mem)
    cited = {c["exceptionId"] for c in similar(await store.get_events(t, "E-7"))}
    assert cited and cited <= {"E-4", "E-5", "E-6"}
    res = await mem.similar(t, "E-7", k=3)
    assert {h.exception_id for h in res.hits} & {"E-1", "E-2"}  # the best matches, outside the window


def test_memory_bounds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAKDESK_MEMORY_TRIAGE_WINDOW", "500")
    monkeypatch.setenv("BREAKDESK_MEMORY_MAX_CASES", "9000")
    mem = Memory(object())
    assert (mem.triage_window, mem.max_resident_cases) == (500, 9000)
    monkeypatch.setenv("BREAKDESK_MEMORY_TRIAGE_WINDOW", "0")
    assert Memory(object()).triage_window == 0  # every case
    monkeypatch.delenv("BREAKDESK_MEMORY_TRIAGE_WINDOW")
    assert Memory(object()).triage_window == 20_000
    monkeypatch.setenv("BREAKDESK_MEMORY_TRIAGE_WINDOW", "lots")
    with pytest.raises(ValueError, match="BREAKDESK_MEMORY_TRIAGE_WINDOW must be a whole number"):
        Memory(object())


async def test_no_similar_cases_asked_means_no_resident_index(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory({"similarCases": 0})
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    await process(store, t, [sf("E-7", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short of securities", "ST-7")],
                  memory=mem)
    assert await store.count_cases(t) == 7  # still indexed in the exception's transaction
    assert similar(await store.get_events(t, "E-7")) == []
    assert mem.resident_cases() == 0  # nothing loaded or searched on the hot path


async def test_one_indexer_pass_per_tenant_at_a_time(store: Store, tenant_factory: Any) -> None:
    """Several workers on one PostgreSQL database: while one indexer is in a pass over a tenant, another
    skips it instead of repeating the scan and the embeddings. SQLite (one machine) never skips."""
    t = await tenant_factory()
    await process(store, t, SMALL[:3], memory=False)  # nothing indexed yet
    indexer = MemoryIndexer(store)
    async with store.indexer_lease(t) as mine:  # another worker's pass
        assert mine
        during = await indexer.run_once(t)
        if store.dialect == "postgresql":
            assert during.busy and during.scanned == 0 and await store.count_cases(t) == 0
        else:
            assert not during.busy and await store.count_cases(t) == 3
        u = await tenant_factory()
        async with store.indexer_lease(u) as other_tenant:  # a lease is per tenant
            assert other_tenant
    after = await indexer.run_once(t)
    assert not after.busy and await store.count_cases(t) == 3
    async with store.indexer_lease(t) as again:  # released after each pass
        assert again


async def indexed_tenant(store: Store, tenant_factory: Any) -> tuple[str, MemoryIndexer]:
    """A tenant that processed SMALL with the memory on, and its indexer after one pass."""
    t = await tenant_factory()
    indexer = MemoryIndexer(store, Memory(store))
    await process(store, t, SMALL, memory=indexer.memory)
    await indexer.run_once(t)
    return t, indexer


async def test_the_indexer_sees_a_change_committed_after_a_later_stamped_one(store: Store,
                                                                             tenant_factory: Any) -> None:
    """Writers stamp `updated_at` before they take the tenant's write lock: an execution concludes E-1 with
    the time it read earlier, after a person's later-stamped change to E-2 was committed and indexed. The
    indexer follows the audit chain (commit order), so the resolution still reaches E-1's case."""
    from datetime import UTC, datetime

    t, indexer = await indexed_tenant(store, tenant_factory)
    concluded_at = datetime.now(UTC)  # read by the execution before it commits
    await store.update_exception(t, "E-2", assignee="bob")  # stamped later, committed first
    await indexer.run_once(t)
    await store.update_exception(t, "E-1", status="RESOLVED", resolved_at=concluded_at, updated_at=concluded_at)
    report = await indexer.run_once(t)
    case = await store.get_case(t, "E-1")
    assert report.resolved == 1 and case is not None and case.status == "RESOLVED" and case.resolution


async def test_a_store_error_while_rendering_a_case_is_retried_by_the_next_pass(store: Store,
                                                                                tenant_factory: Any) -> None:
    """A record that cannot be rendered is skipped; the database failing while a case is rendered (its
    events unreadable) ends the pass before its position moves, and the next pass renders the case."""
    from breakdesk.store.errors import StoreError

    t, indexer = await indexed_tenant(store, tenant_factory)
    await store.update_exception(t, "E-1", status="RESOLVED")
    get_events = store.get_events

    async def unavailable(*args: Any, **kw: Any) -> Any:
        raise StoreError("database error (connection lost)")

    store.get_events = unavailable  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreError):
            await indexer.run_once(t)
    finally:
        store.get_events = get_events  # type: ignore[method-assign]
    assert (await store.get_case(t, "E-1")).status != "RESOLVED"  # type: ignore[union-attr]
    report = await indexer.run_once(t)
    assert report.resolved == 1 and (await store.get_case(t, "E-1")).status == "RESOLVED"  # type: ignore[union-attr]


async def test_the_indexer_re_renders_a_severity_override_and_a_comment_after_the_resolution(
        store: Store, tenant_factory: Any) -> None:
    """A case follows its exception beyond status: a severity override (triage filters and shows it) and
    a person's comment on a resolved exception (its resolution summary quotes what people wrote)."""
    from datetime import UTC, datetime

    from breakdesk.store.records import AuditRow, EventRow

    t, indexer = await indexed_tenant(store, tenant_factory)
    await store.update_exception(t, "E-1", severity="CRITICAL")
    await store.update_exception(t, "E-2", status="RESOLVED")
    await indexer.run_once(t)
    assert (await store.get_case(t, "E-1")).severity == "CRITICAL"  # type: ignore[union-attr]
    before = await store.get_case(t, "E-2")
    assert before is not None and before.resolution is not None
    now = datetime.now(UTC)
    said = "the custodian confirmed the SSI fix"
    await store.append_events(t, "E-2", [EventRow("E-2", "human.comment", now, None, {"action": "comment",
                                                                                     "text": said})],
                              [AuditRow("ops@example.com", "exception.comment", "E-2", now, {"text": said})])
    report = await indexer.run_once(t)
    after = await store.get_case(t, "E-2")
    assert report.indexed == 1 and after is not None and after.id > before.id
    assert said in after.resolution["summary"] and said in after.body  # type: ignore[index]


async def test_replaying_the_audit_chain_re_renders_only_what_changed(store: Store, tenant_factory: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """From the start of the chain (a new indexer, or after migration 0008), in pages smaller than the
    chain: up-to-date cases are left alone — a resolved one too, unless its exception changed after (or
    about when) its case was rendered — and none is rendered twice in a pass."""
    from datetime import timedelta

    from breakdesk.memory import indexer as indexer_module

    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    indexer = MemoryIndexer(store, mem)
    for eid in ("E-1", "E-2", "E-3"):
        await store.update_exception(t, eid, status="RESOLVED")
    await indexer.run_once(t)
    monkeypatch.setattr(indexer_module, "SCAN_PAGE", 2)
    rows = {eid: (await store.get_case(t, eid)).id for eid in ("E-1", "E-2", "E-3")}  # type: ignore[union-attr]
    monkeypatch.setattr(indexer_module, "RERENDER_MARGIN", timedelta(0))  # the entries are older than the cases
    await store.save_memory_state(t, scanned_seq=0)
    report = await indexer.catch_up(t)
    assert report.scanned > 0 and report.indexed == 0
    monkeypatch.setattr(indexer_module, "RERENDER_MARGIN", timedelta(minutes=10))  # they are recent: once each
    await store.save_memory_state(t, scanned_seq=0)
    report = await indexer.catch_up(t)
    assert report.indexed == report.resolved == 3
    for eid, before in rows.items():
        assert (await store.get_case(t, eid)).id > before  # type: ignore[union-attr]


async def test_a_comment_committed_during_a_pass_reaches_the_case_rendered_earlier_in_it(
        store: Store, tenant_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass renders a resolved case from an early page; a comment committed while it reads later pages is
    rendered again in the same pass (and only entries the first rendering could not have seen count)."""
    from datetime import UTC, datetime

    from breakdesk.memory import indexer as indexer_module
    from breakdesk.store.records import AuditRow, EventRow

    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    await store.update_exception(t, "E-1", status="RESOLVED")
    monkeypatch.setattr(indexer_module, "SCAN_PAGE", 2)
    changed = store.changed_exceptions
    pages = 0
    said = "the counterparty delivered late, nothing else to do"

    async def meanwhile(*args: Any, **kw: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 3:  # E-1 was rendered from an earlier page
            now = datetime.now(UTC)
            await store.append_events(t, "E-1", [EventRow("E-1", "human.comment", now, None,
                                                          {"action": "comment", "text": said})],
                                      [AuditRow("ops@example.com", "exception.comment", "E-1", now, {"text": said})])
        return await changed(*args, **kw)

    store.changed_exceptions = meanwhile  # type: ignore[method-assign]
    try:
        await MemoryIndexer(store, mem).catch_up(t)
    finally:
        del store.changed_exceptions
    assert pages > 3
    case = await store.get_case(t, "E-1")
    assert case is not None and case.resolution is not None and said in case.resolution["summary"]


async def test_an_indexer_behind_another_does_not_take_the_scan_position_back(store: Store,
                                                                              tenant_factory: Any) -> None:
    """Two indexers of one tenant (a server's worker and `breakdesk memory index`) save where each pass
    ended; the one that read less and saved last leaves the other's position as it was."""
    t = await tenant_factory()
    await process(store, t, SMALL)
    await store.replace_cases(t, [], scanned=9)
    await store.replace_cases(t, [], scanned=4)  # the slower pass, saved last
    state = await store.memory_state(t)
    assert state is not None and state.scanned_seq == 9
    await store.replace_cases(t, [], scanned=12)
    assert (await store.memory_state(t)).scanned_seq == 12  # type: ignore[union-attr]
    await store.save_memory_state(t, scanned_seq=0)  # an explicit reset still sets it
    assert (await store.memory_state(t)).scanned_seq == 0  # type: ignore[union-attr]
