"""The pipeline's batch write: new rows, recurrences, updates, seqs, dedupe lookups, atomicity."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from store_builders import T0, make_write

from breakdesk.audit import canonical_json
from breakdesk.store import Conflict, EventRow, FingerprintStats, IntakeItem, NotFound, Store, StoreError
from breakdesk.store._base import COPY_MIN_ROWS


async def test_new_exceptions_events_and_audit(store: Store, tenant: str) -> None:
    writes = [make_write(tenant, f"EXC-{i}", i) for i in range(3)]
    result = await store.write_batch(tenant, writes)
    assert (result.inserted, result.events, result.audit_entries, result.recurrences) == (3, 18, 18, 0)
    assert result.audit_seq == 19  # 1 tenant.create + 18

    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None
    assert row["status"] == "TRIAGED" and row["recurrence_count"] == 0
    assert row["record"]["exceptionId"] == "EXC-1"
    assert row["received_at"] == T0 + timedelta(minutes=1)
    assert row["received_at"].tzinfo is not None

    events = await store.get_events(tenant, "EXC-1")
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["stage"] for e in events][:2] == ["intake", "triage"]
    assert events[0]["decision"]["confidence"] == 0.9 and events[0]["payload"] == {"i": 0}

    audit = await store.get_audit(tenant, subject="EXC-2")
    assert len(audit) == 6 and all(e.subject == "EXC-2" for e in audit)
    assert (await store.verify_audit(tenant)).ok


async def test_recurrence_appends_to_existing_exception(store: Store, tenant: str) -> None:
    await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0, fingerprint="fp-A")])
    # A later batch: EXC-9 recurs EXC-1, plus an unrelated new exception.
    recur = make_write(tenant, "EXC-9", 5, fingerprint="fp-A", events=2, recurrence_of="EXC-1")
    result = await store.write_batch(tenant, [recur, make_write(tenant, "EXC-2", 6)])
    assert (result.inserted, result.recurrences) == (1, 1)

    assert await store.get_exception(tenant, "EXC-9") is None  # no duplicate opened
    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None and row["recurrence_count"] == 1
    seqs = [e["seq"] for e in await store.get_events(tenant, "EXC-1")]
    assert seqs == list(range(1, 9))  # 6 original + 2 appended, no gap, no reuse

    # Two more recurrences in one batch keep counting and numbering.
    more = [
        make_write(tenant, f"EXC-1{i}", 7 + i, fingerprint="fp-A", events=1, recurrence_of="EXC-1")
        for i in range(2)
    ]
    await store.write_batch(tenant, more)
    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None and row["recurrence_count"] == 3
    assert [e["seq"] for e in await store.get_events(tenant, "EXC-1")] == list(range(1, 11))

    # The recurrence's idempotency key now dedupes to the exception it was folded into.
    keys = await store.find_by_idempotency_keys(tenant, ["key-EXC-9", "key-EXC-1", "key-EXC-10", "nope"])
    assert keys == {"key-EXC-9": "EXC-1", "key-EXC-1": "EXC-1", "key-EXC-10": "EXC-1"}
    assert (await store.verify_audit(tenant)).ok


async def test_new_and_recurrence_in_the_same_batch(store: Store, tenant: str) -> None:
    first = make_write(tenant, "EXC-1", 0, fingerprint="fp-B", events=3)
    again = make_write(tenant, "EXC-2", 1, fingerprint="fp-B", events=2, recurrence_of="EXC-1")
    await store.write_batch(tenant, [first, again])
    assert [e["seq"] for e in await store.get_events(tenant, "EXC-1")] == [1, 2, 3, 4, 5]
    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None and row["recurrence_count"] == 1


async def test_update_write_replaces_projection_and_appends(store: Store, tenant: str) -> None:
    await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0)])
    upd = make_write(tenant, "EXC-1", 0, events=1, is_new=False, status="RESOLVED", playbook_id="pb-1")
    result = await store.write_batch(tenant, [upd])
    assert result.updated == 1
    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None and (row["status"], row["playbook_id"]) == ("RESOLVED", "pb-1")
    assert [e["seq"] for e in await store.get_events(tenant, "EXC-1")] == list(range(1, 8))


async def test_recurrence_of_unknown_exception_is_not_found(store: Store, tenant: str) -> None:
    with pytest.raises(NotFound, match="GHOST"):
        await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0, recurrence_of="GHOST")])


async def test_unknown_tenant_is_not_found(store: Store, new_tenant_id: Callable[[], str]) -> None:
    ghost = new_tenant_id()
    with pytest.raises(NotFound, match="does not exist"):
        await store.write_batch(ghost, [make_write(ghost, "EXC-1")])


async def test_invalid_batches_are_rejected_before_writing(store: Store, tenant: str) -> None:
    with pytest.raises(StoreError, match="belongs to tenant"):
        await store.write_batch(tenant, [make_write("someone-else", "EXC-1")])
    with pytest.raises(Conflict, match="appears twice"):
        await store.write_batch(
            tenant, [make_write(tenant, "EXC-1"), make_write(tenant, "EXC-1", idempotency_key="k2")]
        )
    with pytest.raises(Conflict, match="idempotency key 'same' appears twice"):
        await store.write_batch(
            tenant,
            [
                make_write(tenant, "EXC-1", idempotency_key="same"),
                make_write(tenant, "EXC-2", idempotency_key="same"),
            ],
        )
    bad = make_write(tenant, "EXC-1")
    bad.events.append(EventRow("EXC-OTHER", "triage", T0))
    with pytest.raises(StoreError, match="does not belong"):
        await store.write_batch(tenant, [bad])
    assert (await store.list_exceptions(tenant))[0] == []


async def test_batch_is_all_or_nothing(store: Store, tenant: str) -> None:
    await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0)])
    head_before = await store.audit_head(tenant)
    # EXC-2 and EXC-3 are fine, but EXC-1 already exists: nothing of this batch may remain.
    batch = [
        make_write(tenant, "EXC-2", 1),
        make_write(tenant, "EXC-1", 2, idempotency_key="fresh"),
        make_write(tenant, "EXC-3", 3),
    ]
    with pytest.raises(Conflict, match="exception 'EXC-1' already exists"):
        await store.write_batch(tenant, batch)
    assert await store.get_exception(tenant, "EXC-2") is None
    assert await store.get_exception(tenant, "EXC-3") is None
    assert await store.get_events(tenant, "EXC-2") == []
    assert await store.find_by_idempotency_keys(tenant, ["key-EXC-2", "fresh"]) == {}
    assert await store.fingerprint_stats(tenant, ["fp-EXC-2"]) == {}
    assert await store.audit_head(tenant) == head_before
    assert (await store.verify_audit(tenant)).ok

    # An idempotency key already used is named too.
    with pytest.raises(Conflict, match="idempotency key 'key-EXC-1' already belongs to exception 'EXC-1'"):
        await store.write_batch(tenant, [make_write(tenant, "EXC-4", 4, idempotency_key="key-EXC-1")])
    assert await store.get_exception(tenant, "EXC-4") is None


async def test_idempotency_lookup(store: Store, tenant: str) -> None:
    await store.write_batch(tenant, [make_write(tenant, f"EXC-{i}", i) for i in range(3)])
    await store.write_batch(tenant, [make_write(tenant, "EXC-X", 9, idempotency_key=None)])
    found = await store.find_by_idempotency_keys(tenant, ["key-EXC-0", "key-EXC-2", "unknown"])
    assert found == {"key-EXC-0": "EXC-0", "key-EXC-2": "EXC-2"}
    assert await store.find_by_idempotency_keys(tenant, []) == {}
    many = [f"key-EXC-{i}" for i in range(1200)]  # more than one IN chunk
    assert len(await store.find_by_idempotency_keys(tenant, many)) == 3


async def test_fingerprint_stats_and_open_lookup(store: Store, tenant: str) -> None:
    w1 = make_write(tenant, "EXC-1", 0, fingerprint="fp-1")
    w2 = make_write(tenant, "EXC-2", 1, fingerprint="fp-2", status="RESOLVED")
    await store.write_batch(tenant, [w1, w2])
    await store.write_batch(
        tenant, [make_write(tenant, "EXC-3", 30, fingerprint="fp-1", recurrence_of="EXC-1")]
    )

    stats = await store.fingerprint_stats(tenant, ["fp-1", "fp-2", "fp-none"])
    assert set(stats) == {"fp-1", "fp-2"}
    count, first, last, last_id = stats["fp-1"]
    assert (count, first, last, last_id) == (2, T0, T0 + timedelta(minutes=30), "EXC-1")
    assert stats["fp-2"].occurrences == 1

    open_by_fp = await store.find_open_by_fingerprints(tenant, ["fp-1", "fp-2", "fp-none"])
    assert open_by_fp == {"fp-1": "EXC-1"}  # EXC-2 is RESOLVED: not open

    # Closing EXC-1 by a human makes fp-1 free for a new exception.
    await store.update_exception(tenant, "EXC-1", status="CLOSED", assignee="dana")
    assert await store.find_open_by_fingerprints(tenant, ["fp-1"]) == {}
    await store.write_batch(tenant, [make_write(tenant, "EXC-4", 40, fingerprint="fp-1")])
    assert await store.find_open_by_fingerprints(tenant, ["fp-1"]) == {"fp-1": "EXC-4"}
    assert (await store.fingerprint_stats(tenant, ["fp-1"]))["fp-1"].occurrences == 3


async def test_fingerprint_last_exception_is_the_latest_seen(store: Store, tenant: str) -> None:
    async def last(fp: str) -> FingerprintStats:
        return (await store.fingerprint_stats(tenant, [fp]))[fp]

    def at(n: int) -> datetime:
        return T0 + timedelta(minutes=n)

    # A backfilled occurrence older than the stored last_seen, in a later batch: counted, not the latest.
    await store.write_batch(tenant, [make_write(tenant, "EXC-NEW", 10, fingerprint="fp-late")])
    await store.write_batch(tenant, [make_write(tenant, "EXC-OLD", 0, fingerprint="fp-late", status="RESOLVED")])
    assert await last("fp-late") == (2, at(0), at(10), "EXC-NEW")
    # Updating the older exception later does not make it the latest either.
    await store.write_batch(
        tenant, [make_write(tenant, "EXC-OLD", 0, fingerprint="fp-late", is_new=False, status="CLOSED", events=0)]
    )
    assert await last("fp-late") == (2, at(0), at(10), "EXC-NEW")
    # A newer occurrence still takes over, and an equal last_seen goes to the later write.
    await store.write_batch(tenant, [make_write(tenant, "EXC-NEWER", 20, fingerprint="fp-late", status="RESOLVED")])
    assert await last("fp-late") == (3, at(0), at(20), "EXC-NEWER")
    await store.write_batch(tenant, [make_write(tenant, "EXC-TIE", 20, fingerprint="fp-late", status="RESOLVED")])
    assert await last("fp-late") == (4, at(0), at(20), "EXC-TIE")

    # Two occurrences in one batch out of time order: the latest seen wins, not the last written.
    batch = [
        make_write(tenant, "EXC-B", 15, fingerprint="fp-mixed", status="RESOLVED"),
        make_write(tenant, "EXC-A", 5, fingerprint="fp-mixed", status="RESOLVED"),
    ]
    await store.write_batch(tenant, batch)
    assert await last("fp-mixed") == (2, at(5), at(15), "EXC-B")
    # Same in a batch merging into an existing row, with a tie inside the batch (the later write wins).
    batch = [
        make_write(tenant, "EXC-D", 30, fingerprint="fp-mixed", status="RESOLVED"),
        make_write(tenant, "EXC-E", 30, fingerprint="fp-mixed", status="RESOLVED"),
        make_write(tenant, "EXC-C", 1, fingerprint="fp-mixed", status="RESOLVED"),
    ]
    await store.write_batch(tenant, batch)
    assert await last("fp-mixed") == (5, at(1), at(30), "EXC-E")


async def test_fingerprint_open_pointer_follows_status(store: Store, tenant: str) -> None:
    from sqlalchemy import select

    from breakdesk.store.tables import fingerprints

    async def open_pointer(fp: str) -> str | None:
        async with store.engine.connect() as conn:
            stmt = select(fingerprints.c.open_exception_id).where(
                fingerprints.c.tenant_id == tenant, fingerprints.c.fingerprint == fp
            )
            return (await conn.execute(stmt)).scalar_one()

    await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0, fingerprint="fp")])
    assert await open_pointer("fp") == "EXC-1"
    await store.write_batch(
        tenant, [make_write(tenant, "EXC-1", 0, fingerprint="fp", is_new=False, status="RESOLVED")]
    )
    assert await open_pointer("fp") is None
    await store.update_exception(tenant, "EXC-1", status="IN_PROGRESS")
    assert await open_pointer("fp") == "EXC-1"
    # Two exceptions of one fingerprint closed in one batch: neither stays marked open.
    await store.write_batch(tenant, [make_write(tenant, "EXC-2", 1, fingerprint="fp", status="TRIAGED")])
    closing = [
        make_write(tenant, "EXC-1", 0, fingerprint="fp", is_new=False, status="CLOSED", events=0),
        make_write(tenant, "EXC-2", 1, fingerprint="fp", is_new=False, status="CLOSED", events=0),
    ]
    await store.write_batch(tenant, closing)
    assert await open_pointer("fp") is None
    # Closed out of time order (the latest seen, EXC-2, written first): still cleared.
    await store.update_exception(tenant, "EXC-2", status="IN_PROGRESS")
    assert await open_pointer("fp") == "EXC-2"
    await store.write_batch(tenant, closing[::-1])
    assert await open_pointer("fp") is None


async def test_human_actions_update_and_append(store: Store, tenant: str) -> None:
    from breakdesk.store import AuditRow

    await store.write_batch(tenant, [make_write(tenant, "EXC-1", 0)])
    updated = await store.update_exception(tenant, "EXC-1", assignee="erin")
    assert updated["assignee"] == "erin" and updated["updated_at"] > T0
    with pytest.raises(StoreError, match="cannot update"):
        await store.update_exception(tenant, "EXC-1", tenant_id="other")
    with pytest.raises(NotFound):
        await store.update_exception(tenant, "GHOST", assignee="x")

    seqs = await store.append_events(
        tenant,
        "EXC-1",
        [EventRow("EXC-1", "human", T0, None, {"action": "approve"})],
        [AuditRow("erin", "exception.approve", "EXC-1", T0, {"note": "ok"})],
        fields={"status": "IN_PROGRESS"},
    )
    assert seqs == [7]
    row = await store.get_exception(tenant, "EXC-1")
    assert row is not None and row["status"] == "IN_PROGRESS"
    last_event = (await store.get_events(tenant, "EXC-1"))[-1]
    assert (last_event["seq"], last_event["stage"], last_event["decision"]) == (7, "human", None)
    assert (await store.get_audit(tenant, subject="EXC-1", limit=100))[-1].actor == "erin"
    with pytest.raises(NotFound):
        await store.append_events(tenant, "GHOST", [EventRow("GHOST", "human", T0)])
    with pytest.raises(StoreError, match="needs an audit entry"):  # a status change outside the chain
        await store.append_events(tenant, "EXC-1", [EventRow("EXC-1", "human", T0)], fields={"status": "CLOSED"})
    assert (await store.get_exception(tenant, "EXC-1"))["status"] == "IN_PROGRESS"  # type: ignore[index]
    assert (await store.verify_audit(tenant)).ok


async def test_write_batch_completes_queue_items_atomically(store: Store, tenant: str) -> None:
    [item] = await store.enqueue(tenant, [IntakeItem({"exceptionId": "EXC-1"}, "key-EXC-1")])
    [claimed] = await store.claim(10, tenant_id=tenant)
    assert claimed.id == item.id
    await store.write_batch(tenant, [make_write(tenant, "EXC-1")], complete_queue_ids=[item.id])
    done = await store.get_queue_item(tenant, item.id)
    assert done is not None and done.state == "DONE"


async def test_large_batch_is_all_or_nothing_too(store: Store, tenant: str) -> None:
    """Batches past COPY_MIN_ROWS go through PostgreSQL's COPY: a collision there is the same Conflict,
    named the same way, and leaves nothing of the batch behind."""
    assert COPY_MIN_ROWS <= 40
    await store.write_batch(tenant, [make_write(tenant, f"EXC-{i}", i) for i in range(40)])
    head_before = await store.audit_head(tenant)
    batch = [make_write(tenant, f"NEW-{i}", i) for i in range(39)]
    batch.append(make_write(tenant, "EXC-7", 7, idempotency_key="fresh"))
    with pytest.raises(Conflict, match="exception 'EXC-7' already exists"):
        await store.write_batch(tenant, batch)
    assert await store.get_exception(tenant, "NEW-0") is None
    assert await store.get_events(tenant, "NEW-38") == []
    assert await store.audit_head(tenant) == head_before
    assert (await store.verify_audit(tenant)).ok
    # and the store is usable afterwards on the same pool
    result = await store.write_batch(tenant, batch[:-1])
    assert (result.inserted, result.events) == (39, 39 * 6)
    assert (await store.verify_audit(tenant)).ok


async def test_pre_encoded_events_are_stored_as_given(store: Store, tenant: str) -> None:
    """An event may carry its canonical JSON (the pipeline encodes it once, for its digest too)."""
    write = make_write(tenant, "EXC-1", events=2)
    for ev in write.events:
        ev.encoded = (canonical_json(ev.decision).decode(), canonical_json(ev.payload).decode())
    write.events.append(EventRow("EXC-1", "note", T0, None, {"ä": [1, 2.5, None]}, (None, '{"ä":[1,2.5,null]}')))
    await store.write_batch(tenant, [write])
    events = await store.get_events(tenant, "EXC-1")
    assert [(e["decision"], e["payload"]) for e in events] == [(ev.decision, ev.payload) for ev in write.events]


async def test_batch_lookup_answers_like_the_single_lookups(
    store: Store, tenant: str, new_tenant_id: Callable[[], str]
) -> None:
    await store.write_batch(tenant, [
        make_write(tenant, "EXC-1", 0, fingerprint="fp-1"),
        make_write(tenant, "EXC-2", 1, fingerprint="fp-2", status="RESOLVED"),
    ])
    keys, ids, fps = ["key-EXC-1", "key-EXC-2", "nope"], ["EXC-1", "EXC-9"], ["fp-1", "fp-2", "fp-x"]
    found = await store.batch_lookup(tenant, keys, ids, iter(fps))  # any iterable, read once
    assert found.known_keys == await store.find_by_idempotency_keys(tenant, keys)
    assert found.taken_ids == await store.existing_exception_ids(tenant, ids) == {"EXC-1"}
    assert found.open_by_fingerprint == await store.find_open_by_fingerprints(tenant, fps) == {"fp-1": "EXC-1"}
    assert found.fingerprint_stats == await store.fingerprint_stats(tenant, fps)
    assert set(found.fingerprint_stats) == {"fp-1", "fp-2"}
    other = new_tenant_id()
    await store.create_tenant(other, "Other")
    empty = await store.batch_lookup(other, keys, ids, fps)
    assert (empty.known_keys, empty.taken_ids, empty.open_by_fingerprint, empty.fingerprint_stats) == ({}, set(), {}, {})
