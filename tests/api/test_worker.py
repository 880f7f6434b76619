"""The in-process intake worker: drains accepted items, waits for packs without losing anything, isolates a
failing batch item by item, and dead-letters what it cannot process after the allowed attempts."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from breakdesk.catalog import Catalog
from breakdesk.store import Conflict

from .conftest import Api, Tenant, break_item, mini_domain, mini_policy


async def states(api: Api, t: Tenant, ids: list[int], want: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        out = [
            (await api.client.get(f"/v1/tenants/{t.tenant_id}/intake/{i}", headers=t.headers("viewer"))).json()
            for i in ids
        ]
        if all(o["state"] == want for o in out) or asyncio.get_running_loop().time() > deadline:
            return out
        await asyncio.sleep(0.05)


async def accept(api: Api, t: Tenant, items: list[dict[str, Any]]) -> list[int]:
    r = await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions", json=items, headers=t.headers("operator"))
    assert r.status_code == 202
    return [i["queueId"] for i in r.json()["items"]]


async def test_background_worker_processes_accepted_items(make_api: Any) -> None:
    async with make_api(worker_enabled=True, worker_poll_seconds=0.05, worker_batch_size=7) as api:
        assert (await api.client.get("/readyz")).json()["worker"] == "running"
        t = await api.tenant()
        ids = await accept(api, t, [break_item(f"BG-{n}") for n in range(30)])
        done = await states(api, t, ids, "DONE")
        assert [d["state"] for d in done] == ["DONE"] * 30
        assert len({d["exceptionId"] for d in done}) == 30
        rows, _ = await api.store.list_exceptions(t.tenant_id, limit=100)
        assert len(rows) == 30
        text = (await api.client.get("/metrics")).text
        processed = re.search(r'breakdesk_worker_items_total\{outcome="processed"\} ([0-9.]+)', text)
        assert processed is not None and float(processed.group(1)) >= 30  # PostgreSQL is shared with other tests
        worker = api.ctx.worker
        assert worker is not None and worker.running
    assert not worker.running  # the lifespan stopped it


async def test_items_wait_for_packs_and_are_not_lost(make_api: Any) -> None:
    async with make_api(worker_enabled=True, worker_poll_seconds=0.05, worker_lease_seconds=0.3) as api:
        t = await api.tenant(packs=False)
        ids = await accept(api, t, [break_item("NP-1"), break_item("NP-2")])
        await asyncio.sleep(0.5)
        pending = await states(api, t, ids, "PENDING", timeout=0.1)
        assert [p["state"] for p in pending] == ["PENDING", "PENDING"] and pending[0]["attempts"] >= 1
        cat = Catalog(api.store)
        await cat.publish(t.tenant_id, mini_domain(), "d.yaml", "tests", activate=True)
        await cat.publish(t.tenant_id, mini_policy(t.tenant_id), "p.yaml", "tests", activate=True)
        done = await states(api, t, ids, "DONE")
        assert [d["state"] for d in done] == ["DONE", "DONE"]


async def test_a_conflicting_batch_is_retried_item_by_item(api: Api, monkeypatch: Any) -> None:
    t = await api.tenant()
    ids = await accept(api, t, [break_item(f"C-{n}") for n in range(4)])
    real = api.ctx.orchestrator.process
    calls: list[int] = []

    async def conflict_on_batches(tenant_id: str, subs: Any, **kw: Any) -> Any:
        subs = list(subs)
        if tenant_id == t.tenant_id:  # the worker serves every tenant of the (shared) database
            calls.append(len(subs))
        if len(subs) > 1:
            raise Conflict("a concurrent writer got there first")
        return await real(tenant_id, subs, **kw)

    monkeypatch.setattr(api.ctx.orchestrator, "process", conflict_on_batches)
    assert await api.drain() >= 4
    assert calls == [4, 1, 1, 1, 1]
    assert [s["state"] for s in await states(api, t, ids, "DONE", timeout=1)] == ["DONE"] * 4


async def test_an_item_that_keeps_failing_is_dead_lettered(make_api: Any, monkeypatch: Any) -> None:
    async with make_api(worker_max_attempts=2, worker_lease_seconds=0.05) as api:
        t = await api.tenant()
        ids = await accept(api, t, [break_item("POISON"), break_item("FINE")])
        real = api.ctx.orchestrator.process

        async def explode_on_poison(tenant_id: str, subs: Any, **kw: Any) -> Any:
            subs = list(subs)
            if any((s.data.get("rawPayload") or {}).get("orderId") == "POISON" for s in subs):
                raise RuntimeError("bug in a stage")
            return await real(tenant_id, subs, **kw)

        monkeypatch.setattr(api.ctx.orchestrator, "process", explode_on_poison)
        await api.drain()  # attempt 1: the batch fails, FINE succeeds alone, POISON stays leased
        await asyncio.sleep(0.1)
        await api.drain()  # attempt 2: POISON is given up on
        poison, fine = await states(api, t, ids, "never", timeout=0)
        assert fine["state"] == "DONE"
        assert poison["state"] == "REJECTED" and poison["error"] == "gave up after 2 attempts: RuntimeError"


async def test_the_worker_indexes_resolutions_in_the_background(make_own_api: Any) -> None:
    """A closed exception's case gets its resolution (what was done) without `breakdesk memory index`,
    and the next similar-case search shows how it was resolved. (A database of its own: the worker goes over
    every tenant in it, and the session's holds other tests' tenants.)"""
    async with make_own_api(worker_enabled=True, worker_poll_seconds=0.05, memory_index_interval_seconds=0.05) as api:
        t = await api.tenant()
        r = await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions?wait=true",
                                  json=[break_item("IDX-1"), break_item("IDX-2")], headers=t.headers("operator"))
        first, second = (i["exceptionId"] for i in r.json()["items"])
        r = await api.client.post(f"/v1/tenants/{t.tenant_id}/exceptions/{first}/actions",
                                  json={"action": "close", "resolution": "ledger entry reversed"},
                                  headers=t.headers("operator"))
        assert r.status_code == 200, r.text
        deadline = asyncio.get_running_loop().time() + 15
        case = await api.store.get_case(t.tenant_id, first)
        while (case is None or case.resolution is None) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            case = await api.store.get_case(t.tenant_id, first)
        assert case is not None and case.resolution is not None and case.status == "CLOSED"
        assert "ledger entry reversed" in str(case.resolution)
        r = await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions/{second}/similar",
                                 params={"resolved": "true"}, headers=t.headers("viewer"))
        assert [h["exceptionId"] for h in r.json()["items"]] == [first] and r.json()["items"][0]["resolution"]
        indexer = api.ctx.background._indexer
        assert indexer is not None and not indexer.done()
        status: dict[str, Any] = {}
        while status.get("behind") != 0 and asyncio.get_running_loop().time() < deadline:  # the worker's pace
            r = await api.client.get(f"/v1/tenants/{t.tenant_id}/memory", headers=t.headers("viewer"))
            assert r.status_code == 200, r.text
            status = r.json()
            await asyncio.sleep(0.05)
        assert status == {"cases": 2, "behind": 0, "embedder": None, "toEmbed": 0, "rerenderPending": False,
                          "toRerender": 0}
    assert indexer.done()  # the lifespan stopped it
