"""What batch processing costs the event loop it shares with the API (`breakdesk serve` runs the worker
in-process): the longest stretches in which nothing else could run, and the garbage collector's share.

A ticker task on the same loop sleeps 0.5 ms at a time and records the gap between its wake-ups while the
orchestrator processes the workload in batches of 500 on SQLite; a gap is how long a request arriving then
would have waited for the loop. Configurations, interleaved round by round so a busy machine slows them
alike: memory off / on, each with the collector paused during batches (`breakdesk.heap.batch_scope`, as the
entry points run) and with automatic collection throughout (the previous behaviour). Also reported: the
collector's time per exception (`gc.callbacks`) and the throughput.

Run: `.venv/bin/python -m bench.loop [--count N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from bench import machine_line
from bench.pipeline import TENANT, setup_tenant, workload
from breakdesk import heap
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store

TICK_S = 0.0005


class _GcClock:
    """Thread time spent in collections, from the collector's own start/stop callbacks."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.total += time.thread_time() - self._start


async def _run(url: str, items: list[dict[str, Any]], memory: bool) -> tuple[float, list[float]]:
    store = await Store.open(url)
    try:
        await setup_tenant(store)
        orchestrator = Orchestrator(store, memory=None if memory else False)
        await orchestrator.active_packs(TENANT)
        now = datetime.now(UTC)
        subs = [Submission(d, now, i) for i, d in enumerate(items)]
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(TICK_S)
                t = time.perf_counter()
                gaps.append(t - last)
                last = t

        task = asyncio.ensure_future(ticker())
        t0 = time.perf_counter()
        for start in range(0, len(subs), 500):
            await orchestrator.process(TENANT, subs[start:start + 500])
        rate = len(subs) / (time.perf_counter() - t0)
        done.set()
        await task
        return rate, gaps
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench.loop")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv if argv is not None else [])
    print(machine_line())
    items = workload(args.count)
    heap.tune_for_throughput()  # as `serve`, `worker` and `run`: frozen startup heap, batch pause on
    clock = _GcClock()
    gc.callbacks.append(clock)
    results: dict[tuple[bool, bool], list[tuple[float, float, list[float]]]] = {}
    try:
        for _ in range(args.rounds):
            for memory in (False, True):
                for pause in (True, False):
                    heap._batch_pause = pause
                    clock.total = 0.0
                    with tempfile.TemporaryDirectory() as tmp:
                        rate, gaps = asyncio.run(_run(f"sqlite+aiosqlite:///{tmp}/loop.db", items, memory))
                    results.setdefault((memory, pause), []).append((rate, clock.total / len(items), gaps))
    finally:
        heap._batch_pause = True
        gc.callbacks.remove(clock)
    print(f"{args.count:,} exceptions in batches of 500 on SQLite, {args.rounds} rounds; event-loop gaps seen by a "
          f"{TICK_S * 1e3:.1f} ms ticker (per round: p99 / max), collector time and throughput (median of rounds)")
    for (memory, pause), runs in results.items():
        shown = ", ".join(f"{_pct(g, 0.99):.0f} / {max(g) * 1e3:.0f}" for _, _, g in runs)
        print(f"  memory {'on ' if memory else 'off'}, collector {'paused in batches' if pause else 'automatic       '}: "
              f"gaps ms {shown}; collector {statistics.median(r[1] for r in runs) * 1e6:.0f} µs/exception; "
              f"{statistics.median(r[0] for r in runs):,.0f}/s")


def _pct(gaps: list[float], q: float) -> float:
    s = sorted(gaps)
    return s[min(len(s) - 1, int(len(s) * q))] * 1e3


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
