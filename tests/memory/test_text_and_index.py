"""Pure parts: the text rendering, the resident index's ranking, filters, typos and tenant checks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from breakdesk.domain.models import ExceptionRecord
from breakdesk.memory.index import Filters, Query, TenantIndex
from breakdesk.memory.text import (
    analyze,
    describe,
    key_fields,
    render,
    semantic_text,
    stem,
    term_counts,
    terms,
)
from breakdesk.store.cases import StoredCase

NOW = datetime(2025, 3, 14, tzinfo=UTC)


def case(eid: str, body: str, *, tenant: str = "t1", etype: str = "SETTLEMENT_FAIL", cid: int = 0,
         entities: dict[str, str] | None = None, fp: str | None = None, status: str = "TRIAGED",
         resolution: dict | None = None, source: str = "custody-feed", age: int = 0) -> StoredCase:
    return StoredCase(cid or abs(hash(eid)) % 10**6, tenant, eid, etype, source, "MEDIUM", status, "finance", fp,
                      entities or {}, body, resolution, NOW - timedelta(days=age), None)


def rec(payload: dict, etype: str = "SETTLEMENT_FAIL") -> ExceptionRecord:
    return ExceptionRecord(exception_id="X", tenant_id="t1", source_system="custody-feed", exception_type=etype,
                           timestamp=NOW, raw_payload=payload, normalized_context={})


def test_render_ignores_field_order_numbers_and_dates() -> None:
    a = render(rec({"counterparty": "Jefferies LLC", "message": "short of stock", "notional": 1e6,
                    "tradeDate": "2025-03-12"}), None)
    b = render(rec({"tradeDate": "2025-03-13", "notional": 5.0, "message": "short of stock",
                    "counterparty": "Jefferies LLC"}), None)
    assert a == b
    assert "1000000" not in a and "2025" not in a
    assert "short of stock" in a and "counterparty: Jefferies LLC" in a


def test_payload_keys_render_in_the_order_of_their_text_whatever_their_type() -> None:
    """JSON keys are strings; keys of another type (a payload built in Python) still render as their text
    sorts: `10` before `2`, numbers and words in one order."""
    body = render(rec({"zeta": "last", "alpha": "first", "error": {10: "ten", 2: "two", "b": "bee"}}), None)
    lines = body.split("\n")
    assert lines.index("alpha: first") < lines.index("zeta: last")
    assert lines.index("10: ten") < lines.index("2: two") < lines.index("b: bee")


def test_terms_split_camel_case_stem_and_drop_stop_words() -> None:
    assert terms("failReason LATE_AFFIRMATION of the settlements") == ["fail", "reason", "late", "affirmation",
                                                                        "settlement"]
    assert stem("failed") == "fail" and stem("class") == "class"


def small_index() -> TenantIndex:
    idx = TenantIndex("t1")
    bodies = {
        "A": "settlement fail counterparty Jefferies short of securities at the depository",
        "B": "settlement fail counterparty Jefferies short of securities delivery pending",
        "C": "settlement fail counterparty Barclays standing settlement instructions outdated",
        "D": "cash break unbooked bank fee on the nostro statement",
    }
    for i, (eid, body) in enumerate(bodies.items(), 1):
        idx.add(case(eid, body, cid=i, etype="CASH_BREAK" if eid == "D" else "SETTLEMENT_FAIL",
                     entities={"settleId": f"ST-{eid}"}))
    return idx


def q(text: str, etype: str = "SETTLEMENT_FAIL", **kw: object) -> Query:
    return Query(kw.get("eid"), etype, "custody-feed", term_counts(text), kw.get("entities") or {},  # type: ignore[arg-type]
                 kw.get("fp"), kw.get("vector"))  # type: ignore[arg-type]


def test_ranking_on_hand_made_cases() -> None:
    idx = small_index()
    hits = idx.search(q("Jefferies is short of securities"), 3)
    assert [h.exception_id for h in hits[:2]] == ["A", "B"] or [h.exception_id for h in hits[:2]] == ["B", "A"]
    assert hits[0].score >= hits[-1].score
    assert "short" in hits[0].matched_terms and "same type SETTLEMENT_FAIL" in hits[0].why


def test_shared_entity_ids_and_fingerprint_boost() -> None:
    idx = small_index()
    hits = idx.search(q("settlement fail", entities={"settleId": "ST-C"}), 4)
    assert hits[0].exception_id == "C"
    assert hits[0].shared_entities == ("settleId=ST-C",) and "shares settleId=ST-C" in hits[0].why


def test_typos_are_corrected_to_a_known_term() -> None:
    idx = small_index()
    hits = idx.search(q("unbooked bank fee on the nostro statment", etype="CASH_BREAK"), 1)
    assert hits[0].exception_id == "D"
    assert "statement" in hits[0].matched_terms


def test_filters_and_exclusions() -> None:
    idx = small_index()
    only_sf = idx.search(q("settlement bank fee"), 5, Filters(types=("SETTLEMENT_FAIL",)))
    assert only_sf and all(h.exception_type == "SETTLEMENT_FAIL" for h in only_sf)
    assert [h.exception_id for h in idx.search(q("settlement bank fee"), 5, Filters(types=("CASH_BREAK",)))] == ["D"]
    rest = idx.search(q("settlement fail Jefferies short"), 5, Filters(exclude=frozenset({"A", "B"})))
    assert rest and not {h.exception_id for h in rest} & {"A", "B"}
    assert idx.search(q("Jefferies short"), 5, Filters(resolved_only=True)) == []
    assert idx.search(q("Jefferies", eid="A"), 5)[0].exception_id != "A"  # never the query itself
    assert idx.search(q("Jefferies"), 5, Filters(since=NOW + timedelta(days=1))) == []


def test_replacing_a_case_keeps_one_copy_and_remembers_the_resolution() -> None:
    idx = small_index()
    idx.add(case("A", "settlement fail Jefferies resolved by recall", cid=10, fp="fp1",
                 resolution={"summary": "resolved; playbook sf-chase"}, status="RESOLVED"))
    assert len(idx) == 4
    hits = idx.search(q("Jefferies", eid="B"), 5, Filters(resolved_only=True))
    assert [h.exception_id for h in hits] == ["A"] and hits[0].resolution == "resolved; playbook sf-chase"
    last = idx.last_resolution("fp1")
    assert last is not None and last.exception_id == "A"


def _settlement_fails(n: int) -> TenantIndex:
    idx = TenantIndex("t1")
    for i in range(n):
        idx.add(case(f"C{i:04d}", f"settlement word{i}", cid=i + 1))
    return idx


def _rerender(idx: TenantIndex, eids: list[str]) -> None:
    """As the indexer's re-rendering: each case again in a new row (and slot) that keeps its old place."""
    for eid in eids:
        old = idx.case(eid)
        assert old is not None
        idx.add(dataclasses.replace(old, id=idx.last_case_id + 1, recency=old.recent))


#: shares nothing with any case: triage still shows the latest cases of its type
UNLIKE = Query(None, "SETTLEMENT_FAIL", "custody-feed", term_counts("zzzunknown"), {})


@pytest.mark.parametrize("rerendered", [range(100), range(260, 270)], ids=["outside-the-window", "inside-it"])
def test_the_latest_cases_of_the_type_are_the_latest_by_place_after_a_re_rendering(rerendered: range) -> None:
    """When too little is shared, the window's latest cases of the query's type fill the hits: by their
    places, whichever slots re-rendered cases took (old ones outside the window, or ones inside it that are
    not the latest), and never none because the last slots are outside the window."""
    idx = _settlement_fails(300)
    before = [h.exception_id for h in idx.search(UNLIKE, 5, window=50)]
    assert before == [f"C{i:04d}" for i in range(295, 300)]
    _rerender(idx, [f"C{i:04d}" for i in rerendered])
    assert [h.exception_id for h in idx.search(UNLIKE, 5, window=50)] == before
    assert [c.exception_id for c in idx.similar_many([UNLIKE], 5, 50)[0]] == before


def test_a_resident_index_and_a_fresh_one_fill_up_alike_after_two_re_renderings() -> None:
    idx = _settlement_fails(300)
    old = [f"C{i:04d}" for i in range(40)]
    _rerender(idx, old)
    _rerender(idx, old)  # (the first re-rendering's slots are dead now)
    fresh = TenantIndex("t1")
    for c in sorted((c for c in idx._cases if c is not None), key=lambda c: c.id):
        fresh.add(c)
    assert [c.exception_id for c in idx.similar_many([UNLIKE], 5, 50)[0]] == \
        [c.exception_id for c in fresh.similar_many([UNLIKE], 5, 50)[0]] == [f"C{i:04d}" for i in range(295, 300)]


def test_the_triage_window_counts_live_cases_not_the_slots_of_replaced_ones() -> None:
    """A replaced case takes a new slot; its old one does not count towards the latest cases, so the window
    holds the same cases as in an index loaded afresh from the rows (which has no old slots)."""
    idx = TenantIndex("t1")
    for n, eid in enumerate("ABCD", 1):
        idx.add(case(eid, f"settlement fail {eid}", cid=n))
    idx.add(case("A", "settlement fail A", cid=5, status="IN_PROGRESS"))
    idx.add(case("B", "settlement fail B", cid=6, status="IN_PROGRESS"))
    fresh = TenantIndex("t1")
    for eid, cid in (("C", 3), ("D", 4), ("A", 5), ("B", 6)):
        fresh.add(case(eid, f"settlement fail {eid}", cid=cid, status="TRIAGED" if cid < 5 else "IN_PROGRESS"))
    for window in (1, 3):
        assert (idx._eids[idx.window_start(window):][-window:] == fresh._eids[fresh.window_start(window):]
                == ["C", "D", "A", "B"][-window:])
        assert sum(idx._alive[idx.window_start(window):idx.slots]) == window
    assert idx.window_start(4) == fresh.window_start(4) == 0  # no more live cases than the window


def test_cases_without_words_keep_none_when_others_have_them() -> None:
    """A structured feed's cases have no words: a later case's words, a replaced case and a search must not
    give them any (per-case entries are slices of shared flat arrays)."""
    idx = TenantIndex("t1")
    for i in range(3):
        idx.add(case(f"S{i}", "", cid=i + 1, entities={"ref": f"R{i}"}), counts={}, tokens=[f"ref=r{i}"])
    idx.add(case("W", "settlement fail at the depository", cid=10))
    idx.add(case("S1", "", cid=11, entities={"ref": "R1"}), counts={}, tokens=["ref=r1"])  # replaced
    assert [h.exception_id for h in idx.search(q("settlement fail"), 1)] == ["W"]
    hits = idx.search(q("settlement fail ref R2", entities={"ref": "R2"}), 5)
    by_id = {h.exception_id: h for h in hits}
    assert by_id["S2"].matched_terms == () and by_id["W"].matched_terms != ()
    assert by_id["S2"].shared_entities == ("ref=R2",)
    assert len(idx) == 4 and idx.case("S1") is not None and idx.case("S1").id == 11


def test_the_index_holds_about_one_tracked_object_per_case() -> None:
    """Postings and per-case entries are not objects the garbage collector tracks: its full passes walk every
    tracked object and stall the event loop (`TenantIndex`). What remains is the case itself."""
    import gc

    gc.collect()
    before = len(gc.get_objects())
    idx = TenantIndex("t1")
    for i in range(2000):
        idx.add(case(f"C{i:05d}", f"settlement fail at depository {i % 7} word{i}", cid=i + 1,
                     entities={"ref": f"R{i}", "csd": f"D{i % 5}"}))
    gc.collect()
    held = len(gc.get_objects()) - before
    assert held < 2000 + 2000 + 200  # a case, a word per case (word{i}), a few dozen lists and tables


def test_an_index_refuses_another_tenants_case() -> None:
    idx = TenantIndex("t1")
    with pytest.raises(ValueError):
        idx.add(case("Z", "anything", tenant="t2"))


def test_vectors_fuse_with_lexical_and_explain() -> None:
    idx = small_index()
    rng = np.random.default_rng(0)
    vecs = {e: rng.standard_normal(8).astype(np.float32) for e in "ABCD"}
    idx.add_vectors("m", list(vecs.items()), 4)
    hits = idx.search(q("no shared words at all", vector=vecs["C"]), 2, model="m")
    assert hits[0].exception_id == "C" and hits[0].semantic is not None and hits[0].semantic > 0.99
    assert "semantic" in hits[0].why


def test_nearest_from_the_database_ranks_filtered_cases_as_resident_vectors_do() -> None:
    """pgvector returns the tenant's N nearest before filters; a case outside them is at most as near as the
    N-th. Bounding it by the nearest that passed the filter instead credited an unrelated case (cosine 0)
    with a high cosine, above the truly nearest allowed case."""

    def toward(cos: float) -> np.ndarray:  # a unit vector at cosine `cos` from the query's
        v = np.zeros(8, np.float32)
        v[0], v[1] = cos, np.sqrt(1 - cos * cos)
        return v

    idx = TenantIndex("t1")
    vecs = {"Q": toward(1.0)}
    idx.add(case("Q", "counterparty short of securities", cid=1, etype="A"))
    for i in range(12):  # of the type filtered out: nearer, and farther
        idx.add(case(f"A{i:02}", f"unrelated words {i}", cid=10 + i, etype="A"))
        vecs[f"A{i:02}"] = toward(0.99 - i * 0.001 if i < 6 else 0.3 - i * 0.01)
    idx.add(case("B-near", "nothing in common", cid=50, etype="B"))
    vecs["B-near"] = toward(0.95)
    idx.add(case("B-far", "securities", cid=51, etype="B"))  # a shared word, an orthogonal vector
    vecs["B-far"] = np.eye(8, dtype=np.float32)[2]
    idx.add_vectors("m", list(vecs.items()), 99)
    query = idx.query_for(idx.case("Q"), "m")  # type: ignore[arg-type]
    only_b = Filters(types=("B",))
    nearest = sorted(((e, float(v @ query.vector)) for e, v in vecs.items()), key=lambda x: -x[1])[:14]
    assert "B-near" in dict(nearest) and "B-far" not in dict(nearest) and nearest[-1][1] < 0.3
    resident = idx.search(query, 2, only_b, "m")
    from_db = idx.search(query, 2, only_b, "m", nearest=nearest)
    assert [h.exception_id for h in from_db] == [h.exception_id for h in resident] == ["B-near", "B-far"]
    far = next(h for h in from_db if h.exception_id == "B-far")
    assert far.semantic is not None and far.semantic <= nearest[-1][1] + 1e-6


def test_a_case_without_a_vector_has_no_cosine_when_the_database_listed_every_vector() -> None:
    """pgvector returned fewer neighbours than asked: every case with a vector (passing the filters) is in
    the list, so one outside it has none — a cosine of 0, as with resident vectors, not the N-th's."""
    idx = small_index()
    nearest = [("A", 0.9), ("C", 0.8)]  # B and D have no vector yet
    query = q("counterparty short", vector=np.ones(8, np.float32))
    complete = {h.exception_id: h.semantic for h in idx.search(query, 4, nearest=nearest, nearest_complete=True)}
    partial = {h.exception_id: h.semantic for h in idx.search(query, 4, nearest=nearest)}
    assert complete["A"] == partial["A"] == pytest.approx(0.9)
    assert complete["B"] == 0.0 and partial["B"] == pytest.approx(0.8)


def test_cases_newer_than_every_vector_are_searched_with_vectors() -> None:
    """The vector matrix grows with the slots that have vectors; cases past it (indexed, not yet embedded)
    are candidates with a cosine of 0 — a search with resident vectors over them failed on the arrays'
    shapes once a tenant outgrew the matrix's first allocation."""
    idx = TenantIndex("t1")
    for i in range(1100):
        idx.add(case(f"E-{i:05d}", "filler words" if i < 1090 else "counterparty short of securities at DTC",
                     cid=i + 1))
    idx.add_vectors("m", [(f"E-{i:05d}", np.ones(4, np.float32)) for i in range(10)], 10)
    unit = np.full(4, 0.5, np.float32)
    assert idx.vectors["m"].similarity(unit, np.array([3, 1095, 5000])).tolist() == [1.0, 0.0, 0.0]
    hits = idx.search(q("counterparty short of securities", vector=unit), 20, model="m")
    newer = [h for h in hits if int(h.exception_id[2:]) >= 1090]
    assert len(hits) == 20 and len(newer) == 10 and all(h.semantic == 0.0 for h in newer)


def test_empty_index_returns_nothing() -> None:
    assert TenantIndex("t1").search(q("anything"), 5) == []


def test_key_fields_are_short_categorical_values_and_ids_not_prose_numbers_or_dates() -> None:
    r = rec({"settleId": "ST-1", "counterparty": "Jefferies LLC", "failReason": "SSI_MISMATCH",
             "message": "Counterparty changed custodian", "notional": 1e6, "tradeDate": "2025-03-12",
             "mismatchFields": ["quantity", "price"], "isHighAlert": False})
    fields = key_fields(r, None)
    assert fields == {"counterparty": "Jefferies LLC", "failReason": "SSI_MISMATCH", "isHighAlert": "no",
                      "mismatchFields": "price, quantity", "settleId": "ST-1"}
    body, same = describe(r, None)
    assert same == fields and body == render(r, None)
    assert "mismatch fields: price, quantity" in body  # lists sorted: the source's order says nothing


def test_text_terms_leave_out_the_header_and_the_key_field_lines() -> None:
    body, fields = describe(rec({"counterparty": "Jefferies LLC", "message": "Broker short of stock"}), None)
    counts = analyze(body, fields)
    assert set(counts) == {"broker", "short", "stock"}  # not "settlement", "custody", "jefferies", "counterparty"
    # the embedder reads the message and categorical values in words, not codes and ids
    sem = semantic_text(body + "\nsettle id: ST-9", {**fields, "settleId": "ST-9"})
    assert "Broker short of stock" in sem and "counterparty: Jefferies LLC" in sem and "ST-9" not in sem


def fields_index() -> TenantIndex:
    """Same type; the family (F1..F3) shares counterparty and reason with the query and words its cause
    differently; D1 repeats the query's message word for word for another counterparty and reason; D2
    shares only the (rare) instrument."""
    idx = TenantIndex("t1")
    family = {"counterparty": "Jefferies LLC", "failReason": "INSUFFICIENT_SECURITIES"}
    cases = [
        ("F1", "Counterparty short of securities at the depository", {**family, "isin": "US0001"}),
        ("F2", "Delivering party lacked inventory", {**family, "isin": "US0002"}),
        ("F3", "Not enough stock to deliver", {**family, "isin": "US0003"}),
        ("D1", "Broker failed to deliver the shares on time", {"counterparty": "UBS AG",
                                                               "failReason": "LATE_AFFIRMATION", "isin": "US0004"}),
        ("D2", "Settlement instructions outdated", {"counterparty": "Barclays", "failReason": "SSI_MISMATCH",
                                                    "isin": "US0099"}),
    ]
    for i in range(40):  # other settlement fails, so that field values have realistic frequencies
        cases.append((f"X{i}", f"Instruction pending reason {i % 5}", {
            "counterparty": f"Bank {i % 8}", "failReason": f"REASON_{i % 4}", "isin": f"US1{i:03d}"}))
    for i, (eid, msg, ents) in enumerate(cases, 1):
        idx.add(case(eid, msg, cid=i, entities=ents))
    return idx


def test_shared_counterparty_and_reason_outrank_a_verbatim_message_or_a_rare_coincidence() -> None:
    idx = fields_index()
    query = q("Broker failed to deliver the shares on time",
              entities={"counterparty": "Jefferies LLC", "failReason": "INSUFFICIENT_SECURITIES", "isin": "US0099"})
    hits = idx.search(query, 5)
    assert {h.exception_id for h in hits[:3]} == {"F1", "F2", "F3"}
    assert set(hits[0].shared_entities) == {"counterparty=Jefferies LLC", "failReason=INSUFFICIENT_SECURITIES"}
    assert "shares counterparty=Jefferies LLC" in hits[0].why or "shares failReason" in hits[0].why
    assert {h.exception_id for h in hits[3:]} == {"D1", "D2"}  # then the verbatim message and the coincidence
    assert all(0.0 <= h.score <= 1.0 for h in hits) and hits[0].score > hits[3].score


def test_a_misspelling_inside_an_indexed_case_still_matches() -> None:
    idx = small_index()
    idx.add(case("E", "cash break unbooked bank fee on the nostro statment", cid=5, etype="CASH_BREAK"))
    hits = idx.search(q("unbooked bank fee on the nostro statement", etype="CASH_BREAK"), 2)
    assert {h.exception_id for h in hits} == {"D", "E"}
    assert "statment" in next(h for h in hits if h.exception_id == "E").matched_terms


def test_cases_of_the_same_type_are_found_when_nothing_else_is_shared() -> None:
    idx = small_index()
    hits = idx.search(q("completely different words", etype="CASH_BREAK"), 3)
    assert [h.exception_id for h in hits] == ["D"] and hits[0].why.startswith("same type CASH_BREAK")


def key_fields_index() -> TenantIndex:
    """Settlement fails. K1, K2: the query's failReason, counterparty and depository (csd), worded otherwise.
    P1: the query's message word for word and two of the three (another depository). R1: the query's message
    and its rare instrument, nothing else. X*: other fails, almost all at DTC (a common value)."""
    idx = TenantIndex("t1")
    key = {"failReason": "LATE_AFFIRMATION", "counterparty": "Jefferies LLC", "csd": "DTC"}
    cases = [
        ("K1", "Client affirmed after the cut-off", {**key, "isin": "US0001"}),
        ("K2", "Affirmation arrived too late for settlement", {**key, "isin": "US0002"}),
        ("P1", "Broker failed to deliver the shares on time", {**key, "csd": "EUROCLEAR", "isin": "US0003"}),
        ("R1", "Broker failed to deliver the shares on time", {"failReason": "SSI_MISMATCH", "counterparty": "UBS AG",
                                                                "csd": "DTC", "isin": "US0099"}),
    ]
    for i in range(40):
        cases.append((f"X{i}", f"Instruction pending reason {i % 5}", {
            "failReason": f"REASON_{i % 4}", "counterparty": f"Bank {i % 8}", "csd": "DTC" if i % 10 else "CREST",
            "isin": f"US1{i:03d}"}))
    for i, (eid, msg, ents) in enumerate(cases, 1):
        idx.add(case(eid, msg, cid=i, entities=ents))
    return idx


KEY_QUERY_FIELDS = {"failReason": "LATE_AFFIRMATION", "counterparty": "Jefferies LLC", "csd": "DTC", "isin": "US0099"}


def key_query(*key_fields: str) -> Query:
    return Query(None, "SETTLEMENT_FAIL", "custody-feed", term_counts("Broker failed to deliver the shares on time"),
                 KEY_QUERY_FIELDS, key_fields=key_fields)


def test_declared_key_fields_decide_the_same_problem() -> None:
    idx = key_fields_index()
    hits = idx.search(key_query("failReason", "counterparty", "csd"), 4)
    assert [h.exception_id for h in hits[:3]] in (["K1", "K2", "P1"], ["K2", "K1", "P1"])
    assert hits[0].score > hits[2].score > hits[3].score
    top = hits[0]
    assert "same problem (3 of 3 key fields): failReason=LATE_AFFIRMATION, counterparty=Jefferies LLC, csd=DTC" \
        in top.why
    assert top.shared_entities[:3] == ("failReason=LATE_AFFIRMATION", "counterparty=Jefferies LLC", "csd=DTC")
    assert len(set(top.shared_entities)) == len(top.shared_entities)  # each shared fact once
    assert "shares" not in top.why or "DTC" not in top.why.split("shares", 1)[1]
    assert "same problem (2 of 3 key fields)" in hits[2].why
    # Without the declaration the verbatim message with two shared fields of three wins.
    plain = idx.search(key_query(), 4)
    assert plain[0].exception_id == "P1" and "same problem" not in plain[0].why


def test_a_key_field_the_query_lacks_is_left_out_of_the_share() -> None:
    idx = key_fields_index()
    hits = idx.search(key_query("failReason", "counterparty", "csd", "regime"), 2)  # no `regime` in the query
    assert {h.exception_id for h in hits} == {"K1", "K2"}
    assert "same problem (3 of 3 key fields)" in hits[0].why and 0.0 <= hits[0].score <= 1.0


def test_describe_keeps_declared_key_fields_whatever_their_name_or_form() -> None:
    from breakdesk.packs.compiler import compile_domain
    from breakdesk.packs.schema import DomainPack

    domain = compile_domain(DomainPack.model_validate({
        "name": "d", "version": "1.0.0",
        "exceptionTypes": {
            "PARENT": {"similarity": {"keyFields": ["reason", "codes", "level"]}},
            "CHILD": {"parent": "PARENT"},
        },
    }))
    r = ExceptionRecord(exception_id="X", tenant_id="t1", source_system="s", exception_type="CHILD", timestamp=NOW,
                        raw_payload={"message": "m"},
                        normalized_context={"reason": "ACCOUNT_CLOSED", "codes": ["b", "a"], "level": 3})
    fields = key_fields(r, domain)
    # `reason` reads as prose and numbers are not fields unless the pack declares them
    assert fields == {"reason": "ACCOUNT_CLOSED", "codes": "a, b", "level": "3"}
    assert "reason" not in key_fields(rec({"reason": "ACCOUNT_CLOSED"}), None)


def test_a_query_is_changed_by_copy_only() -> None:
    q = Query("E-1", "SETTLEMENT_FAIL", "custody", {"short": 1.0}, {"settleId": "ST-1"}, "fp-1")
    with_tokens = q.replace(tokens=("settleid=st-1", "fp:fp-1"))
    assert with_tokens.tokens == ("settleid=st-1", "fp:fp-1") and q.tokens is None
    assert (with_tokens.exception_id, with_tokens.entities, with_tokens.fingerprint) == ("E-1", {"settleId": "ST-1"},
                                                                                      "fp-1")
    with pytest.raises(TypeError, match="no field 'vektor'"):
        q.replace(vektor=None)
