"""Two indexers of one tenant (a server's worker and `breakdesk memory index`; on SQLite both run): the one
behind, saving last, must not leave the memory with an older rendering than the other's for good."""

from __future__ import annotations

import asyncio
from typing import Any

from memkit import Held, close, process, sf

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store


async def test_a_slower_pass_saved_last_does_not_hide_a_newer_change(store: Store, tenant_factory: Any) -> None:
    t = await tenant_factory()
    await process(store, t, [sf("R-1", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "short", "ST-R1")], memory=False)
    # the slower pass: reads the chain, renders R-1 (open, no case yet), then stalls before writing
    held = Held(store, "replace_cases")
    slow = asyncio.create_task(MemoryIndexer(held, Memory(store)).catch_up(t))  # type: ignore[arg-type]
    await asyncio.wait_for(held.waiting.wait(), 30)
    # R-1 is closed meanwhile, and the other indexer's pass indexes it as closed
    await close(store, t, "R-1")
    fast = MemoryIndexer(store, Memory(store))
    await fast.catch_up(t)
    assert (await store.get_case(t, "R-1")).status == "CLOSED"  # type: ignore[union-attr]
    held.go.set()
    await slow  # writes its older rendering (open) last
    # the next passes must bring the case back to what the exception is
    for _ in range(2):
        await fast.catch_up(t)
    case = await store.get_case(t, "R-1")
    assert case is not None and case.status == "CLOSED" and case.resolution is not None, case
