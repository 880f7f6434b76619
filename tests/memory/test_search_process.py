"""The pipeline's searches in a process of their own (`memory.sidecar`): the same similar cases and last
resolutions as searched in process, for the tenant asked only; and when that process cannot start, dies or
stops answering, the batch is searched in process instead, with the same result. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from memkit import ROOT, close, make_tenant, process

from breakdesk import envvars
from breakdesk.memory import Memory
from breakdesk.memory import sidecar as sidecar_mod
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store
from breakdesk.store.errors import StoreError

BATCH = 40


WINDOW = 100  # triage's window: smaller than the tenants' histories here, so that it matters


@pytest.fixture
async def memories(store: Store) -> AsyncIterator[tuple[Memory, Memory]]:
    """(searching in process, searching in a search process), the second stopped at the end."""
    here = Memory(store, search_process=False, triage_window=WINDOW)
    there = Memory(store, search_process=True, triage_window=WINDOW)
    try:
        yield here, there
    finally:
        there.close()


def items(n: int, prefix: str = "") -> list[dict[str, Any]]:
    """The first `n` well-formed exceptions of the finance example file, under ids of their own."""
    lines = (ROOT / "examples" / "finance.jsonl").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        try:
            x = json.loads(line)
        except ValueError:
            continue
        if isinstance(x, dict) and isinstance(x.get("rawPayload"), dict):
            x.pop("idempotencyKey", None)
            out.append({**x, "exceptionId": f"{prefix}X-{len(out):05d}"})
    assert len(out) >= n
    return out[:n]


async def triage_of(store: Store, tenant: str, eids: list[str]) -> dict[str, Any]:
    """Each exception's triage decision (its evidence: similar cases, recurrence and last resolution), with
    the tenant's id (in the texts of its policy's overrides) written as `TENANT`."""
    out = {}
    for eid in eids:
        events = await store.get_events(tenant, eid)
        found = [e["decision"] for e in events if e["stage"] == "triage"]
        out[eid] = json.loads(json.dumps(found).replace(tenant, "TENANT"))
    return out


async def side_by_side(store: Store, memories: tuple[Memory, Memory], a: str, b: str,
                       part: list[dict[str, Any]]) -> None:
    """`part` through tenant `a`, searched in process, and through tenant `b`, searched by the child."""
    for t, mem in zip((a, b), memories, strict=True):
        await process(store, t, part, memory=mem)


async def assert_same_evidence(store: Store, a: str, b: str, work: list[dict[str, Any]]) -> None:
    eids = [x["exceptionId"] for x in work]
    assert await triage_of(store, b, eids) == await triage_of(store, a, eids)


def similar_ids(decisions: dict[str, Any]) -> list[str]:
    return [c["exceptionId"] for ds in decisions.values() for d in ds for ev in d["evidence"]
            if ev["kind"] == "similar-cases" for c in ev["data"]["cases"]]


async def test_a_search_process_finds_what_the_pipeline_finds_in_process(
        store: Store, memories: tuple[Memory, Memory], caplog: pytest.LogCaptureFixture) -> None:
    here, there = memories
    caplog.set_level(logging.WARNING)
    a, b, other = await make_tenant(store), await make_tenant(store), await make_tenant(store)
    work = items(5 * BATCH)
    await process(store, other, items(4 * BATCH, "Z-"), memory=there)  # (the child holds both tenants)
    start = 0
    while start < len(work):
        part = work[start:start + BATCH]
        rep = await process(store, a, part, memory=here)
        assert (await process(store, b, part, memory=there)).exception_ids == rep.exception_ids
        start += BATCH
        if start == 2 * BATCH:  # people close some cases: later batches show their resolutions
            closed = rep.exception_ids[::4]
            for eid in closed:
                for t in (a, b):
                    await close(store, t, eid, f"fixed {eid}")
            for t in (a, b):
                await MemoryIndexer(store, Memory(store, search_process=False)).run_once(t, embed=False)
            # and the same problems again, under new ids: their triage names the last resolution
            work += [{**x, "exceptionId": "R-" + x["exceptionId"]} for x in part if x["exceptionId"] in closed]
    assert there.sidecar() is not None and there.sidecar().pid is not None  # it ran, and answered every batch:
    assert "search process" not in caplog.text  # (a failure would have searched here, and logged it)
    eids = [x["exceptionId"] for x in work]
    in_process, remote = await triage_of(store, a, eids), await triage_of(store, b, eids)
    assert remote == in_process
    shown = similar_ids(remote)
    assert len(shown) > 2 * BATCH * 3  # (most exceptions show similar cases)
    assert not [e for e in shown if e.startswith("Z-")]  # the other tenant's cases never
    texts = [ev["message"] for ds in remote.values() for d in ds for ev in d["evidence"]]
    assert any("last resolution: closed" in t for t in texts)  # (recurrence)
    assert any(re.search(r'similar to .*: closed, playbook [^,]+, "fixed X-', t) for t in texts)


async def test_a_search_process_that_dies_is_replaced_and_meanwhile_the_batch_is_searched_here(
        store: Store, memories: tuple[Memory, Memory], caplog: pytest.LogCaptureFixture) -> None:
    there = memories[1]
    a, b = await make_tenant(store), await make_tenant(store)
    work = items(4 * BATCH)
    batches = [work[i:i + BATCH] for i in range(0, len(work), BATCH)]
    await side_by_side(store, memories, a, b, batches[0])
    sp = there.sidecar()
    assert sp is not None
    first = sp.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _reaped(first)
    with caplog.at_level(logging.WARNING):
        await side_by_side(store, memories, a, b, batches[1])
    assert "the search process" in caplog.text
    assert not sp.available() and sp.pid is None  # resting: the next batch is searched here too
    await side_by_side(store, memories, a, b, batches[2])
    assert sp.pid is None
    sp._retry_at = 0.0  # (the rest is over)
    await side_by_side(store, memories, a, b, batches[3])
    assert sp.pid not in (None, first)
    await assert_same_evidence(store, a, b, work)


async def test_a_search_process_that_stops_answering_is_stopped_and_the_batch_searched_here(
        store: Store, memories: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch) -> None:
    there = memories[1]
    a, b = await make_tenant(store), await make_tenant(store)
    work = items(2 * BATCH)
    await side_by_side(store, memories, a, b, work[:BATCH])
    sp = there.sidecar()
    assert sp is not None and sp.pid is not None
    stuck = sp.pid
    monkeypatch.setattr(sidecar_mod, "ANSWER_TIMEOUT_S", 0.5)
    os.kill(stuck, signal.SIGSTOP)
    await side_by_side(store, memories, a, b, work[BATCH:])
    _reaped(stuck)  # killed, though stopped
    assert sp.pid is None and not sp.available()
    await assert_same_evidence(store, a, b, work)


async def test_a_search_process_that_cannot_start_leaves_the_searches_here(
        store: Store, memories: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = await make_tenant(store), await make_tenant(store)
    monkeypatch.setattr(sidecar_mod.sys, "executable", "/nonexistent/python")
    work = items(2 * BATCH)
    with caplog.at_level(logging.WARNING):
        for part in (work[:BATCH], work[BATCH:]):
            await side_by_side(store, memories, a, b, part)
    assert "cannot start it" in caplog.text
    assert caplog.text.count("cannot start it") == 1  # (not tried again at once)
    eids = [x["exceptionId"] for x in work]
    assert similar_ids(await triage_of(store, a, eids))
    assert await triage_of(store, b, eids) == await triage_of(store, a, eids)


async def test_which_databases_and_machines_get_a_search_process(monkeypatch: pytest.MonkeyPatch,
                                                                   store: Store) -> None:
    memory_db = await Store.open("sqlite+aiosqlite:///:memory:")
    try:
        # another process cannot open an in-memory database: searched here, whatever the setting
        assert Memory(memory_db, search_process=True).sidecar() is None
    finally:
        await memory_db.close()
    assert Memory(store, search_process=False).sidecar() is None
    monkeypatch.setenv(envvars.MEMORY_SEARCH_PROCESS, "auto")
    monkeypatch.setattr("breakdesk.memory.service._cpus", lambda: 1)
    assert Memory(store).sidecar() is None  # one CPU: both processes would take turns on it
    monkeypatch.setattr("breakdesk.memory.service._cpus", lambda: 2)
    assert Memory(store).sidecar() is not None
    monkeypatch.setenv(envvars.MEMORY_SEARCH_PROCESS, "off")
    assert Memory(store).sidecar() is None


@pytest.mark.parametrize("raw, parsed", [("", None), ("auto", None), ("on", True), ("TRUE", True), ("1", True),
                                         ("off", False), ("no", False)])
def test_the_search_process_setting(raw: str, parsed: bool | None) -> None:
    assert envvars.search_process({envvars.MEMORY_SEARCH_PROCESS: raw}) is parsed


def test_a_bad_search_process_setting_is_an_error_that_names_it() -> None:
    with pytest.raises(ValueError, match="BREAKDESK_MEMORY_SEARCH_PROCESS must be on, off or auto, not 'sometimes'"):
        envvars.check({envvars.MEMORY_SEARCH_PROCESS: "sometimes"})


async def test_closing_the_memory_stops_its_search_process(store: Store) -> None:
    mem = Memory(store, search_process=True)
    t = await make_tenant(store)
    await mem.warm(t)
    sp = mem.sidecar()
    assert sp is not None and sp.pid is not None
    pid = sp.pid
    mem.close()
    _reaped(pid)
    assert sp.pid is None


def _reaped(pid: int) -> None:
    """Until process `pid` is gone (reaped by its parent, this process)."""
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still running")



async def test_answers_cut_short_are_completed_here(
        store: Store, memories: tuple[Memory, Memory], caplog: pytest.LogCaptureFixture) -> None:
    """The child dies once the pipeline has its first answers (what it sent after is lost): the rest of the
    batch is searched in this process, with the same result. (That search reads no case past the latest the
    child had read: `test_an_index_read_up_to_a_case_holds_no_later_one`.)"""
    here, there = memories
    caplog.set_level(logging.WARNING)
    a, b = await make_tenant(store), await make_tenant(store)
    work = items(4 * BATCH)
    await side_by_side(store, memories, a, b, work[:BATCH])
    sp = there.sidecar()
    assert sp is not None and sp.pid is not None
    pid, real = sp.pid, sp._received
    answered: list[int] = []

    def received(message: Any) -> None:
        if answered:  # (dead: nothing it sent after arrives)
            return
        real(message)
        if message[0] == "hits" and message[1] in sp._requests and len(message[2]) < 3 * BATCH:
            answered.append(len(message[2]))
            os.kill(pid, signal.SIGKILL)

    sp._received = received  # type: ignore[method-assign]
    await process(store, b, work[BATCH:], memory=there)
    await process(store, a, work[BATCH:], memory=here)
    assert answered == [sidecar_mod.FIRST_SLICE]
    assert "searching the rest of the batch in this process" in caplog.text
    await assert_same_evidence(store, a, b, work)


async def test_a_search_process_failing_and_then_the_store_too_leaves_the_batch_without_similar_cases(
        store: Store, memories: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _, there = memories
    t = await make_tenant(store)
    work = items(2 * BATCH)
    await process(store, t, work[:BATCH], memory=there)
    sp = there.sidecar()
    assert sp is not None and sp.pid is not None
    monkeypatch.setattr(sidecar_mod, "ANSWER_TIMEOUT_S", 0.5)
    os.kill(sp.pid, signal.SIGSTOP)

    async def down(*_: Any, **__: Any) -> Any:
        raise StoreError("the database connection was lost; retry the operation")

    monkeypatch.setattr(store, "cases_after", down)
    caplog.set_level(logging.WARNING)
    report = await process(store, t, work[BATCH:], memory=there)
    assert report.processed + report.recurrences == BATCH and not report.rejected
    assert "the rest of the batch goes without similar cases: the database connection was lost" in caplog.text
    assert not similar_ids(await triage_of(store, t, report.exception_ids))


async def test_a_repeated_id_is_searched_as_the_exception_the_pipeline_kept(
        store: Store, memories: tuple[Memory, Memory]) -> None:
    """Two submissions under one id, the first a duplicate by its idempotency key: the search process was sent
    the first, the pipeline keeps the second, and that one's similar cases and case row are what it shows."""
    here, there = memories
    a, b = await make_tenant(store), await make_tenant(store)
    work = items(2 * BATCH + 1)
    known = {**work[0], "idempotencyKey": "K-1"}
    first, kept = {**work[5], "exceptionId": "X-dup", "idempotencyKey": "K-1"}, \
        {**work[-1], "exceptionId": "X-dup", "idempotencyKey": "K-2"}
    await side_by_side(store, memories, a, b, [known, *work[1:BATCH]])
    for t, mem in ((a, here), (b, there)):
        report = await process(store, t, [first, kept, *work[BATCH:2 * BATCH]], memory=mem)
        assert report.duplicates == 1 and "X-dup" in report.exception_ids
    eids = ["X-dup", *(x["exceptionId"] for x in work[:2 * BATCH])]
    assert await triage_of(store, b, eids) == await triage_of(store, a, eids)
    rows = {t: {c.exception_id: (c.body, c.entities) for c in await store.cases_after(t, 0)} for t in (a, b)}
    assert rows[b]["X-dup"] == rows[a]["X-dup"]
    assert rows[b]["X-dup"][0] != rows[b][work[5]["exceptionId"]][0]  # (the kept one's text, not the first's)


async def test_two_batches_at_once_start_one_search_process(
        store: Store, memories: tuple[Memory, Memory], caplog: pytest.LogCaptureFixture) -> None:
    _, there = memories
    sp = there.sidecar()
    assert sp is not None
    caplog.set_level(logging.INFO, logger="breakdesk.memory.sidecar")
    first, second = await asyncio.gather(sp._ensure(), sp._ensure())  # (each would start one, unguarded)
    assert first is second and caplog.text.count("started") == 1
    a, b = await make_tenant(store), await make_tenant(store)
    await asyncio.gather(process(store, a, items(BATCH), memory=there), process(store, b, items(BATCH), memory=there))
    assert caplog.text.count("started") == 1


async def test_an_index_read_up_to_a_case_holds_no_later_one(store: Store) -> None:
    t = await make_tenant(store)
    await process(store, t, items(BATCH), memory=Memory(store, search_process=False))
    ids = [c.id for c in await store.cases_after(t, 0)]
    assert len(ids) > 10
    mem = Memory(store, search_process=False)
    idx = await mem.index(t, upto=ids[9])
    assert len(idx) == 10 and idx.last_case_id == ids[9]
    assert len(await mem.index(t)) == len(ids)  # and a later sync goes on from there
