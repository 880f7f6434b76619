"""Cooperative time slices for batch work on the event loop.

Why: `breakdesk serve` runs the worker on the same event loop as the HTTP API, so any stretch of batch CPU
without an `await` (triaging, searching the memory, hashing the audit chain of a 500-exception batch) is a
stretch in which no request is answered. Each long loop ticks a `Slicer`, which yields to the loop once its
budget is spent: requests then wait about one slice behind batch work, not a whole batch section (measured
in bench/RESULTS.md). Yielding costs a few microseconds, so the budget keeps batch throughput unchanged.
"""

from __future__ import annotations

import asyncio
import time

#: Seconds of CPU a batch loop may hold the event loop before it yields.
SLICE_S = 0.002


class Slicer:
    """`await tick()` in a CPU loop: yields to the event loop when `budget` seconds have passed since the
    last yield (or since the slicer was made)."""

    __slots__ = ("_start", "budget")

    def __init__(self, budget: float = SLICE_S) -> None:
        self.budget = budget
        self._start = time.perf_counter()

    def spent(self) -> bool:
        """Whether this slice's budget is used up (for loops that yield in their own way)."""
        return time.perf_counter() - self._start > self.budget

    async def tick(self) -> None:
        if self.spent():
            await self.yield_now()

    async def yield_now(self) -> None:
        await asyncio.sleep(0)
        self._start = time.perf_counter()
