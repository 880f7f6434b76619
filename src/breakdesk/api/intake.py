"""Group commit for accepted submissions: concurrent requests of a tenant share one enqueue transaction.

Accepting is durable, so every 202 costs a write transaction. One transaction per request makes concurrent
requests queue for SQLite's single write lock (and sleep in its busy handler) and costs PostgreSQL a commit
each. Here requests hand their items to one flusher task; whatever arrives while a flush is in flight goes
into the next one, so the batch size adapts to the load without adding any delay when the server is idle.
Each request still gets exactly its own results, in order, and sees the error if its transaction failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from breakdesk.api.observe import get_logger
from breakdesk.store import Enqueued, IntakeItem, Store

_Entry = tuple[Sequence[IntakeItem], "asyncio.Future[list[Enqueued]]"]


class AcceptQueue:
    def __init__(self, store: Store, max_items: int = 5000) -> None:
        self.store = store
        self.max_items = max_items
        self._pending: dict[str, list[_Entry]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.log = get_logger("breakdesk.api.intake")

    async def enqueue(self, tenant_id: str, items: Sequence[IntakeItem]) -> list[Enqueued]:
        """Durably enqueue `items` for the tenant (shared transaction); returns one result per item."""
        if self._closing:
            raise RuntimeError("the server is shutting down")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="breakdesk-accept-queue")
        future: asyncio.Future[list[Enqueued]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._pending.setdefault(tenant_id, []).append((items, future))
        self._wake.set()
        return await asyncio.shield(future)  # a caller that goes away must not cancel others' transaction

    def _take(self) -> tuple[str, list[_Entry]]:
        tenant_id = next(iter(self._pending))
        entries = self._pending[tenant_id]
        taken: list[_Entry] = []
        size = 0
        while entries and (not taken or size + len(entries[0][0]) <= self.max_items):
            entry = entries.pop(0)
            taken.append(entry)
            size += len(entry[0])
        if not entries:
            del self._pending[tenant_id]
        return tenant_id, taken

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                tenant_id, entries = self._take()
                combined = [item for items, _ in entries for item in items]
                try:
                    results = await self.store.enqueue(tenant_id, combined)
                except Exception as exc:
                    for _, future in entries:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                offset = 0
                for items, future in entries:
                    if not future.done():
                        future.set_result(results[offset : offset + len(items)])
                    offset += len(items)
            if self._closing:
                return

    async def close(self) -> None:
        """Finish what was handed in, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)


def _consume(future: asyncio.Future[list[Enqueued]]) -> None:
    """Mark a failure as seen even when its caller went away (else asyncio logs it as never retrieved)."""
    if not future.cancelled():
        future.exception()
