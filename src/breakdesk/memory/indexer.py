"""The background indexer: keeps the memory complete and embeds cases off the hot path.

Per tenant, each pass

1. reads the tenant's audit chain past its saved position (every change to an exception appends to it, in
   commit order) and looks at the exceptions it names: any exception without a case (processed before the
   memory existed, or by a process that could not index it) is indexed, and a case whose exception changed
   status or severity is re-rendered — with its resolution summary once the exception is RESOLVED, CLOSED or
   FAILED, and again when it changes after its case was rendered (a comment after the resolution is part of
   the summary). Replaying a chain from its start re-renders only what differs.
   A case that cannot be rendered from its record is logged and skipped; a store error ends the pass before
   its position moves, so the next pass retries;
2. after a new version of the tenant's domain pack, re-renders the cases it renders differently (a type's
   description, identifying fields or `similarity.keyFields`: each case stores a digest of what the pack said,
   `memory.text.type_rendering`), a bounded number per pass, so searches compare new exceptions with cases
   read the same way;
3. embeds, in batches, the cases past its embedding watermark with the tenant's embedder, if it has one.

The scan and embedding positions are stored (`memory_tenants`) in the transaction that does the work, so after
a restart the indexer resumes where it stopped and catches up with everything written meanwhile; so are the
pack every case was last checked against and where a re-rendering under way stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from breakdesk.domain.models import ExceptionRecord
from breakdesk.memory.embedders import Embedder, EmbedderBusy, EmbedderError, EmbedderRejected, configuration
from breakdesk.memory.resolution import RESOLVED_STATUSES, resolution_of
from breakdesk.memory.service import Memory
from breakdesk.memory.text import case_doc, pack_rendering, semantic_text, type_rendering
from breakdesk.store.cases import (
    CaseDoc,
    ChangedException,
    ensure_pgvector_index,
    pgvector_available,
    rerender_position,
)
from breakdesk.store.errors import StoreError

log = logging.getLogger(__name__)

SCAN_PAGE = 500
#: The longest an endpoint's `Retry-After` defers a tenant's embedding (an HTTP date months ahead, or a pack
#: since moved to another endpoint, must not stop it until the process restarts).
MAX_EMBED_DEFERRAL_S = 3600.0
#: After a failed embedding pass (an endpoint unreachable after its retries, a malformed answer), the tenant's
#: embedding waits this long before the next try, doubled after each failure up to `MAX_EMBED_BACKOFF_S`:
#: the indexer goes over every tenant in turn, and a dead endpoint's retries (seconds each pass) would
#: otherwise delay every other tenant's indexing on every round.
EMBED_BACKOFF_S = 10.0
MAX_EMBED_BACKOFF_S = 300.0
#: How long one pass embeds a tenant's cases before it stops after the batch under way (the next pass goes on):
#: minilm embeds ~75 cases/s on one thread, so backfilling 100,000 cases in one pass would hold back the
#: tenant's own indexing (status changes, resolutions) and every other tenant's for over 20 minutes.
EMBED_SECONDS_PER_PASS = 5.0
#: Cases one pass re-renders at most after a domain pack change (`MemoryIndexer.rerender`); the next passes go
#: on from there, so that one tenant's re-rendering does not hold back the other tenants' indexing.
RERENDER_PER_PASS = 2000
#: Case rows one pass reads at most while looking for those to re-render (their small columns, `SCAN_PAGE` at a
#: time): a change to one type of a large tenant otherwise reads every other type's rows in its first pass.
RERENDER_SCAN_PER_PASS = 50_000
#: How far before a resolved case was rendered a change to its exception still re-renders it (`_stale`).
RERENDER_MARGIN = timedelta(minutes=10)


class EmbeddingDeferred(EmbedderError):
    """The tenant's embeddings endpoint asked to be left alone for now (`Retry-After`), or failed lately and
    is given a rest (`EMBED_BACKOFF_S`): nothing was sent."""


@dataclass
class IndexerReport:
    scanned: int = 0
    indexed: int = 0
    resolved: int = 0
    #: cases rendered again because the domain pack now renders them differently
    rerendered: int = 0
    embedded: int = 0
    errors: int = 0
    #: another process's indexer held this tenant's pass (PostgreSQL): nothing was done here
    busy: bool = False
    #: the embeddings endpoint asked to be left alone for longer (`Retry-After`): nothing was embedded
    embedding_deferred: bool = False
    #: the pass stopped at a bound (re-rendering, embedding) with work left: the next need not wait
    more: bool = False


def _stale(changed: ChangedException, rendered_at: int | None) -> bool:
    """Whether an exception the chain named needs its case (re-)rendered: it has none, its status or
    severity differs from what its case says, or it is resolved and changed after (or about when) its case
    was rendered — a comment after the resolution changes the summary its case shows. (An entry's time is
    its writer's, taken before the write lock: hence the margin. Older entries, replayed from the start of
    a chain, re-render nothing.) `rendered_at`: the chain's head when this pass rendered the case, if it
    did — the rendering read every entry up to it."""
    if changed.case is None:
        return True
    status, severity, indexed_at = changed.case
    if (status, severity) != (changed.status, changed.severity):
        return True
    if rendered_at is not None and changed.changed_seq <= rendered_at:
        return False
    return changed.status in RESOLVED_STATUSES and changed.changed_at > indexed_at - RERENDER_MARGIN


def _misrendered(changed: ChangedException, domain: Any) -> bool:
    """Whether an exception the chain named has a case rendered with another domain pack than the active one
    (a batch that read the packs before a new version was activated writes its cases after it, possibly after
    `MemoryIndexer.rerender` checked every case against that version). Rows from before the digest (NULL) are
    left to `rerender`, which stamps those that read the same."""
    return (domain is not None and changed.case is not None and changed.case_type is not None
            and changed.case_rendering is not None
            and changed.case_rendering != type_rendering(domain, changed.case_type))


PacksFor = Callable[[str], Awaitable[Any]]  # tenant -> object with .domain and .tenant (ActivePacks)


class MemoryIndexer:
    def __init__(self, store: Any, memory: Memory | None = None, *, packs: PacksFor | None = None,
                 embed_batch: int | None = None) -> None:
        self.store = store
        self.memory = memory or Memory.shared(store)
        if packs is None:
            from breakdesk.pipeline.orchestrator import Orchestrator

            packs = Orchestrator(store, memory=False).active_packs
        self.packs = packs
        self.embed_batch = embed_batch
        #: (model, dims) whose pgvector index this process has made sure of
        self._indexed_sizes: set[tuple[str, int]] = set()
        #: (tenant, embedder configuration) -> when (`time.monotonic()`) its embeddings endpoint asked to be left
        #: alone until (`Retry-After` longer than the embedder waits): passes until then index without embedding.
        #: By embedder configuration too (`embedders.configuration`): a tenant whose policy moves to another
        #: model, endpoint or key embeds at once. Also set after a failed pass (`EMBED_BACKOFF_S`, doubled per
        #: failure in a row: `_embed_failures`).
        self._embed_after: dict[tuple[str, tuple[Any, ...]], float] = {}
        self._embed_failures: dict[tuple[str, tuple[Any, ...]], int] = {}

    async def _packs(self, tenant_id: str) -> Any | None:
        try:
            return await self.packs(tenant_id)
        except Exception:  # no active packs: index without the pack's descriptions, embed nothing
            return None

    async def catch_up(self, tenant_id: str) -> IndexerReport:
        """Index every exception that is missing from the memory or changed since the last pass."""
        report = IndexerReport()
        packs = await self._packs(tenant_id)
        domain = packs.domain if packs is not None else None
        state = await self.store.memory_state(tenant_id)
        after = state.scanned_seq if state is not None else 0
        # exception -> the chain's head when this pass rendered its case (seqs are issued in commit order)
        rendered: dict[str, int] = {}
        while True:
            rows, last_seq, entries = await self.store.changed_exceptions(tenant_id, after, SCAN_PAGE)
            if not entries:
                break
            report.scanned += len(rows)
            stale = [c.exception_id for c in rows
                     if _stale(c, rendered.get(c.exception_id)) or _misrendered(c, domain)]
            if stale:
                head = (await self.store.audit_head(tenant_id))[0]
                rendered.update(dict.fromkeys(stale, head))
            full = await self.store.exceptions_by_ids(tenant_id, stale) if stale else {}
            docs: list[CaseDoc] = []
            for exception_id in stale:
                row = full.get(exception_id)
                if row is None:  # removed since the scan (retention): nothing to index
                    continue
                doc = await self._rendered(tenant_id, row, domain, report)
                if doc is None:
                    continue
                docs.append(doc)
                report.indexed += 1
                report.resolved += int(row["status"] in RESOLVED_STATUSES)
            after = last_seq
            await self.store.replace_cases(tenant_id, docs, scanned=after)
            if entries < SCAN_PAGE:
                break
        return report

    async def rerender(self, tenant_id: str, limit: int = RERENDER_PER_PASS,
                       scan: int = RERENDER_SCAN_PER_PASS) -> IndexerReport:
        """Render again, from their exceptions, the cases whose rendering the active domain pack changes, at
        most `limit` per call and reading at most about `scan` case rows (the next call goes on from there);
        once every case has been checked, the pack's `pack_rendering` is saved and later calls cost one read
        until the pack changes again. Nothing without an active domain pack: its cases keep what their pack
        said."""
        report = IndexerReport()
        packs = await self._packs(tenant_id)
        if packs is None:
            return report
        domain = packs.domain
        target = pack_rendering(domain)
        # where the walk under way stopped (saved: a restart goes on from there too); a walk for another
        # pack (changed again meanwhile) starts over: every case is checked against this one
        after = rerender_position(await self.store.memory_state(tenant_id), target)
        if after is None:
            return report
        budget = limit
        scanned = 0
        while True:
            heads = await self.store.case_renderings_after(tenant_id, after, SCAN_PAGE)
            scanned += len(heads)
            stopped = False
            stale: list[int] = []
            for case_id, _, exception_type, rendering in heads:
                if len(stale) >= budget:
                    stopped = True
                    break
                after = case_id
                if rendering != type_rendering(domain, exception_type):
                    stale.append(case_id)
            budget -= len(stale)
            docs, same = await self._rendered_again(tenant_id, stale, domain, report)
            if same:  # read the same as before (cases from before migration 0010, a playbook edit...)
                await self.store.stamp_renderings(tenant_id, same)
            # (new ids: this walk meets them again further on, rendered as the pack says now; a row replaced
            # since it was read is left as it is: it was rendered from a newer exception)
            report.rerendered += await self.store.rerender_cases(tenant_id, docs)
            if len(heads) < SCAN_PAGE and not stopped:
                break
            if stopped or scanned >= scan:  # a limit: the next pass goes on from here
                # (no pack has every case rendered its way now: should the tenant go back to the one they
                # were, the cases this walk re-rendered must be rendered back)
                await self.store.save_memory_state(tenant_id, rendered_with=None, rerender_for=target,
                                                   rerender_after=after)
                report.more = True
                return report
        await self.store.save_memory_state(tenant_id, rendered_with=target, rerender_for=None, rerender_after=None)
        return report

    async def _rendered_again(self, tenant_id: str, case_ids: list[int], domain: Any, report: IndexerReport
                              ) -> tuple[list[tuple[int, CaseDoc]], dict[int, str]]:
        """The cases with these row ids rendered from their exceptions under `domain`: the documents of those
        that now read differently, and for the others (same text, key fields and domain) their new rendering
        digest only, to stamp in place."""
        if not case_ids:
            return [], {}
        cases = await self.store.cases_by_ids(tenant_id, case_ids)
        full = await self.store.exceptions_by_ids(tenant_id, [c.exception_id for c in cases])
        docs: list[tuple[int, CaseDoc]] = []
        same: dict[int, str] = {}
        for case in cases:
            row = full.get(case.exception_id)
            if row is None:  # (no exception behind the case: nothing to render it from; it stays as it is)
                continue
            doc = await self._rendered(tenant_id, row, domain, report)
            if doc is None:
                continue
            if (doc.body, doc.entities, doc.domain) == (case.body, case.entities, case.domain):
                same[case.id] = doc.rendering or ""
            else:
                docs.append((case.id, doc))
        return docs, same

    async def _rendered(self, tenant_id: str, row: dict[str, Any], domain: Any, report: IndexerReport
                        ) -> CaseDoc | None:
        """`_doc`, or None (logged, counted in `report.errors`) when the record cannot be rendered: one such
        record must not stop the others. A store error is the database's, not the record's: it ends the pass,
        whose position has not moved, so the next pass retries."""
        try:
            return await self._doc(tenant_id, row, domain)
        except (StoreError, OSError):
            raise
        except Exception as exc:
            report.errors += 1
            log.warning("memory: cannot render %s/%s: %s", tenant_id, row.get("exception_id"), exc)
            return None

    async def _doc(self, tenant_id: str, row: dict[str, Any], domain: Any) -> CaseDoc:
        rec = ExceptionRecord.model_validate(row["record"], strict=False)
        resolution = None
        if row["status"] in RESOLVED_STATUSES:
            events = await self.store.get_events(tenant_id, row["exception_id"])
            executions: list[Any] = []
            if hasattr(self.store, "execution_records"):
                executions = await self.store.execution_records(tenant_id, row["exception_id"])
            resolution = resolution_of(row, events, executions)
        return case_doc(
            rec, domain, status=row["status"], received_at=row["received_at"], severity=row.get("severity"),
            fingerprint=row.get("fingerprint"), resolution=resolution,
            resolved_at=row.get("resolved_at") or (row["updated_at"] if resolution else None),
        )

    async def embed(self, tenant_id: str, max_batches: int | None = None, seconds: float | None = None,
                    report: IndexerReport | None = None) -> int:
        """Embed cases past the watermark with the tenant's embedder, at most `max_batches` batches and until
        `seconds` have passed (then after the batch under way; `report.more` says so); returns how many were
        embedded. Raises `EmbeddingDeferred` while the endpoint's last `Retry-After` (one longer than the
        embedder waits, at most `MAX_EMBED_DEFERRAL_S`) has not passed, or after a failed pass until its
        backoff has."""
        packs = await self._packs(tenant_id)
        settings = packs.tenant.spec.embeddings if packs is not None else None
        try:
            emb = self.memory.embedder(settings)
        except EmbedderError as exc:
            log.warning("memory: tenant %s embedder unavailable: %s", tenant_id, exc)
            return 0
        if emb is None or settings is None:
            return 0
        key = (tenant_id, configuration(settings))
        if time.monotonic() < self._embed_after.get(key, 0.0):
            raise EmbeddingDeferred
        try:
            done, more = await self._embed_with(tenant_id, emb, settings, max_batches, seconds)
            if report is not None:
                report.more = report.more or more
        except EmbedderError as exc:
            failures = self._embed_failures[key] = self._embed_failures.get(key, 0) + 1
            asked = exc.retry_after if isinstance(exc, EmbedderBusy) else None
            # the endpoint's last `Retry-After` if longer (its retries spent, the embedder gives up on a short
            # one too): a rest of a second would cost every round the retries again
            wait = max(min(EMBED_BACKOFF_S * 2 ** (failures - 1), MAX_EMBED_BACKOFF_S),
                       min(asked, MAX_EMBED_DEFERRAL_S) if asked else 0.0)
            self._embed_after[key] = time.monotonic() + wait
            log.warning("memory: embedding for tenant %s failed: %s; next try in %.0f s", tenant_id, exc, wait)
            raise
        self._embed_after.pop(key, None)
        self._embed_failures.pop(key, None)
        return done

    async def _embed_with(self, tenant_id: str, emb: Embedder, settings: Any, max_batches: int | None,
                          seconds: float | None) -> tuple[int, bool]:
        """(cases embedded, whether it stopped on `seconds` rather than for want of cases)."""
        until = None if seconds is None else time.monotonic() + seconds
        state = await self.store.memory_state(tenant_id)
        if state is None or state.model != emb.name:
            await self.store.reset_embeddings(tenant_id, emb.name)
            upto = 0
        else:
            upto = state.embedded_upto
        dims = await self.store.vector_dims(tenant_id, emb.name)
        dims_stored = dims is not None  # (the size the store holds, not one this pass met)
        size = self.embed_batch or (settings.batchSize if settings else 64)
        done = batches = 0
        while max_batches is None or batches < max_batches:
            cases = await self.store.cases_to_embed(tenant_id, upto, size)
            if not cases:
                break
            try:
                vecs = await emb.embed([semantic_text(c.body, c.entities) for c in cases])
            except EmbedderRejected:  # (the watermark passes the cases refused: `last` is the batch's)
                batch, each = await self._embed_each(tenant_id, emb, cases, upto)
                last = batch[-1].id
                cases = [c for c, v in zip(batch, each, strict=True) if v is not None]
                vecs = np.vstack([v for v in each if v is not None])
            else:
                last = cases[-1].id
            if dims is not None and int(vecs.shape[1]) != dims:
                if not dims_stored:  # changed again within this pass: an endpoint that cannot make up its mind
                    raise EmbedderError(f"{emb.name} answers with {int(vecs.shape[1])} and {dims} dimensions")
                # the same model name now answers with other dimensions (a redeployed endpoint): vectors of
                # both cannot be compared, so every case is embedded again, as after a model change
                log.warning("memory: tenant %s: %s now has %d dimensions (stored: %d); re-embedding",
                            tenant_id, emb.name, int(vecs.shape[1]), dims)
                await self.store.reset_embeddings(tenant_id, emb.name, keep_model=False)
                dims, dims_stored, upto = None, False, 0
                continue
            dims = int(vecs.shape[1])
            if (emb.name, dims) not in self._indexed_sizes and await pgvector_available(self.store):
                # once per process and size, before vectors of that size are written: the HNSW index they
                # are searched by, and an index of an earlier version over the model (made with another
                # tenant's size, say), which would refuse them, replaced
                await ensure_pgvector_index(self.store, emb.name, dims)
                self._indexed_sizes.add((emb.name, dims))
            upto = last
            await self.store.save_vectors(
                tenant_id, emb.name, [(c.exception_id, c.id, v) for c, v in zip(cases, vecs, strict=True)], upto
            )
            done += len(cases)
            batches += 1
            if until is not None and time.monotonic() >= until:  # (at least one batch per pass)
                return done, True
        return done, False

    async def _embed_each(self, tenant_id: str, emb: Embedder, cases: list[Any], upto: int
                          ) -> tuple[list[Any], Any]:
        """A batch the endpoint refused, one case at a time: a case it refuses on its own is skipped (left
        without a vector, logged) so that it does not hold back every case after it — but only when another
        case of the batch embeds, so a refusal of every input (a configuration problem) moves nothing."""
        if len(cases) < 2:  # a case alone: the next one tells whether the endpoint refuses everything
            cases = await self.store.cases_to_embed(tenant_id, upto, 2)
        out: list[Any] = []
        for c in cases:
            try:
                out.append((await emb.embed([semantic_text(c.body, c.entities)]))[0])
            except EmbedderRejected as exc:
                out.append(None)
                last = exc
        if all(v is None for v in out):
            raise last
        for c, v in zip(cases, out, strict=True):
            if v is None:
                log.warning("memory: tenant %s: the embeddings endpoint refuses case %s; left without a vector",
                            tenant_id, c.exception_id)
        return cases, out

    async def run_once(self, tenant_id: str, *, index: bool = True, embed: bool = True) -> IndexerReport:
        """One pass over the tenant — what changed, re-rendering, then embedding for up to
        `EMBED_SECONDS_PER_PASS` — unless another process's indexer is in the middle of one (`busy`).
        `index`/`embed`: only that part (`run` does each for every tenant in turn)."""
        async with self.store.indexer_lease(tenant_id) as mine:
            if not mine:
                return IndexerReport(busy=True)
            report = IndexerReport()
            if index:
                report = await self.catch_up(tenant_id)
                again = await self.rerender(tenant_id)
                report.rerendered, report.errors = again.rerendered, report.errors + again.errors
                report.more = again.more
            if embed:
                try:
                    report.embedded = await self.embed(tenant_id, seconds=EMBED_SECONDS_PER_PASS, report=report)
                except EmbeddingDeferred:
                    report.embedding_deferred = True
                except EmbedderError:  # (logged by `embed`)
                    report.errors += 1
            return report

    async def run(self, stop: asyncio.Event, interval: float = 2.0, tenants: Sequence[str] | None = None) -> None:
        """Loop over all tenants (or only `tenants`) until `stop` is set (what `breakdesk memory index --follow`
        and the server's worker run): each round indexes every tenant's changes first, then embeds, so that no
        tenant's embedding (a slow model, a slow or failing endpoint) delays another's status changes and
        resolutions by more than a round's embedding. A failed pass (the database away, one tenant's bad
        data) is logged and retried on the next round: the loop itself only ends with `stop`."""
        only = list(tenants) if tenants is not None else None
        while not stop.is_set():
            if only is not None:
                round_tenants = only
            else:
                try:
                    round_tenants = [t.tenant_id for t in await self.store.list_tenants()]
                except Exception as exc:
                    log.warning("memory: cannot list tenants: %s", exc)
                    round_tenants = []
            more = False
            for part in ({"embed": False}, {"index": False}):
                for tenant_id in round_tenants:
                    if stop.is_set():
                        break
                    try:
                        more = (await self.run_once(tenant_id, **part)).more or more
                    except Exception as exc:  # keep serving the other tenants
                        log.warning("memory: pass for tenant %s failed: %s", tenant_id, exc)
            if more:  # a bound stopped a pass with work left (a backfill, a re-rendering): no pause
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
