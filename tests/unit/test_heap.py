"""The collector settings entry points apply: startup heap frozen, young generation collected less often, no
automatic collection while a pipeline batch is open."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from breakdesk import heap
from breakdesk.heap import THRESHOLDS, batch_scope, tune_for_throughput


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before, pause, enabled = gc.get_threshold(), heap._batch_pause, gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)
    heap._batch_pause = pause
    (gc.enable if enabled else gc.disable)()


def test_tune_freezes_what_exists_and_raises_thresholds(restore_gc: None) -> None:
    survivor = [object() for _ in range(10)]
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_for_throughput()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() >= len(survivor)  # the list and everything else alive was moved aside


def test_cycles_are_still_collected(restore_gc: None) -> None:
    tune_for_throughput()

    class Node:
        ref: object

    a, b = Node(), Node()
    a.ref, b.ref = b, a
    del a, b
    assert gc.collect() >= 2


def test_batches_pause_the_collector_only_once_an_entry_point_asked(restore_gc: None) -> None:
    heap._batch_pause = False  # library default: embedding applications and tests keep their collector
    with batch_scope():
        assert gc.isenabled()
    tune_for_throughput()
    with batch_scope():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_resumes_when_the_last_open_batch_ends(restore_gc: None) -> None:
    tune_for_throughput()
    outer, inner = batch_scope(), batch_scope()  # two tenants' batches in flight on one event loop
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert not gc.isenabled()
    inner.__exit__(None, None, None)
    assert gc.isenabled()
    with pytest.raises(RuntimeError), batch_scope():
        raise RuntimeError("a failed batch")
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled(restore_gc: None) -> None:
    tune_for_throughput()
    gc.disable()
    with batch_scope():
        pass
    assert not gc.isenabled()


def test_cycles_made_during_a_batch_are_collected_when_it_ends(restore_gc: None) -> None:
    tune_for_throughput()

    class Node:
        ref: object

    with batch_scope():
        a, b = Node(), Node()
        a.ref, b.ref = b, a
        probe = weakref.ref(a)
        del a, b
        assert probe() is not None  # no collection while the batch is open
    assert probe() is None


def test_a_batch_end_collects_both_young_generations(restore_gc: None) -> None:
    """Back-to-back batches leave the collector's own trigger no allocations to act on: the end of each batch
    must collect generation 1 too, or cycles that reached it would wait for a full pass."""
    tune_for_throughput()
    gc.collect()
    before = gc.get_count()[2]
    for _ in range(3):
        with batch_scope():
            pass
        assert gc.get_count()[1] == 0
    assert gc.get_count()[2] == before + 3  # one generation-1 collection per batch


def test_batches_that_always_overlap_still_see_collections(restore_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    tune_for_throughput()
    monkeypatch.setattr(heap, "MAX_PAUSE_S", 0.0)

    class Node:
        ref: object

    outer = batch_scope()
    outer.__enter__()
    with batch_scope():
        a, b = Node(), Node()
        a.ref, b.ref = b, a
        probe = weakref.ref(a)
        del a, b
    assert probe() is None and not gc.isenabled()  # collected at the inner end, still paused for the outer
    outer.__exit__(None, None, None)
    assert gc.isenabled()
