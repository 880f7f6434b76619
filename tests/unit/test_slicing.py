"""Batch loops give the event loop back once their time slice is spent, and not before."""

from __future__ import annotations

import asyncio

from breakdesk.slicing import Slicer


async def _loop_with_ticks(slicer: Slicer, items: int, log: list[str]) -> None:
    for i in range(items):
        log.append(f"item {i}")
        await slicer.tick()


async def test_a_spent_slice_yields_to_other_tasks() -> None:
    log: list[str] = []

    async def other() -> None:
        log.append("other")

    task = asyncio.ensure_future(other())  # runs at the loop's next turn
    await _loop_with_ticks(Slicer(budget=0.0), 3, log)
    await task
    assert log == ["item 0", "other", "item 1", "item 2"]


async def test_ticks_within_the_budget_keep_the_loop() -> None:
    log: list[str] = []

    async def other() -> None:
        log.append("other")

    task = asyncio.ensure_future(other())
    slicer = Slicer(budget=3600.0)
    assert not slicer.spent()
    await _loop_with_ticks(slicer, 3, log)
    await task
    assert log == ["item 0", "item 1", "item 2", "other"]


async def test_yielding_starts_a_new_slice() -> None:
    slicer = Slicer(budget=0.0)
    assert slicer.spent()
    slicer.budget = 3600.0
    await slicer.yield_now()
    assert not slicer.spent()
