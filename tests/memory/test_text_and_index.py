"""Pure parts: the text rendering, the resident index's ranking, filters, typos and tenant checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from breakdesk.domain.models import ExceptionRecord
from breakdesk.memory.index import Filters, Query, TenantIndex
from breakdesk.memory.text import render, stem, term_counts, terms
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


def test_empty_index_returns_nothing() -> None:
    assert TenantIndex("t1").search(q("anything"), 5) == []
