"""The held-out protocol of `bench.memory --split`: the labeled queries split into a tuning half (A) and a
held-out half (B) by family, so that no family's relevant cases are seen while tuning and then scored again."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.memory import load_set, split_half  # noqa: E402


def test_split_keeps_each_family_in_one_half_and_both_halves_cover_both_domains() -> None:
    _, queries = load_set()
    half_of: dict[str, set[str]] = {}
    for q in queries:
        half_of.setdefault(q["family"], set()).add(split_half(q))
    assert all(len(h) == 1 for h in half_of.values())  # a family never straddles the halves
    sizes = Counter((q["domain"], split_half(q)) for q in queries)
    for domain in ("finance", "healthcare"):
        for half in ("A", "B"):
            assert sizes[(domain, half)] >= len(queries) // 8, sizes  # roughly balanced, never empty


def test_split_depends_on_the_family_only() -> None:
    assert split_half({"family": "healthcare-3", "query": {"exceptionId": "X"}}) == \
        split_half({"family": "healthcare-3", "query": {"exceptionId": "Y"}})
    assert {split_half({"family": f"f-{i}"}) for i in range(20)} == {"A", "B"}
