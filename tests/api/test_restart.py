"""Crash safety: accept 1,000 exceptions, SIGKILL the server while its worker is mid-way, restart it, and every
exception ends up processed exactly once — one exception per accepted item, no duplicate or missing events,
an intact audit chain. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from breakdesk.store import Store
from breakdesk.store.tables import exception_events, exceptions, idempotency_keys, intake_queue

from .conftest import mini_tenant
from .live import LiveServer

N = 1000
STAGES_PER_EXCEPTION = 7  # intake, triage, policy, supervisor, resolution, supervisor, feedback

pytestmark = pytest.mark.slow


async def counts(store: Store, tenant_id: str) -> dict[str, int]:
    return await store.queue_counts(tenant_id)


async def claimed_unfinished(store: Store, tenant_id: str) -> int:
    """Items a worker has claimed (attempts > 0) but not finished: what a crash leaves behind."""
    Q = intake_queue.c
    async with store.engine.connect() as conn:
        stmt = select(func.count()).where(Q.tenant_id == tenant_id, Q.state == "PENDING", Q.attempts > 0)
        return int((await conn.execute(stmt)).scalar_one())


async def test_sigkill_mid_processing_then_restart_processes_each_exactly_once(db_url: str, tmp_path: Path) -> None:
    store = await Store.open(db_url)
    try:
        tenant_id, key = await mini_tenant(store, "crash")
        # Small batches keep the worker busy long enough to be caught mid-way; a short lease lets the
        # restarted worker reclaim what the killed one had claimed.
        # Tools stay uncalled (the mini pack's URLs point nowhere): this is about intake, while execution's own
        # crash-resume is tests/tools/test_crash_resume.py.
        settings = {"worker_batch_size": "50", "worker_lease_seconds": "2", "worker_poll_seconds": "0.05",
                    "execution_enabled": "false"}
        server = LiveServer(db_url, tmp_path / "server.log", **settings).start()
        try:
            items = [
                {"exceptionType": "BREAK", "sourceSystem": "ledger", "rawPayload": {"orderId": f"K-{n:05d}", "amount": n}}
                for n in range(N)
            ]
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                r = await client.post(
                    f"/v1/tenants/{tenant_id}/exceptions", json=items, headers={"X-API-Key": key}
                )
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] == N
            # Kill while a claimed batch is being processed: some items done, some claimed but not finished.
            deadline = time.monotonic() + 60
            while True:
                c = await counts(store, tenant_id)
                if c["DONE"] >= 100 and await claimed_unfinished(store, tenant_id) > 0:
                    break
                assert time.monotonic() < deadline, f"the worker made no progress: {c}"
                await asyncio.sleep(0.002)
            server.kill()
        finally:
            server.kill()
        at_kill = await counts(store, tenant_id)
        in_flight = await claimed_unfinished(store, tenant_id)
        assert 0 < at_kill["DONE"] < N, f"not killed mid-way: {at_kill}"
        assert in_flight > 0, "killed between batches: nothing was left claimed"

        restarted = LiveServer(db_url, tmp_path / "server.log", **settings)
        restarted.port = server.port
        restarted.base_url = server.base_url
        with restarted:
            deadline = time.monotonic() + 90
            while (c := await counts(store, tenant_id))["DONE"] < N:
                assert c["REJECTED"] == 0, c
                assert time.monotonic() < deadline, f"not all processed after the restart: {c}"
                await asyncio.sleep(0.1)
        final = await counts(store, tenant_id)
        assert final == {"PENDING": 0, "DONE": N, "REJECTED": 0}
        await assert_exactly_once(store, tenant_id)
        result = await store.verify_audit(tenant_id)
        assert result.ok, result
        print(f"killed with {at_kill}, {in_flight} claimed but unfinished items reclaimed after restart")
    finally:
        await store.close()


async def assert_exactly_once(store: Store, tenant_id: str) -> None:
    E, X, K, Q = exception_events.c, exceptions.c, idempotency_keys.c, intake_queue.c
    async with store.engine.connect() as conn:
        n_exceptions = (await conn.execute(select(func.count()).where(X.tenant_id == tenant_id))).scalar_one()
        recurrences = (
            await conn.execute(select(func.coalesce(func.sum(X.recurrence_count), 0)).where(X.tenant_id == tenant_id))
        ).scalar_one()
        queue_ids = [
            int(i) for i in (await conn.execute(select(Q.id).where(Q.tenant_id == tenant_id))).scalars().all()
        ]
        keys: dict[str, Any] = dict(
            (await conn.execute(select(K.idempotency_key, K.exception_id).where(K.tenant_id == tenant_id))).all()
        )
        per_exception = (
            await conn.execute(
                select(E.exception_id, func.count(), func.count(func.distinct(E.seq)), func.min(E.seq), func.max(E.seq))
                .where(E.tenant_id == tenant_id)
                .group_by(E.exception_id)
            )
        ).all()
    # every accepted item became exactly one exception (no recurrences or duplicates in this data)
    assert (n_exceptions, recurrences, len(queue_ids)) == (N, 0, N)
    assert set(keys) == {f"queue:{q}" for q in queue_ids}
    assert len(set(keys.values())) == N
    # every exception has one complete, duplicate-free event stream
    assert len(per_exception) == N
    for exception_id, count, distinct, low, high in per_exception:
        assert (count, distinct, low, high) == (STAGES_PER_EXCEPTION, STAGES_PER_EXCEPTION, 1, STAGES_PER_EXCEPTION), exception_id
