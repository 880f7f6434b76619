"""A resolution summary keeps what the person who closed the exception said."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from memkit import process, sf

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.memory.resolution import resolution_of
from breakdesk.store import Store
from breakdesk.store.records import AuditRow, EventRow


def test_the_closing_resolution_survives_earlier_comments_and_machine_reasons() -> None:
    """More than five earlier notes (people's comments, steps' reasons) must not push what the person who
    closed the exception wrote out of its summary."""
    events: list[dict[str, Any]] = [
        {"stage": "execution.step", "payload": {"stepId": f"s{i}", "status": "SKIPPED",
                                                "reason": f"when 'x > {i}': condition is false"}}
        for i in range(4)
    ]
    events.append({"stage": "execution", "payload": {"status": "ESCALATED", "reason": "a step needs a person"}})
    events += [{"stage": "human.comment", "payload": {"action": "comment", "text": f"looked at it ({i})"}}
               for i in range(3)]
    events.append({"stage": "human.close", "payload": {"action": "close", "previousStatus": "ESCALATED",
                                                       "reason": "", "resolution": "rebooked the trade with DTC"}})
    res = resolution_of({"status": "CLOSED", "playbook_id": "PB"}, events)
    assert "rebooked the trade with DTC" in res["comments"], res["comments"]
    assert "rebooked the trade with DTC" in res["summary"], res["summary"]
    assert len(res["comments"]) == 5
    # people's words come before machine reasons, and the kept comments stay in the order they were written
    assert res["comments"] == ["a step needs a person", "looked at it (0)", "looked at it (1)", "looked at it (2)",
                               "rebooked the trade with DTC"]


async def test_a_case_closed_after_a_discussion_keeps_its_resolution_in_the_memory(store: Store,
                                                                                  tenant_factory: Any) -> None:
    t = await tenant_factory()
    mem = Memory(store)
    await process(store, t, [sf("D-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-D")], memory=mem)

    async def act(stage: str, payload: dict[str, Any], fields: dict[str, Any] | None = None) -> None:
        now = datetime.now(UTC)
        await store.append_events(t, "D-1", [EventRow("D-1", stage, now, None, payload)],
                                  [AuditRow("dana", f"exception.{payload['action']}", "D-1", now, {})], fields=fields)

    for i in range(5):
        await act("human.comment", {"action": "comment", "text": f"chased the counterparty, attempt {i}"})
    await act("human.close", {"action": "close", "previousStatus": "ESCALATED", "reason": "",
                              "resolution": "borrowed the securities and redelivered"},
              {"status": "CLOSED", "resolved_at": datetime.now(UTC)})
    await MemoryIndexer(store, mem).catch_up(t)
    case = await store.get_case(t, "D-1")
    assert case is not None and case.resolution is not None
    assert "borrowed the securities and redelivered" in case.resolution["summary"], case.resolution["summary"]
    # and what the similar-cases API shows of it (a hit's resolution is the summary)
    await process(store, t, [sf("D-2", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-D2")], memory=mem)
    hits = (await mem.similar(t, "D-2", k=3)).hits
    assert hits and hits[0].exception_id == "D-1"
    assert "borrowed the securities and redelivered" in (hits[0].resolution or ""), hits[0].resolution
