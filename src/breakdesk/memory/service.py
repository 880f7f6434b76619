"""The similar-case memory of one process: resident tenant indexes over the store, the hot-path helpers the
orchestrator uses, and `similar()` for the API and the CLI.

Tenants never share anything here: each has its own `TenantIndex`, filled only from rows read with its own
tenant id, and every hit is checked against the tenant asked for.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from breakdesk import envvars
from breakdesk.domain.models import ExceptionRecord
from breakdesk.memory.embedders import Embedder, EmbedderError, configuration, embedder_for
from breakdesk.memory.index import Filters, Hit, Query, TenantIndex, case_query, text_query
from breakdesk.memory.resolution import resolution_headline
from breakdesk.memory.sidecar import Item, RemoteSearch, SearchProcess, child_url
from breakdesk.memory.text import (
    case_doc,
    describe,
    key_fields,
    render,
    semantic_text,
    similarity_keys,
    type_rendering,
)
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.packs.schema import EmbeddingSettings
from breakdesk.pipeline.triage import shown_id
from breakdesk.pipeline.types import IntakeResult, SimilarCase
from breakdesk.slicing import Slicer
from breakdesk.store.cases import CaseDoc, CaseHead, StoredCase, pgvector_available

SYNC_PAGE = 5000
#: Cases (index slots) kept resident across all tenants before the least recently used tenants' indexes
#: are dropped; a dropped index reloads from the store on its tenant's next search. A server with many
#: tenants therefore holds the busy ones, not every tenant it ever served. A resident case costs ~2.6 KB
#: (`python -m bench.memory --only heap`: the retrieval set's payloads, case row included), so the default is
#: ~0.5 GB at most.
#: Env BREAKDESK_MEMORY_MAX_CASES.
MAX_RESIDENT_CASES = 200_000
#: Triage's similar cases come from the tenant's latest this many cases (`TenantIndex.window_start`: the
#: hot path's search costs in proportion to the tenant's size otherwise); `similar` (API, CLI) searches
#: them all. Env BREAKDESK_MEMORY_TRIAGE_WINDOW; 0 = every case.
TRIAGE_WINDOW = 20_000
#: A batch's similar-case searches run in slices of about this many seconds, the event loop free in between
#: (a server answers requests on the same loop). Batched searching gains little beyond a few dozen queries
#: per call, so slices cost no throughput (bench/RESULTS.md).
SEARCH_SLICE_S = 0.002
#: A filtered similar-cases query on pgvector compares the vectors of the cases passing its filters exactly,
#: found by case id, when at most this many pass (the resident index knows which): cheaper there than walking
#: the HNSW graph for the few that pass, after a scan of the tenant's cases to find them. Measured at 100k
#: cases (bench/RESULTS.md): ≈ 3 ms + 2.8 µs per passing case, so ≈ 11 ms here, against 16-32 ms by HNSW.
PGVECTOR_EXACT_CASES = 3_000
SEARCH_FIRST_SLICE = 16
SEARCH_MAX_SLICE = 512

log = logging.getLogger(__name__)


def _check_tenant(case: StoredCase, tenant_id: str) -> None:
    """Defence in depth: every read is tenant-scoped already."""
    if case.tenant_id != tenant_id:
        raise RuntimeError("memory: a case of another tenant reached this tenant's index")


def _cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def last_resolution_text(case: StoredCase) -> str:
    """How a fingerprint's last resolved case ended and which it was, for triage's recurrence text (its id
    shown as similar cases show theirs)."""
    return f"{resolution_headline(case.resolution)} ({shown_id(case.exception_id)})"


def add_last_resolutions(idx: TenantIndex, fingerprints: Iterable[str | None], into: dict[str, str]) -> None:
    """`last_resolution_text` of each fingerprint's last resolved case in `idx`, into `into` where it has
    none yet (fingerprints without one are left out)."""
    for fp in fingerprints:
        if fp and fp not in into:
            last = idx.last_resolution(fp)
            if last is not None and last.resolution:
                into[fp] = last_resolution_text(last)


class NotIndexed(LookupError):
    """The exception is unknown to this tenant (neither indexed nor stored)."""


@dataclass(frozen=True, slots=True)
class SimilarResult:
    exception_id: str
    hits: list[Hit]
    model: str | None
    vector_source: str  # "none" | "resident" | "pgvector"
    query_embedding_ms: float
    search_ms: float
    indexed_cases: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "exceptionId": self.exception_id,
            "model": self.model,
            "vectorSource": self.vector_source,
            "indexedCases": self.indexed_cases,
            "queryEmbeddingMs": round(self.query_embedding_ms, 3),
            "searchMs": round(self.search_ms, 3),
            "items": [h.as_dict() for h in self.hits],
        }


@dataclass(slots=True)
class _Prepared:
    body: str
    entities: dict[str, str]


@dataclass(slots=True)
class _Pending:
    """A case the hot path analysed before its row was written: its text terms and structured tokens, and the
    row it asked to write (`BatchMemory.case_doc`), so the next sync indexes that row without reading it back
    or analysing it again."""

    counts: dict[str, float]
    tokens: list[str]
    doc: CaseDoc | None = None

    def wrote(self, head: CaseHead) -> CaseDoc | None:
        """What this process asked to write, if row `head` is that (None: another writer's row, or replaced
        or resolved since: it must be read)."""
        d = self.doc
        if (d is None or head.resolved or d.resolution is not None or d.exception_id != head.exception_id
                or d.status != head.status or d.severity != head.severity or d.fingerprint != head.fingerprint
                or d.rendering != head.rendering or head.recency is not None):  # (re-rendered meanwhile)
            return None
        return d


@dataclass(slots=True)
class BatchMemory:
    """What the memory contributes to one pipeline batch: similar cases and last resolutions to show in
    triage, and the case rows to write with the batch (analysed once, here)."""

    similar: dict[str, tuple[SimilarCase, ...]] = field(default_factory=dict)
    last_resolution: dict[str, str] = field(default_factory=dict)
    _prepared: dict[str, _Prepared] = field(default_factory=dict)
    domain: CompiledDomainPack | None = None
    #: The tenant's pending cases (`Memory._pending`) when the batch keeps a resident index in step.
    _pending: dict[str, _Pending] | None = None
    #: The search process's answers, when it searches (`memory.sidecar`): `similar` and `last_resolution`
    #: are its dicts, filled as answers arrive; `wait` before reading an exception's.
    remote: RemoteSearch | None = None

    #: Searches the rest in this process if the search process fails (`Memory._finish_here`, bound).
    _finish: Callable[[BatchMemory], Awaitable[None]] | None = None
    #: exception id -> the exception the search process was sent under that id (`Memory.start_batch`).
    _sent: dict[str, IntakeResult] = field(default_factory=dict)

    async def wait(self, exception_id: str) -> None:
        """Until the similar cases and last resolutions for `exception_id` are known (at once in process)."""
        remote = self.remote
        if remote is None or exception_id in remote.skip or (exception_id in remote.similar and remote.error is None):
            return
        await remote.wait(exception_id)
        if remote.error is not None and self._finish is not None:
            finish, self._finish = self._finish, None
            log.warning("memory: searching the rest of the batch in this process (%s)", remote.error)
            try:
                await finish(self)
            except Exception as exc:  # (as any memory failure: the batch goes on without what is missing)
                log.warning("memory: the rest of the batch goes without similar cases: %s", exc)

    def case_doc(self, ir: IntakeResult, *, status: str, severity: str | None, received_at: datetime) -> CaseDoc:
        rec = ir.record
        prep = self._prepared.get(rec.exception_id)
        if prep is None:
            return case_doc(rec, self.domain, status=status, received_at=received_at, severity=severity,
                            fingerprint=ir.fingerprint)
        doc = CaseDoc(
            exception_id=rec.exception_id, exception_type=rec.exception_type, source_system=rec.source_system,
            status=status, received_at=received_at, body=prep.body, entities=prep.entities, severity=severity,
            domain=self.domain.spec.name if self.domain else None, fingerprint=ir.fingerprint,
            rendering=type_rendering(self.domain, rec.exception_type),
        )
        pending = self._pending.get(rec.exception_id) if self._pending is not None else None
        if pending is not None:
            pending.doc = doc
        return doc


class Memory:
    """Per-process memory over one store. Use `Memory.shared(store)` so a process keeps one index per tenant."""

    _shared: weakref.WeakKeyDictionary[Any, Memory] = weakref.WeakKeyDictionary()

    def __init__(self, store: Any, *, exact_limit: int | None = None, threads: int | None = None,
                 max_resident_cases: int | None = None, triage_window: int | None = None,
                 search_process: bool | None = None) -> None:
        """`search_process`: the pipeline's searches in a process of their own (`memory.sidecar`); None:
        $BREAKDESK_MEMORY_SEARCH_PROCESS, whose default (`auto`) uses one when this process may run on two
        CPUs or more and the database is one another process can open."""
        self.store = store
        self.exact_limit = exact_limit
        self.threads = threads
        self.max_resident_cases = (max_resident_cases if max_resident_cases is not None
                                   else envvars.count(envvars.MEMORY_MAX_CASES, MAX_RESIDENT_CASES))
        self.triage_window = (triage_window if triage_window is not None
                              else envvars.count(envvars.MEMORY_TRIAGE_WINDOW, TRIAGE_WINDOW))
        self._indexes: OrderedDict[str, TenantIndex] = OrderedDict()  # least recently used first
        self._locks: dict[str, asyncio.Lock] = {}
        #: tenant -> exception id -> cases the hot path analysed (and asked to write) before their rows were
        #: written: the next sync indexes those rows without reading them back or analysing them again.
        self._pending: dict[str, dict[str, _Pending]] = {}
        self._embedders: dict[tuple[Any, ...], Embedder] = {}
        self._search_process = search_process if search_process is not None else envvars.search_process()
        self._sidecar: SearchProcess | None = None

    @classmethod
    def shared(cls, store: Any) -> Memory:
        """The process's memory of `store`, released with the store. It refers to the store weakly: a strong
        reference from the value would keep its own key, and so the tenants' resident indexes, alive forever."""
        mem = cls._shared.get(store)
        if mem is None:
            mem = cls._shared[store] = cls(weakref.proxy(store))
        return mem

    # ------------------------------------------------------------------ resident indexes

    async def index(self, tenant_id: str, model: str | None = None, *, upto: int | None = None,
                    on_page: Callable[[], None] | None = None) -> TenantIndex:
        """The tenant's resident index, caught up with the store (cases, and vectors of `model`); with `upto`,
        with the cases up to that row id only (it holds any later ones it had read already). `on_page` is
        called after each page of cases read (the search process reports that it is loading)."""
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            idx = self._indexes.get(tenant_id)
            if idx is None:
                idx = self._indexes[tenant_id] = TenantIndex(tenant_id, self.exact_limit)
            self._indexes.move_to_end(tenant_id)
            pending = self._pending.pop(tenant_id, {}) if upto is None else {}
            while True:
                if pending:
                    got = await self._sync_written(tenant_id, idx, pending)
                elif upto is not None and idx.last_case_id >= upto:
                    break
                else:
                    rows = await self.store.cases_after(tenant_id, idx.last_case_id, SYNC_PAGE)
                    if upto is not None and rows and rows[-1].id > upto:
                        rows = [case for case in rows if case.id <= upto]
                        if not rows:
                            break
                    slicer = Slicer()
                    for case in rows:
                        await slicer.tick()
                        _check_tenant(case, tenant_id)
                        idx.add(case)
                    got = len(rows)
                if on_page is not None:
                    on_page()
                if got < SYNC_PAGE:
                    break
            if model is not None and not await pgvector_available(self.store):
                while True:
                    after = idx.last_vector_id.get(model, 0)
                    vecs = await self.store.vectors_after(tenant_id, model, after, SYNC_PAGE)
                    usable: list[tuple[str, np.ndarray]] = []
                    behind = False
                    for v in vecs:
                        if v.case_id > idx.last_case_id:
                            # its case row was committed after the cases were read: this vector and the
                            # ones after it wait for the next sync, which reads that row first
                            behind = True
                            break
                        held = idx.case(v.exception_id)
                        if held is not None and held.id == v.case_id:  # else: a replaced version's vector
                            usable.append((v.exception_id, v.vector))
                        after = v.id
                    resident = idx.vectors.get(model)
                    if usable:
                        dims = int(usable[-1][1].shape[0])
                        if resident is not None and resident.dims != dims:
                            # the model was re-embedded with other dimensions (`MemoryIndexer.embed`): the
                            # resident vectors are gone from the store, and cannot be compared with these
                            del idx.vectors[model]
                        usable = [(e, v) for e, v in usable if v.shape[0] == dims]
                    idx.add_vectors(model, usable, after)
                    if behind or len(vecs) < SYNC_PAGE:
                        break
            self._evict(keep=tenant_id)
            return idx

    async def _sync_written(self, tenant_id: str, idx: TenantIndex, pending: dict[str, _Pending]) -> int:
        """Catch `idx` up by one page of rows when this process wrote most of them itself: their small columns
        are read (`case_heads_after`) and the cases built from what the hot path asked to write; only rows that
        are not that (another writer's, replaced, resolved) are read in full. Returns the rows in the page."""
        heads = await self.store.case_heads_after(tenant_id, idx.last_case_id, SYNC_PAGE)
        own: list[tuple[_Pending, CaseDoc] | None] = []
        for h in heads:
            p = pending.get(h.exception_id)
            doc = p.wrote(h) if p is not None else None
            own.append(None if p is None or doc is None else (p, doc))
        others = [h.id for h, o in zip(heads, own, strict=True) if o is None]
        read = {c.id: c for c in await self.store.cases_by_ids(tenant_id, others)} if others else {}
        slicer = Slicer()
        # in id order: a case replaced within the page ends with its latest row
        for h, o in zip(heads, own, strict=True):
            if slicer.spent():  # (not `await slicer.tick()`: a coroutine per case costs more than the check)
                await slicer.yield_now()
            if o is not None:
                p, doc = o
                del pending[h.exception_id]
                idx.add(self.store.case_as_stored(tenant_id, h.id, doc), p.counts, p.tokens)
                continue
            pending.pop(h.exception_id, None)  # what it analysed is not what is stored
            stored = read.get(h.id)
            if stored is None:  # deleted since the first read (replaced: its new row comes later)
                idx.last_case_id = max(idx.last_case_id, h.id)
                continue
            _check_tenant(stored, tenant_id)
            idx.add(stored)
        return len(heads)

    def resident_cases(self) -> int:
        """Index slots held in memory across tenants (what `max_resident_cases` bounds)."""
        return sum(idx.slots for idx in self._indexes.values())

    def _evict(self, keep: str) -> None:
        """Drop the least recently used tenants' indexes until the resident total fits the bound (never
        `keep`'s, which is in use: one tenant larger than the bound stays resident on its own)."""
        total = self.resident_cases()
        for tenant_id in list(self._indexes):
            if total <= self.max_resident_cases:
                break
            if tenant_id == keep:
                continue
            total -= self._indexes.pop(tenant_id).slots
            self._pending.pop(tenant_id, None)
            # (its lock stays: `locked()` is False while a woken waiter has yet to take it, and a new lock
            # beside the old one would let two syncs fill one index at once; a lock per tenant is small)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop resident indexes (all, or one tenant's); they reload from the store on next use."""
        if tenant_id is None:
            self._indexes.clear()
        else:
            self._indexes.pop(tenant_id, None)

    # ------------------------------------------------------------------ the search process

    def sidecar(self) -> SearchProcess | None:
        """The search process for the pipeline's searches, when this memory uses one (made on first use; not
        started until a search needs it)."""
        if self._sidecar is not None:
            return self._sidecar
        if self._search_process is False:
            return None
        if self._search_process is None and _cpus() < 2:
            return None  # (auto: one CPU would run both processes in turn, for nothing)
        url = child_url(self.store.engine.url)
        if url is None:  # (a database only this process can open: searched here)
            return None
        self._sidecar = SearchProcess(url, self.max_resident_cases)
        return self._sidecar

    def close(self) -> None:
        """Stop the search process, if one runs (it also stops when this memory is dropped, or at exit; a later
        search starts a new one)."""
        if self._sidecar is not None:
            self._sidecar.close()

    @classmethod
    def close_shared(cls, store: Any) -> None:
        """`close()` the process's memory of `store`, if it has one: before the store closes, so that its search
        process and that process's database connections end with it."""
        mem = cls._shared.get(store)
        if mem is not None:
            mem.close()

    def written(self, tenant_id: str) -> None:
        """A batch of `tenant_id`'s cases committed: the search process reads them now, before the next
        batch's searches need them."""
        if self._sidecar is not None:
            self._sidecar.notify(tenant_id)

    async def warm(self, tenant_id: str) -> None:
        """Load the tenant's resident index where the pipeline's searches will use it (a running worker
        has its tenants' indexes loaded; benchmarks call this before timing)."""
        sp = self.sidecar()
        if sp is not None and sp.available():
            try:
                done: RemoteSearch | None = await sp.sync(tenant_id)
            except OSError:  # (logged by `SearchProcess`)
                done = None
            if done is not None:
                await done.wait()
                if done.error is None:
                    return
        await self.index(tenant_id)

    async def _remote_batch(self, sp: SearchProcess, out: BatchMemory, tenant_id: str,
                            items: Sequence[IntakeResult], domain: CompiledDomainPack, k: int) -> bool:
        """Hand the batch's searches to the search process; False when it cannot take them now (this batch is
        then searched here)."""
        if not sp.available():
            return False
        sent: list[Item] = []
        keys: dict[str, tuple[str, ...]] = {}
        slicer = Slicer()
        for ir in items:
            if slicer.spent():  # (as in `for_batch`: a server answers requests on this loop)
                await slicer.yield_now()
            rec = ir.record
            if rec.exception_id in out._prepared:  # (a repeated id: `for_batch` handles the one the pipeline kept)
                continue
            out._sent[rec.exception_id] = ir
            body, entities = describe(rec, domain)
            out._prepared[rec.exception_id] = _Prepared(body, entities)
            sent.append((rec.exception_id, rec.exception_type, rec.source_system, ir.fingerprint, body, entities))
            if rec.exception_type not in keys:
                keys[rec.exception_type] = similarity_keys(domain, rec.exception_type)
        try:
            remote = await sp.search(tenant_id, k, self.triage_window, sent, keys)
        except OSError:  # (it could not start: logged, and not tried again for a while)
            return False
        except Exception as exc:  # (whatever it was, these batches are searched here for a while)
            sp._failed(f"{type(exc).__name__}: {exc}")
            return False
        out.remote = remote
        out.similar = remote.similar
        out.last_resolution = remote.last_resolution
        out._finish = functools.partial(self._finish_here, tenant_id=tenant_id, sent=sent, keys=keys, k=k)
        return True

    # ------------------------------------------------------------------ hot path

    async def start_batch(
        self, tenant_id: str, items: Sequence[IntakeResult], domain: CompiledDomainPack, k: int
    ) -> BatchMemory | None:
        """Hand a batch's searches to the search process, which answers them while the pipeline goes on
        (`BatchMemory.wait` before reading an exception's); None when they are searched in this process,
        by `for_batch`. The pipeline calls it before it looks the batch up in the store: the first answers
        arrive during that wait. Exceptions the lookup then finds to be repeats are searched for nothing,
        and their answers are not read."""
        if k <= 0 or not items:
            return None
        sp = self.sidecar()
        if sp is None:
            return None
        out = BatchMemory(domain=domain)
        return out if await self._remote_batch(sp, out, tenant_id, items, domain, k) else None

    async def for_batch(
        self, tenant_id: str, items: Sequence[IntakeResult], domain: CompiledDomainPack, k: int,
        started: BatchMemory | None = None,
    ) -> BatchMemory:
        """Similar cases (lexical + structured: the hot path never waits for an embedding) among the tenant's
        latest `triage_window` cases, and the last resolution of each fingerprint, for a batch about to be
        triaged. `started`: what `start_batch` returned for a superset of `items`."""
        out = BatchMemory(domain=domain)
        if not items:
            return out
        if k <= 0:  # no similar cases to show: no resident index to keep in step, one query for resolutions
            fps = sorted({ir.fingerprint for ir in items if ir.fingerprint})
            last = await self.store.last_resolutions(tenant_id, fps) if fps else {}
            for ir in items:
                body, entities = describe(ir.record, domain)
                out._prepared[ir.record.exception_id] = _Prepared(body, entities)
            for fp, case in last.items():
                if case.resolution:
                    out.last_resolution[fp] = last_resolution_text(case)
            return out
        if started is None:
            started = await self.start_batch(tenant_id, items, domain, k)
        if started is not None:
            stale = [ir for ir in items if started._sent.get(ir.record.exception_id) is not ir]
            if stale:
                await self._search_stale(started, tenant_id, stale, domain, k)
            return started
        idx = await self.index(tenant_id)
        pending = out._pending = self._pending.setdefault(tenant_id, {})
        # Whether to search at all is decided once: this batch's own cases wait for the next sync, and what
        # other writers stored meanwhile may join the index while this batch yields to the event loop.
        searchable = len(idx) > 0
        queries: list[Query] = []
        slicer = Slicer()
        for ir in items:
            if slicer.spent():  # (as in `_sync_written`)
                await slicer.yield_now()
            rec = ir.record
            fp = ir.fingerprint
            # The case's text terms and structured tokens serve its query now and its index entry at the
            # next sync.
            body, entities, counts, tokens, query = case_query(rec, fp, domain)
            out._prepared[rec.exception_id] = _Prepared(body, entities)
            pending[rec.exception_id] = _Pending(counts, tokens)
            add_last_resolutions(idx, (fp,), out.last_resolution)
            if searchable:
                queries.append(query)
        await self._search_here(idx, queries, k, out.similar)
        return out

    async def _search_here(self, idx: TenantIndex, queries: list[Query], k: int,
                           into: dict[str, tuple[SimilarCase, ...]]) -> None:
        """Batched searches in this process (triage shows ids, scores and resolutions, not explanations:
        `similar()` explains), in slices of about `SEARCH_SLICE_S` each, sized from the previous slice's time
        per query, with the event loop free in between."""
        size, start = SEARCH_FIRST_SLICE, 0
        while start < len(queries):
            part = queries[start:start + size]
            t = time.perf_counter()
            found = idx.similar_many(part, k, self.triage_window)
            per_query = (time.perf_counter() - t) / len(part)
            for q, similar in zip(part, found, strict=True):
                assert q.exception_id is not None
                into[q.exception_id] = similar
            start += len(part)
            size = max(1, min(SEARCH_MAX_SLICE, int(SEARCH_SLICE_S / max(per_query, 1e-6))))
            if start < len(queries):
                await asyncio.sleep(0)

    async def _search_stale(self, out: BatchMemory, tenant_id: str, items: list[IntakeResult],
                            domain: CompiledDomainPack, k: int) -> None:
        """Exceptions the pipeline kept that are not the ones sent under their ids (a batch that repeats an id,
        the first one a duplicate by its idempotency key), searched in this process before anything of the
        batch is written."""
        assert out.remote is not None
        out.remote.skip.update(ir.record.exception_id for ir in items)
        stale: list[Item] = []
        for ir in items:
            rec = ir.record
            body, entities = describe(rec, domain)
            out.similar.pop(rec.exception_id, None)
            out._prepared[rec.exception_id] = _Prepared(body, entities)
            stale.append((rec.exception_id, rec.exception_type, rec.source_system, ir.fingerprint, body, entities))
        keys = {item[1]: similarity_keys(domain, item[1]) for item in stale}
        try:
            await self._search_items_here(out, tenant_id, stale, keys, k)
        except Exception as exc:  # (as any memory failure: those exceptions go without similar cases)
            log.warning("memory: %d exception(s) go without similar cases: %s", len(items), exc)

    async def _finish_here(self, out: BatchMemory, tenant_id: str, sent: list[Item],
                           keys: dict[str, tuple[str, ...]], k: int) -> None:
        """What the search process did not answer before it failed, searched in this process among the cases
        the child had read (on PostgreSQL, the batch's first chunks may have committed meanwhile: they are not
        its similar cases): the batch's triage shows the same similar cases either way, unless this process's
        own index had read further already."""
        assert out.remote is not None
        skip = out.remote.skip
        rest = [item for item in sent if item[0] not in out.similar and item[0] not in skip]
        await self._search_items_here(out, tenant_id, rest, keys, k, out.remote.upto)

    async def _search_items_here(self, out: BatchMemory, tenant_id: str, items: list[Item],
                                 keys: dict[str, tuple[str, ...]], k: int, upto: int | None = None) -> None:
        """Rendered exceptions (as sent to the search process) searched in this process, among the cases up to
        row `upto` (None: all), with their fingerprints' last resolutions where `out` has none."""
        idx = await self.index(tenant_id, upto=upto)
        add_last_resolutions(idx, (item[3] for item in items), out.last_resolution)
        if len(idx) > 0:
            queries = [text_query(*item, keys.get(item[1], ()))[2] for item in items]
            await self._search_here(idx, queries, k, out.similar)

    # ------------------------------------------------------------------ queries

    def embedder(self, settings: EmbeddingSettings | None) -> Embedder | None:
        """One embedder per distinct configuration, reused across calls (models load once)."""
        if settings is None or settings.provider == "none":
            return None
        key = configuration(settings)
        emb = self._embedders.get(key)
        if emb is None:
            emb = embedder_for(settings, threads=self.threads)
            assert emb is not None
            self._embedders[key] = emb
        return emb

    async def similar(
        self,
        tenant_id: str,
        exception_id: str,
        *,
        k: int = 5,
        filters: Filters = Filters(),
        embeddings: EmbeddingSettings | None = None,
        domain: CompiledDomainPack | None = None,
    ) -> SimilarResult:
        """Cases of `tenant_id` like its exception `exception_id`, best first. An empty or missing index
        gives no hits, not an error; an unknown exception raises NotIndexed."""
        emb = None
        try:
            emb = self.embedder(embeddings)
        except EmbedderError:
            emb = None  # a broken embedder configuration degrades to lexical + structured search
        model = emb.name if emb is not None else None
        idx = await self.index(tenant_id, model)
        case = idx.case(exception_id)
        if case is None:
            row = await self.store.get_exception(tenant_id, exception_id)
            if row is None:
                raise NotIndexed(f"no exception {exception_id!r} for tenant {tenant_id!r}")
            rec = ExceptionRecord.model_validate(row["record"], strict=False)
            case = StoredCase(0, tenant_id, exception_id, row["exception_type"], row["source_system"],
                              row.get("severity"), row["status"], None, row.get("fingerprint"),
                              key_fields(rec, domain), render(rec, domain), None, row["received_at"], None)
        q = idx.query_for(case, model, similarity_keys(domain, case.exception_type))
        embed_ms = 0.0
        source = "none"
        nearest: list[tuple[str, float]] | None = None
        complete = False
        if emb is not None:
            pg = await pgvector_available(self.store)
            source = "pgvector" if pg else "resident"
            vec = q.vector
            if vec is None and pg:
                stored = await self.store.get_vector(tenant_id, emb.name, exception_id)
                vec = stored.vector if stored is not None else None
            fresh = vec is None  # (embedded now, not stored: it may have another size than the stored ones)
            if vec is None:
                t0 = time.perf_counter()
                try:
                    vec = (await emb.embed([semantic_text(case.body, case.entities)]))[0]
                except EmbedderError:
                    vec, source = None, "none"
                embed_ms = (time.perf_counter() - t0) * 1000
            held = idx.vectors.get(emb.name)
            held_dims = held.dims if held is not None else None
            if vec is not None and held_dims is None and pg and fresh:
                # pgvector: no resident vectors to compare sizes with; the store tells (the same reason)
                held_dims = await self.store.vector_dims(tenant_id, emb.name)
            if vec is not None and held_dims is not None and held_dims != vec.shape[0]:
                # the endpoint's dimensions changed under the same model name: the stored vectors cannot be
                # compared with this one until the indexer re-embeds them; lexical + structured answer
                vec, source = None, "none"
            if vec is not None:
                q = q.replace(vector=vec)
                if pg:
                    asked = max(60, 3 * k) + 1
                    among = idx.case_ids(filters, PGVECTOR_EXACT_CASES)
                    nearest, complete = await self.store.pgvector_search(tenant_id, emb.name, vec, asked, filters,
                                                                         among=among)
        t0 = time.perf_counter()
        hits = idx.search(q, k, filters, model, nearest, nearest_complete=complete)
        search_ms = (time.perf_counter() - t0) * 1000
        for h in hits:  # every hit is one of this tenant's cases
            found = idx.case(h.exception_id)
            if found is None or found.tenant_id != tenant_id:
                raise RuntimeError("memory: a hit outside the tenant")
        return SimilarResult(exception_id, hits, model, source, embed_ms, search_ms, len(idx))

    async def recurrence(self, tenant_id: str, fingerprint: str, threshold: int) -> dict[str, Any]:
        """Fingerprint counts, first/last seen, the recurring flag and the last resolution of the fingerprint."""
        stats = (await self.store.fingerprint_stats(tenant_id, [fingerprint])).get(fingerprint)
        last = (await self.store.last_resolutions(tenant_id, [fingerprint])).get(fingerprint)
        count = stats[0] if stats else 0
        return {
            "fingerprint": fingerprint,
            "count": count,
            "firstSeen": stats[1] if stats else None,
            "lastSeen": stats[2] if stats else None,
            "lastExceptionId": stats[3] if stats else None,
            "recurring": count >= threshold,
            "threshold": threshold,
            "lastResolution": None if last is None else {"exceptionId": last.exception_id, **(last.resolution or {})},
        }
