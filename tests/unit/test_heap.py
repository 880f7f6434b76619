"""The collector settings entry points apply: startup heap frozen, young generation collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from breakdesk.heap import THRESHOLDS, tune_for_throughput


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


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
