"""Batch work shares the event loop with the API: the similar-case searches of a batch run in slices with the
loop free in between (same evidence as one search call), the audit chain of a batch is hashed in slices
(and still verifies), and the collector stays paused while a batch is open. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from memkit import SMALL, T0, process, sf

from breakdesk import heap
from breakdesk.memory import service
from breakdesk.memory.index import TenantIndex
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store
from breakdesk.store import _base as store_base

LATER = [sf(f"L-{i}", ("Jefferies LLC", "Barclays Capital Inc.")[i % 2],
            ("INSUFFICIENT_SECURITIES", "SSI_MISMATCH")[i % 2], f"Settlement {i} failed again", f"SL-{i}")
         for i in range(12)]


def similar_evidence(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(x.get("ref"), x["message"]) for e in events if e["stage"] == "triage"
            for x in e["decision"]["evidence"] if x["kind"] == "similar-cases"]


async def test_sliced_searches_give_the_same_evidence_and_free_the_loop(
    store: Store, tenant_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, sliced = await tenant_factory(), await tenant_factory()
    for t in (whole, sliced):
        await process(store, t, SMALL)
    await process(store, whole, LATER)  # default slices: the whole batch in one call

    calls: list[int] = []
    real = TenantIndex.similar_many

    def counting(self: TenantIndex, queries: Any, k: int, window: int = 0) -> Any:
        calls.append(len(queries))
        return real(self, queries, k, window)

    monkeypatch.setattr(TenantIndex, "similar_many", counting)
    monkeypatch.setattr(service, "SEARCH_FIRST_SLICE", 1)
    monkeypatch.setattr(service, "SEARCH_SLICE_S", 0.0)  # every later slice one query too
    turns = 0
    stop = asyncio.Event()

    async def other_task() -> None:  # stands for the API's requests
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    runner = asyncio.ensure_future(other_task())
    await process(store, sliced, LATER)
    stop.set()
    await runner
    assert calls == [1] * len(LATER)
    assert turns >= len(LATER)
    for item in LATER:
        got = similar_evidence(await store.get_events(sliced, item["exceptionId"]))
        assert got and got == similar_evidence(await store.get_events(whole, item["exceptionId"]))


async def test_a_batch_audit_chain_hashed_in_slices_verifies(
    store: Store, tenant_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_base, "AUDIT_SLICE_ROWS", 7)
    t = await tenant_factory()
    many = [sf(f"A-{i}", "UBS Securities LLC", "LATE_AFFIRMATION", f"Affirmed late {i}", f"SA-{i}")
            for i in range(40)]
    report = await process(store, t, many, memory=False)
    assert report.processed == 40
    result = await store.verify_audit(t)
    assert result.ok and result.checked >= 40


@pytest.fixture
def batch_pause() -> Iterator[None]:
    before = heap._batch_pause
    heap._batch_pause = True  # as `tune_for_throughput` leaves it in the server, worker and `run`
    yield
    heap._batch_pause = before


async def test_the_collector_is_paused_while_a_batch_is_written(
    store: Store, tenant_factory: Any, monkeypatch: pytest.MonkeyPatch, batch_pause: None
) -> None:
    assert gc.isenabled()
    seen: list[bool] = []
    real = type(store).write_batch

    async def watching(self: Any, *a: Any, **k: Any) -> Any:
        seen.append(gc.isenabled())
        return await real(self, *a, **k)

    monkeypatch.setattr(type(store), "write_batch", watching)
    t = await tenant_factory()
    await process(store, t, SMALL)
    assert seen and not any(seen)
    assert gc.isenabled()


async def test_the_collector_runs_while_a_batch_plans_tool_calls(
    store: Store, tenant_factory: Any, batch_pause: None
) -> None:
    """Tool calls can take as long as the tools' timeouts: the pause ends before they start."""
    seen: list[bool] = []

    class Execution:  # stands in for ExecutionService: records the collector's state when plans are handed over
        async def run_many(self, tenant_id: str, ready: list[Any]) -> list[Any]:
            seen.append(gc.isenabled())
            return []

    t = await tenant_factory()
    orch = Orchestrator(store, execution=Execution())
    await orch.process(t, [Submission(d, T0, i) for i, d in enumerate(SMALL)], dry_run=False)
    assert seen == [True]
