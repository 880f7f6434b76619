"""The memory compiled (text and index with mypyc, the scoring kernel with Cython) and interpreted (sources,
numpy scoring) must render, analyse and rank alike: the labeled retrieval set's cases are described and indexed
in memory, and its queries searched one by one and as the pipeline's batches, in this process and in one that
imports every module from source (`BREAKDESK_INTERPRETED=1`); every text, term, token, hit and score must match."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from breakdesk.memory.index import Query, TenantIndex
from breakdesk.memory.text import analyze, describe, key_tokens, similarity_keys
from breakdesk.packs.workspace import compile_domain_file
from breakdesk.pipeline.intake import intake
from breakdesk.pipeline.types import Submission
from breakdesk.store.cases import StoredCase

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "retrieval"
RECEIVED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def outcomes() -> list[Any]:
    """What the memory makes of the retrieval set: per case its text, key fields, terms and tokens; per query its
    top 5 from `search` (ids, scores, explanations) and from the pipeline's batched `similar_many`."""
    domains = {name: compile_domain_file(ROOT / "packs" / name / "domain.yaml") for name in ("finance", "healthcare")}
    out: list[Any] = []
    indexes: dict[str, TenantIndex] = {}
    lines = [json.loads(line) for line in (DATA / "cases.jsonl").open()]
    for i, line in enumerate(lines):
        domain = domains[line["domain"]]
        ir = intake(Submission(line["submission"], RECEIVED, i), line["tenant"], line["submission"]["exceptionId"],
                    domain)
        rec = ir.record
        body, entities = describe(rec, domain)
        counts = analyze(body, entities)
        tokens = key_tokens(entities, ir.fingerprint)
        out.append([body, entities, counts, tokens])
        idx = indexes.setdefault(line["tenant"], TenantIndex(line["tenant"]))
        idx.add(StoredCase(i + 1, line["tenant"], rec.exception_id, rec.exception_type, rec.source_system, None,
                           "OPEN", line["domain"], ir.fingerprint, entities, body, None, RECEIVED, None),
                counts, tokens)
    batches: dict[str, list[Query]] = {}
    for i, line in enumerate(json.loads(q) for q in (DATA / "queries.jsonl").open()):
        domain = domains[line["domain"]]
        ir = intake(Submission(line["query"], RECEIVED, i), line["tenant"], line["query"]["exceptionId"], domain)
        rec = ir.record
        body, entities = describe(rec, domain)
        q = Query(rec.exception_id, rec.exception_type, rec.source_system, analyze(body, entities), entities,
                  ir.fingerprint, key_fields=similarity_keys(domain, rec.exception_type))
        out.append([[tuple(h) for h in indexes[line["tenant"]].search(q, 5)]])
        batches.setdefault(line["tenant"], []).append(q)
    for tenant, queries in sorted(batches.items()):
        out.append([[tuple(c) for c in found] for found in indexes[tenant].similar_many(queries, 5)])
    return out


def test_the_memory_compiled_and_interpreted_finds_the_same_cases(
        both_builds: Callable[[Callable[[], Any], str], tuple[Any, Any]]) -> None:
    compiled, interpreted = both_builds(outcomes, "tests.memory.test_compiled")
    assert len(compiled) == len(interpreted) > 2000
    assert sum(1 for row in compiled if len(row) == 1 and len(row[0]) == 5) >= 150  # queries with 5 hits
    for i, (c, p) in enumerate(zip(compiled, interpreted, strict=True)):
        assert c == p, f"outcome {i} differs"
