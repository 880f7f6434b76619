"""The hot path's shortcuts must not change what a search finds: precomputed field tokens, the two ways of
accumulating scores, and the per-batch field statistics (which must follow the index when it changes)."""

from __future__ import annotations

import dataclasses

import pytest
from test_text_and_index import case, fields_index, key_fields_index, key_query

from breakdesk.memory import index as index_module
from breakdesk.memory.index import Query, TenantIndex, query_tokens
from breakdesk.memory.text import analyze, key_tokens, term_counts


def as_rows(hits: list) -> list[tuple]:
    return [tuple(h) for h in hits]


def test_precomputed_tokens_give_the_same_hits() -> None:
    idx = fields_index()
    query = Query(None, "SETTLEMENT_FAIL", "custody-feed", term_counts("Broker failed to deliver the shares on time"),
                  {"counterparty": "Jefferies LLC", "failReason": "INSUFFICIENT_SECURITIES", "isin": "US0099"},
                  fingerprint="fp-1")
    with_tokens = dataclasses.replace(query, tokens=query_tokens(query.entities, query.fingerprint))
    assert as_rows(idx.search(with_tokens, 6)) == as_rows(idx.search(query, 6))
    # an entity literally named `fp` that carries the fingerprint reads as the fingerprint either way
    odd = dataclasses.replace(query, entities={**query.entities, "fp": "fp-1"})
    assert as_rows(idx.search(dataclasses.replace(odd, tokens=query_tokens(odd.entities, "fp-1")), 6)) == \
        as_rows(idx.search(odd, 6))


def test_a_case_added_with_precomputed_terms_and_tokens_indexes_like_one_analysed_by_the_index() -> None:
    a, b = TenantIndex("t1"), TenantIndex("t1")
    for i in range(30):
        c = case(f"C{i}", f"Counterparty short of securities {i % 4}", cid=i + 1, fp=f"fp{i % 3}",
                 entities={"counterparty": f"Bank {i % 5}", "failReason": f"R{i % 3}"})
        a.add(c)
        b.add(c, analyze(c.body, c.entities), key_tokens(c.entities, c.fingerprint))
    query = key_query("failReason", "counterparty")
    assert as_rows(a.search(query, 5)) == as_rows(b.search(query, 5))


@pytest.mark.parametrize("factor", [0, 10**9])  # always n-sized arrays / always the sorted distinct cases
def test_both_score_accumulations_give_the_same_hits(monkeypatch: pytest.MonkeyPatch, factor: int) -> None:
    idx = key_fields_index()
    queries = [key_query("failReason", "counterparty", "csd"), key_query()]
    expected = [as_rows(idx.search(q, 8)) for q in queries]
    monkeypatch.setattr(index_module, "SORT_FACTOR", factor)
    assert [as_rows(idx.search(q, 8)) for q in queries] == expected


def test_field_statistics_follow_the_index_between_searches() -> None:
    """A value shared by more and more cases stops counting as rare: the cached (df, idf) of a batch must be
    dropped when cases are added, or later searches would rank with stale weights."""
    idx = key_fields_index()
    query = Query(None, "SETTLEMENT_FAIL", "custody-feed", term_counts("Broker failed to deliver the shares on time"),
                  {"counterparty": "UBS AG", "failReason": "SSI_MISMATCH", "isin": "US0099"})
    assert "shares counterparty=UBS AG" in idx.search(query, 4)[0].why  # rare: R1 shares it
    # (the search filled the statistics)
    for i in range(60):  # UBS AG becomes the most common counterparty
        idx.add(case(f"U{i}", "Instruction pending", cid=1000 + i,
                     entities={"counterparty": "UBS AG", "failReason": "SSI_MISMATCH", "csd": "DTC"}))
    fresh = TenantIndex("t1")
    for eid in idx._slot:  # the same cases in a new index: no statistics computed before the additions
        stored = idx.case(eid)
        assert stored is not None
        fresh.add(stored)
    hits = idx.search(query, 6)
    assert as_rows(hits) == as_rows(fresh.search(query, 6))
    assert not any("UBS AG" in h.why for h in hits)  # now in most cases: it says nothing
