"""Garbage-collector settings for Breakdesk's long-running processes: server, worker, `breakdesk run`.

Why: a pipeline batch keeps a few hundred thousand containers (decisions, events, rows) alive until its write
commits. Under CPython's default thresholds (700, 10, 10) those survivors are promoted and set off full
collections, each of which also walks the ~140k objects built at startup (compiled packs, SQLAlchemy metadata,
routes). Measured on the durable pipeline (bench/RESULTS.md): 160-170 µs of event-loop CPU per exception, a
quarter of its cost; with the startup heap frozen and the young generation collected every 10,000 allocations
instead of 700, about 25 µs. Reference cycles are still collected, in rarer passes.

Those settings also turn on the batch pause (`batch_scope`): no automatic collection while a pipeline batch
is open, one collection of the two young generations when it ends. Collections during a batch only traverse and promote
objects about to be freed by reference counting; the pause takes the collector's cost from ~45-70 to
~13-30 µs per exception and removes the 40 ms (generation 1) and ~100 ms (full) passes that used to stall the
event loop mid-batch, where `breakdesk serve` answers requests too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: (generation 0 allocations, gen-0 passes per gen-1 pass, gen-1 passes per gen-2 pass).
THRESHOLDS = (10_000, 50, 100)


def tune_for_throughput() -> None:
    """Freeze what exists now (call once startup is done) and collect less often. Process-wide: only entry
    points call it, never library code, so embedding applications and tests keep their own settings."""
    global _batch_pause
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    _batch_pause = True


_batch_pause = False  # whether pipeline batches pause the collector (`tune_for_throughput` turns it on)
_open_batches = 0
_paused = False
_paused_at = 0.0
#: Longest stretch without a collection while batches overlap without pause.
MAX_PAUSE_S = 5.0


@contextmanager
def batch_scope() -> Iterator[None]:
    """Around one pipeline batch: with the collector's batch pause on, no automatic collection runs until
    the last open batch ends; then the two young generations are collected once.

    Why: a batch's hundreds of thousands of objects live until its write commits and are freed by reference
    counting right after, so every collection during a batch traverses objects that are about to die anyway,
    and promotes them, which makes the older generations' passes long — measured 40 ms (generation 1) and
    116 ms (full) stalls of the event loop that also answers the API, and ~50 µs of CPU per exception. After
    the batch, what remains young is small (a few milliseconds to traverse): its survivors, such as the
    memory's new index entries, go straight to the oldest generation, whose full passes CPython still starts
    by its own rule (when it grew by a quarter). Cycles made meanwhile wait for the end of the batch."""
    global _open_batches, _paused, _paused_at
    if not _batch_pause:
        yield
        return
    if _open_batches == 0 and gc.isenabled():
        gc.disable()
        _paused, _paused_at = True, time.monotonic()
    _open_batches += 1
    try:
        yield
    finally:
        _open_batches -= 1
        if _paused and _open_batches == 0:
            _paused = False
            gc.enable()
            gc.collect(1)
        elif _paused and time.monotonic() - _paused_at > MAX_PAUSE_S:
            # overlapping batches (a worker's and an API caller's) may keep one open at all times
            gc.collect(1)
            _paused_at = time.monotonic()
