"""The hot path's shortcuts must not change what a search finds: precomputed field tokens, the two ways of
accumulating scores, the per-batch field statistics (which must follow the index when it changes), and the
batched search, by its compiled kernel and by numpy alike."""

from __future__ import annotations

import dataclasses
import os
import random

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
    with_tokens = query.replace(tokens=query_tokens(query.entities, query.fingerprint))
    assert as_rows(idx.search(with_tokens, 6)) == as_rows(idx.search(query, 6))
    # an entity literally named `fp` that carries the fingerprint reads as the fingerprint either way
    odd = query.replace(entities={**query.entities, "fp": "fp-1"})
    assert as_rows(idx.search(odd.replace(tokens=query_tokens(odd.entities, "fp-1")), 6)) == \
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


# ---------------------------------------------------------------------------------------------- search_many

REASONS = ["LATE_AFFIRMATION", "SSI_MISMATCH", "INSUFFICIENT_SECURITIES", "COUNTERPARTY_FAIL"]
BANKS = ["Jefferies LLC", "UBS AG", "Barclays Capital Inc.", "Citigroup", "BNP Paribas", "HSBC"]
MESSAGES = ["Client affirmed after the cut-off", "Standing settlement instructions outdated",
            "Counterparty short of securities at the depository", "Broker failed to deliver the shares on time",
            "", "Instruction pending at the custodian",
            # longer texts sharing words with the others: BM25's length normalisation decides between them
            "Settlement instructions at the custodian outdated again, the client affirmed late after the cut-off",
            "Shares short at the depository: broker failed twice, instruction pending"]
#: Queries also say things no case says word for word: their text scores then depend on BM25's weights.
QUERY_MESSAGES = ["settlement instructions pending at the custodian", "broker short of shares, failed",
                  "client cut-off at the depository"]
KEYS = ("failReason", "counterparty", "csd")


def _entities(rng: random.Random, n: int) -> dict[str, str]:
    return {"failReason": rng.choice(REASONS), "counterparty": rng.choice(BANKS),
            "csd": "DTC" if rng.random() < 0.8 else "CREST", "side": rng.choice(["RECEIVE", "DELIVER"]),
            "tier": rng.choice(["TIER_1", "TIER_2", "TIER_3"]), "isin": f"US{rng.randrange(max(1, n // 3)):04d}"}


def busy_index(seed: int, n: int = 400, *, ascending: bool = True, replaced: int = 0,
               rerendered: int = 0) -> TenantIndex:
    """Settlement fails and a few cash breaks drawn from small vocabularies: big field lists (csd=DTC in
    most cases), many exact ties, messages shared word for word, ids in order or shuffled, some cases
    replaced (dead slots), some of the oldest re-rendered (new slots that keep their old place)."""
    rng = random.Random(seed)
    ids = [f"C{i:05d}" for i in range(n)]
    if not ascending:
        rng.shuffle(ids)
    idx = TenantIndex("t1")
    for i, eid in enumerate(ids):
        etype = "CASH_BREAK" if i % 9 == 0 else "SETTLEMENT_FAIL"
        idx.add(case(eid, rng.choice(MESSAGES), etype=etype, cid=i + 1, entities=_entities(rng, n),
                     source=rng.choice(["custody-feed", "swift"]), fp=f"fp{i % 50}"))
    for j in range(replaced):
        old = idx.case(ids[rng.randrange(n)])
        assert old is not None
        idx.add(dataclasses.replace(old, id=n + j + 1, status="RESOLVED", resolution={"summary": f"fixed {j}"}))
    for j in range(rerendered):
        old = idx.case(ids[j])
        assert old is not None
        idx.add(dataclasses.replace(old, id=n + replaced + j + 1, recency=old.recent))
    return idx


def busy_queries(seed: int, count: int = 60) -> list[Query]:
    rng = random.Random(seed + 1)
    out = []
    for i in range(count):
        ents = _entities(rng, 400)
        if i % 4 == 0:
            ents = {name: ents[name] for name in ("counterparty", "isin")}  # sharing little
        out.append(Query(f"Q{i}", "CASH_BREAK" if i % 7 == 0 else "SETTLEMENT_FAIL", rng.choice(["custody-feed", "swift"]),
                         term_counts(rng.choice(MESSAGES + QUERY_MESSAGES)), ents, f"fp{rng.randrange(60)}",
                         key_fields=KEYS if i % 3 else ()))
    return out


def full_rows(hits: list) -> list[tuple]:
    return [tuple(h) for h in hits]


@pytest.fixture(params=["kernel", "numpy"])
def scorer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The batched search scored by the compiled kernel (`breakdesk.memory._scoring`) and by numpy: both must
    find exactly what `search` finds. CI builds the kernel; a checkout without it tests numpy only."""
    if request.param == "numpy":
        monkeypatch.setattr(index_module, "_scoring", None)
    else:
        need_kernel()
    return str(request.param)


def need_kernel() -> None:
    """Skip without the compiled scoring kernel; under CI, which must build it, fail."""
    if index_module._scoring is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the scoring kernel is not built (setup.py builds it with Cython)")
        pytest.skip("the scoring kernel is not built")


@pytest.mark.parametrize(("ascending", "replaced"), [(True, 0), (False, 0), (True, 25)])
@pytest.mark.parametrize("pruning", ["default", "aggressive", "none"])
def test_batched_search_finds_what_search_finds(monkeypatch: pytest.MonkeyPatch, ascending: bool, replaced: int,
                                                pruning: str, scorer: str) -> None:
    """Same hits, same order, same scores and explanations as one `search` per query — whether the batch is
    pruned, pruned too far (and so redone in full) or not pruned, split into chunks or not, with ids in
    order or not and with replaced cases."""
    if pruning == "aggressive":
        monkeypatch.setattr(index_module, "PRUNE_GUESS", 1.0)
        monkeypatch.setattr(index_module, "PRUNE_MIN_POSTINGS", 1)
    elif pruning == "none":
        monkeypatch.setattr(index_module, "PRUNE_GUESS", 0.0)
    monkeypatch.setattr(index_module, "BATCH_CELLS", 4000)  # ~10 queries per chunk
    idx = busy_index(3, ascending=ascending, replaced=replaced)
    queries = busy_queries(3)
    indexed = idx.case("C00007")
    assert indexed is not None
    queries.append(idx.query_for(indexed, key_fields=KEYS))  # its own case is indexed: never its own hit
    for k in (1, 5, 12):
        expected = [full_rows(idx.search(q, k)) for q in queries]
        assert [full_rows(h) for h in idx.search_many(queries, k)] == expected
        bare = idx.search_many(queries, k, explain=False)
        assert [[(h.exception_id, h.score, h.resolution, h.lexical) for h in hits] for hits in bare] == \
            [[(row[0], row[1], row[6], row[7]) for row in rows] for rows in expected]
        assert all(h.why == "" for hits in bare for h in hits)
        # the pipeline's evidence, built straight from the ranking: the same ids, scores and resolutions
        assert [[(c.exception_id, c.score, c.summary, c.resolution) for c in found]
                for found in idx.similar_many(queries, k)] == \
            [[(row[0], row[1], "", row[6]) for row in rows] for rows in expected]
    assert all(h.exception_id != "C00007" for h in idx.search_many(queries, 5)[-1])


def test_pruning_skips_the_big_lists_and_stays_exact(scorer: str) -> None:
    """The common values (csd=DTC) are skipped for queries whose best cases share the rarer fields, and for
    most of those the k-th best score found proves the skip safe, so they are not scored again in full.
    (`_batch`'s steps called one by one: the index may be compiled, and compiled calls cannot be spied on.)"""
    idx = busy_index(5, n=600)
    queries = [q for q in busy_queries(5) if q.key_fields]
    dtc = idx._field_id["csd=dtc"]
    pruned = proven = 0
    skipped_dtc = False
    for q in queries:
        prep = (idx._query_terms(q.terms), *idx._query_fields(q, None))
        skipped, reach = idx._prune_plan(prep, None, 5)
        if not skipped:
            continue
        pruned += 1
        skipped_dtc |= dtc in skipped
        found = idx._score_chunk([q], [prep], [skipped], 5)[0]
        proven += found is not None and index_module._below(reach, found[0])
    assert pruned >= len(queries) // 2 and proven > pruned // 2 and skipped_dtc
    assert [full_rows(h) for h in idx.search_many(queries, 5)] == [full_rows(idx.search(q, 5)) for q in queries]


@pytest.mark.parametrize("ascending", [True, False])
def test_ties_are_ranked_by_exception_id(ascending: bool, scorer: str) -> None:
    """Thirty cases the query cannot tell apart: the k hits are the k smallest ids, in id order, from
    `search` and from `search_many`, whatever order the cases were indexed in (a fixed-size candidate pool
    used to cut such a tie at an arbitrary place)."""
    ids = [f"T{i:03d}" for i in range(30)]
    if not ascending:
        random.Random(1).shuffle(ids)
    idx = TenantIndex("t1")
    same = {"failReason": "SSI_MISMATCH", "counterparty": "UBS AG", "csd": "DTC"}
    for i, eid in enumerate(ids):
        idx.add(case(eid, "Standing settlement instructions outdated", cid=i + 1, entities=same))
    for i in range(20):
        idx.add(case(f"O{i:03d}", "Client affirmed after the cut-off", cid=100 + i,
                     entities={"failReason": "LATE_AFFIRMATION", "counterparty": f"Bank {i}", "csd": "DTC"}))
    query = Query("NEW", "SETTLEMENT_FAIL", "custody-feed", term_counts("Standing settlement instructions outdated"),
                  same, key_fields=KEYS)
    want = [f"T{i:03d}" for i in range(5)]
    assert [h.exception_id for h in idx.search(query, 5)] == want
    assert [h.exception_id for h in idx.search_many([query, query], 5)[1]] == want
    assert len({h.score for h in idx.search(query, 5)}) == 1


# ---------------------------------------------------------------------------------------------- triage window


@pytest.mark.parametrize(("ascending", "replaced", "rerendered"),
                         [(True, 0, 0), (False, 0, 0), (True, 25, 0), (True, 25, 300)])
@pytest.mark.parametrize("pruning", ["default", "aggressive", "none"])
def test_a_windowed_batch_finds_what_a_windowed_search_finds(monkeypatch: pytest.MonkeyPatch, ascending: bool,
                                                             replaced: int, rerendered: int, pruning: str,
                                                             scorer: str) -> None:
    """Triage looks through the latest cases only: exactly what `search` finds among them (same hits, order
    and scores), never an older case, pruned or not, chunked, with ids in order or not, replaced cases, and
    re-rendered old cases in the last slots (outside the window, which goes by the cases' places)."""
    if pruning == "aggressive":
        monkeypatch.setattr(index_module, "PRUNE_GUESS", 1.0)
        monkeypatch.setattr(index_module, "PRUNE_MIN_POSTINGS", 1)
    elif pruning == "none":
        monkeypatch.setattr(index_module, "PRUNE_GUESS", 0.0)
    monkeypatch.setattr(index_module, "BATCH_CELLS", 4000)
    idx = busy_index(3, ascending=ascending, replaced=replaced, rerendered=rerendered)
    window = 150
    # the latest 150 live cases by their places (a re-rendered case's is its old row's)
    latest = sorted((s for s in range(idx.slots) if idx._alive[s]), key=lambda s: int(idx._recent[s]))[-window:]
    in_window = set(latest)
    queries = busy_queries(3)
    inside = idx._cases[latest[-3]]
    assert inside is not None
    queries.append(idx.query_for(inside, key_fields=KEYS))  # its own case is in the window: never its own hit
    start = idx.window_start(window)
    assert start == min(in_window) > 0
    if not rerendered:  # the window is then the last 150 live slots
        assert int(idx._alive[start:idx.slots].sum()) == window
    for k in (1, 5, 12):
        want = [[(h.exception_id, h.score, "", h.resolution) for h in idx.search(q, k, window=window)]
                for q in queries]
        got = [[(c.exception_id, c.score, c.summary, c.resolution) for c in found]
               for found in idx.similar_many(queries, k, window)]
        assert got == want
        assert all(idx._slot[eid] in in_window for hits in got for eid, *_ in hits)
        assert all(len(hits) == k for hits in got)
    assert all(c.exception_id != inside.exception_id for c in idx.similar_many(queries, 5, window)[-1])
    # a window as large as the index (or none) is no window
    full = idx.similar_many(queries, 5)
    assert idx.similar_many(queries, 5, idx.slots) == full == idx.similar_many(queries, 5, 0)


def test_the_window_leaves_out_older_cases_however_alike(scorer: str) -> None:
    """The best match is the oldest case: triage's window does not see it, a search of every case does."""
    idx = TenantIndex("t1")
    same = {"failReason": "SSI_MISMATCH", "counterparty": "UBS AG", "csd": "DTC"}
    idx.add(case("OLD", "Standing settlement instructions outdated", cid=1, entities=same))
    for i in range(40):
        idx.add(case(f"N{i:03d}", "Client affirmed after the cut-off", cid=10 + i,
                     entities={"failReason": "LATE_AFFIRMATION", "counterparty": f"Bank {i % 4}", "csd": "DTC"}))
    query = Query("NEW", "SETTLEMENT_FAIL", "custody-feed", term_counts("Standing settlement instructions outdated"),
                  same, key_fields=KEYS)
    assert idx.search(query, 3)[0].exception_id == "OLD"
    assert idx.similar_many([query], 3)[0][0].exception_id == "OLD"
    windowed = idx.similar_many([query], 3, 40)[0]
    assert len(windowed) == 3 and all(c.exception_id.startswith("N") for c in windowed)


# ---------------------------------------------------------------------------------------------- text-led ranking

#: 150 made-up words, many one letter apart (typo variants count too): each in a few % of the cases, so none
#: is too common to be searched.
WORDS = [a + b for a in ("cus", "dep", "bro", "aff", "ins", "cut", "inv", "bor", "rec", "pen")
         for b in ("tod", "ory", "ker", "irm", "tor", "off", "ent", "row", "all", "ing", "ate", "ure", "ant", "ism", "ive")]


def text_index(seed: int, n: int = 300) -> tuple[TenantIndex, list[Query]]:
    """Cases that share no field and differ only in their words: messages of 2-14 words (repeats included), so
    BM25's term weights and length normalisation decide the ranking."""
    rng = random.Random(seed)
    idx = TenantIndex("t1")
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 15)))
        idx.add(case(f"W{i:04d}", words, cid=i + 1, entities={"ref": f"R{i}"}))
    queries = [Query(f"Q{i}", "SETTLEMENT_FAIL", "custody-feed",
                     term_counts(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 8)))), {})
               for i in range(40)]
    return idx, queries


def test_text_led_batches_rank_as_search_ranks(scorer: str) -> None:
    """Where the words alone rank the cases, the batched search finds what `search` finds, in its order, with
    its lexical scores."""
    idx, queries = text_index(11)
    assert sum(1 for q in queries if idx._query_terms(q.terms)) > 30
    for k in (1, 5, 12):
        want = [[(h.exception_id, h.score, h.lexical) for h in idx.search(q, k)] for q in queries]
        got = [[(h.exception_id, h.score, h.lexical) for h in hits] for hits in idx.search_many(queries, k)]
        assert got == want
    assert len({h[2] for hits in want for h in hits}) > 20  # (k = 12) many distinct text scores, not ties


def test_the_kernel_and_numpy_score_alike_unrounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel and numpy, on the same lists: every k-th best score, hit and text score equal as floats (hits
    and `search` round scores to 4 decimals; these are the raw float32 values)."""
    need_kernel()
    for idx, queries in (text_index(12), (busy_index(4, replaced=20), busy_queries(4))):
        preps = [(idx._query_terms(q.terms), *idx._query_fields(q, None)) for q in queries]
        for skips in ([{}] * len(preps), [idx._prune_plan(p, None, 5)[0] for p in preps]):
            kernel = idx._score_chunk(queries, preps, skips, 5)
            monkeypatch.setattr(index_module, "_scoring", None)
            numpy = idx._score_chunk(queries, preps, skips, 5)
            monkeypatch.undo()
            assert kernel == numpy
            assert sum(1 for f in kernel if f is not None) > len(queries) // 2
