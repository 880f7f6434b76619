"""Helpers for the memory tests: tenants on the example finance pack and small hand-made cases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from breakdesk.catalog import Catalog
from breakdesk.packs.loader import read_file
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


async def make_tenant(store: Store, policy_changes: dict[str, Any] | None = None) -> str:
    """A fresh tenant bound to the example finance pack (acme-capital's policy, re-targeted)."""
    tid = f"t-{uuid.uuid4().hex[:10]}"
    await store.create_tenant(tid, tid)
    cat = Catalog(store)
    data, src = read_file(ROOT / "packs/finance/domain.yaml")
    await cat.publish(tid, data, src, "test", activate=True)
    pdata, psrc = read_file(ROOT / "packs/finance/tenants/acme-capital.yaml")
    pdata = {**pdata, "tenantId": tid, **(policy_changes or {})}
    await cat.publish(tid, pdata, psrc, "test", activate=True)
    return tid


def sf(eid: str, counterparty: str, reason: str, message: str, settle: str, **extra: Any) -> dict[str, Any]:
    """A SETTLEMENT_FAIL submission."""
    return {
        "exceptionId": eid,
        "exceptionType": "SETTLEMENT_FAIL",
        "sourceSystem": extra.pop("source", "custody-feed"),
        "rawPayload": {"settleId": settle, "orderId": f"ORD-{settle}", "counterparty": counterparty,
                       "failReason": reason, "message": message, "notional": 125000.0, "ageDays": 1, **extra},
    }


def cb(eid: str, account: str, ccy: str, message: str, value_date: str) -> dict[str, Any]:
    return {
        "exceptionId": eid,
        "exceptionType": "CASH_BREAK",
        "sourceSystem": "nostro-recon",
        "rawPayload": {"accountId": account, "currency": ccy, "valueDate": value_date, "breakAmount": 120.5,
                       "message": message},
    }


SMALL = [
    sf("E-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "Counterparty short of securities at DTC", "ST-1"),
    sf("E-2", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "Counterparty short of securities, delivery pending", "ST-2"),
    sf("E-3", "Barclays Capital Inc.", "SSI_MISMATCH", "Standing settlement instructions outdated", "ST-3"),
    sf("E-4", "UBS Securities LLC", "LATE_AFFIRMATION", "Client affirmed after the cut-off", "ST-4"),
    cb("E-5", "NOSTRO-USD-001", "USD", "Unbooked bank fee on the statement", "2025-03-10"),
    cb("E-6", "NOSTRO-EUR-002", "EUR", "Coupon income received before booking", "2025-03-11"),
]


async def process(store: Store, tenant: str, items: list[dict[str, Any]], **kw: Any) -> Any:
    orch = Orchestrator(store, **kw)
    subs = [Submission(d, T0 + timedelta(seconds=i), i) for i, d in enumerate(items)]
    return await orch.process(tenant, subs)


class Held:
    """A store whose method `name` stalls until `go` is set, as in a slower indexer's pass: before it runs, or
    once it has (`after`: the rows it read are then older than what others write meanwhile). `waiting` is set
    when it stalls."""

    def __init__(self, store: Store, name: str, *, after: bool = False) -> None:
        self._store, self._name, self._after = store, name, after
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, attr: str) -> Any:
        real = getattr(self._store, attr)
        if attr != self._name:
            return real

        async def held(*args: Any, **kw: Any) -> Any:
            if not self._after:
                self.waiting.set()
                await self.go.wait()
            out = await real(*args, **kw)
            if self._after:
                self.waiting.set()
                await self.go.wait()
            return out

        return held


async def close(store: Store, tenant: str, eid: str, resolution: str = "redelivered") -> None:
    """A person closes exception `eid` (its event, audit entry and fields, as the API writes them)."""
    from breakdesk.store.records import AuditRow, EventRow

    now = datetime.now(UTC)
    await store.append_events(tenant, eid, [EventRow(eid, "human.close", now, None,
                                                     {"action": "close", "resolution": resolution})],
                              [AuditRow("dana", "exception.close", eid, now, {})],
                              fields={"status": "CLOSED", "resolved_at": now})


def stored_tenant(url: str, items: list[dict[str, Any]] | None = None, **kw: Any) -> str:
    """A fresh tenant in the database at `url` that processed `items` (SMALL; `kw` as `process`), for the CLI
    tests, which open the database themselves."""

    async def setup() -> str:
        store = await Store.open(url)
        try:
            t = await make_tenant(store)
            await process(store, t, SMALL if items is None else items, **kw)
            return t
        finally:
            await store.close()

    return asyncio.run(setup())


def on_store(url: str, work: Any) -> Any:
    """`await work(store)` on the database at `url`, from synchronous code (the CLI tests)."""

    async def run() -> Any:
        store = await Store.open(url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def renderings_read(store: Store, monkeypatch: Any) -> list[int]:
    """Where each of the re-rendering walk's reads (`case_renderings_after`) starts, from now on."""
    starts: list[int] = []
    read = store.case_renderings_after

    async def reading(tenant_id: str, after_id: int, limit: int = 500) -> Any:
        starts.append(after_id)
        return await read(tenant_id, after_id, limit)

    monkeypatch.setattr(store, "case_renderings_after", reading)
    return starts
