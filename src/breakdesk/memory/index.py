"""One tenant's resident case index and the hybrid search over it.

Why resident: the pipeline asks for similar cases for every exception it triages, and a database full-text
query costs 1-5 ms at 20k cases once it is restricted to one tenant (measured with SQLite FTS5: the tenant
restriction intersects a posting list as long as the tenant's case count), against a budget of ~0.1 ms per
exception on the hot path. So the database keeps the cases (`memory_cases`, written in the exception's own
transaction) and every process that searches keeps an in-memory index it follows by case id. Searching then
costs tens of microseconds for the lexical part, and the lexical index is immediate: a case is searchable as
soon as its transaction commits and the searching process next syncs (before every search batch).

Search = candidates from three lists, fused by reciprocal rank and re-ranked:

- lexical: BM25 over the case's terms (light stemming; query terms unknown to the index are corrected to a
  known term one edit away, so typos still match);
- vector: cosine similarity of embeddings, when the tenant has an embedder;
- structured: cases sharing key entity ids or the fingerprint.

The re-ranking score mixes normalised BM25, cosine and structured boosts (same type, same source, shared
entity ids, same fingerprint); every hit says why it matched.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from breakdesk.memory.text import key_tokens, term_counts
from breakdesk.memory.vectors import VectorIndex
from breakdesk.store.cases import StoredCase

K1 = 1.2
B = 0.75
RRF_K = 60
MAX_QUERY_TERMS = 24
CANDIDATES = 60
#: Terms in more than this share of a tenant's cases say little and cost the most to score.
MAX_DF_SHARE = 0.5
#: Query weight of terms with digits (identifiers, codes): one shared security id should not outweigh the
#: words that describe the problem.
ID_WEIGHT = 0.5
#: Hot path: at most this many query terms, each in at most this share of the cases (bounded work per query).
FAST_TERMS, FAST_DF_SHARE = 8, 0.05
#: Re-ranking weights (see `_rerank`); the lexical weight absorbs the vector weight when there are no vectors.
W_LEX, W_VEC, W_TYPE, W_SOURCE, W_ENTITY, W_FP = 0.50, 0.30, 0.10, 0.03, 0.12, 0.05


@dataclass(frozen=True, slots=True)
class Filters:
    """Restrict a search. Empty tuples mean "any"."""

    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    resolved_only: bool = False
    since: datetime | None = None
    until: datetime | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.types or self.severities or self.statuses or self.sources or self.resolved_only
                    or self.since or self.until)


@dataclass(frozen=True, slots=True)
class Query:
    """What a search looks for: a case's analysed text, key ids, vector (optional) and its own id."""

    exception_id: str | None
    exception_type: str
    source_system: str
    terms: Mapping[str, int]
    entities: Mapping[str, str]
    fingerprint: str | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    exception_id: str
    score: float
    why: str
    exception_type: str
    status: str
    severity: str | None
    resolution: str | None
    lexical: float = 0.0
    semantic: float | None = None
    matched_terms: tuple[str, ...] = ()
    shared_entities: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "exceptionId": self.exception_id,
            "score": round(self.score, 4),
            "why": self.why,
            "exceptionType": self.exception_type,
            "status": self.status,
            "severity": self.severity,
            "resolution": self.resolution,
            "lexical": round(self.lexical, 4),
            "semantic": None if self.semantic is None else round(self.semantic, 4),
            "matchedTerms": list(self.matched_terms),
            "sharedEntities": list(self.shared_entities),
        }


@dataclass(slots=True)
class _Postings:
    docs: array = field(default_factory=lambda: array("i"))
    tfs: array = field(default_factory=lambda: array("f"))
    np_docs: np.ndarray | None = None
    np_tfs: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.np_docs is None or self.np_docs.shape[0] != len(self.docs):
            self.np_docs = np.frombuffer(self.docs, dtype=np.int32).copy() if self.docs else np.zeros(0, np.int32)
            self.np_tfs = np.frombuffer(self.tfs, dtype=np.float32).copy() if self.tfs else np.zeros(0, np.float32)
        assert self.np_tfs is not None
        return self.np_docs, self.np_tfs


def _deletes(word: str) -> list[str]:
    return [word[:i] + word[i + 1:] for i in range(len(word))]


class _Codes:
    """Small string → int code table (types, sources, statuses, severities) for array filters."""

    def __init__(self) -> None:
        self.codes: dict[str | None, int] = {}

    def code(self, value: str | None) -> int:
        c = self.codes.get(value)
        if c is None:
            c = self.codes[value] = len(self.codes)
        return c

    def wanted(self, values: Iterable[str]) -> list[int]:
        return [self.codes[v] for v in values if v in self.codes]


class TenantIndex:
    """Everything one tenant's searches need, in memory. Not shared between tenants by construction."""

    def __init__(self, tenant_id: str, exact_limit: int | None = None) -> None:
        self.tenant_id = tenant_id
        self.exact_limit = exact_limit
        self.last_case_id = 0
        self.last_vector_id: dict[str, int] = {}
        self._eids: list[str] = []
        self._slot: dict[str, int] = {}
        self._cases: list[StoredCase | None] = []
        self._terms: list[tuple[np.ndarray, np.ndarray] | None] = []  # per slot: term ids, tfs
        self._alive = np.zeros(0, dtype=bool)
        self._len = np.zeros(0, dtype=np.float32)
        self._type = np.zeros(0, dtype=np.int32)
        self._source = np.zeros(0, dtype=np.int32)
        self._status = np.zeros(0, dtype=np.int32)
        self._severity = np.zeros(0, dtype=np.int32)
        self._resolved = np.zeros(0, dtype=bool)
        self._received = np.zeros(0, dtype=np.float64)
        self._types, self._sources, self._statuses, self._severities = _Codes(), _Codes(), _Codes(), _Codes()
        self._term_id: dict[str, int] = {}
        self._term_names: list[str] = []
        self._post: list[_Postings] = []
        self._df: list[int] = []
        self._deletes: dict[str, list[int]] = {}
        self._keys: dict[str, list[int]] = {}
        self._fp_resolved: dict[str, int] = {}
        self._total_len = 0.0
        self._live = 0
        self.vectors: dict[str, VectorIndex] = {}

    # ------------------------------------------------------------------ size

    def __len__(self) -> int:
        return self._live

    def __contains__(self, exception_id: str) -> bool:
        return exception_id in self._slot

    def case(self, exception_id: str) -> StoredCase | None:
        slot = self._slot.get(exception_id)
        return None if slot is None else self._cases[slot]

    # ------------------------------------------------------------------ building

    def _grow(self, n: int) -> None:
        cap = self._alive.shape[0]
        if n <= cap:
            return
        new = max(1024, cap * 2, n)

        def g(a: np.ndarray) -> np.ndarray:
            out = np.zeros(new, dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._alive, self._len, self._type, self._source = g(self._alive), g(self._len), g(self._type), g(self._source)
        self._status, self._severity, self._resolved = g(self._status), g(self._severity), g(self._resolved)
        self._received = g(self._received)

    def _term(self, word: str) -> int:
        tid = self._term_id.get(word)
        if tid is None:
            tid = self._term_id[word] = len(self._term_names)
            self._term_names.append(word)
            self._post.append(_Postings())
            self._df.append(0)
            if len(word) >= 5 and not word.isdigit():
                for d in _deletes(word):
                    self._deletes.setdefault(d, []).append(tid)
        return tid

    def add(self, case: StoredCase, counts: Mapping[str, int] | None = None) -> None:
        """Add or replace one case (a replaced case's old slot stops matching)."""
        if case.tenant_id != self.tenant_id:
            raise ValueError(f"case of tenant {case.tenant_id!r} offered to the index of {self.tenant_id!r}")
        self.last_case_id = max(self.last_case_id, case.id)
        old = self._slot.get(case.exception_id)
        if old is not None:
            self._retire(old)
        slot = len(self._eids)
        self._grow(slot + 1)
        self._eids.append(case.exception_id)
        self._slot[case.exception_id] = slot
        self._cases.append(case)
        counts = counts if counts is not None else term_counts(case.body)
        tids = np.fromiter((self._term(w) for w in counts), dtype=np.int32, count=len(counts))
        tfs = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        self._terms.append((tids, tfs))
        for tid, tf in zip(tids.tolist(), tfs.tolist(), strict=True):
            p = self._post[tid]
            p.docs.append(slot)
            p.tfs.append(tf)
            self._df[tid] += 1
        length = float(tfs.sum())
        self._len[slot] = length
        self._total_len += length
        self._alive[slot] = True
        self._live += 1
        self._type[slot] = self._types.code(case.exception_type)
        self._source[slot] = self._sources.code(case.source_system)
        self._status[slot] = self._statuses.code(case.status)
        self._severity[slot] = self._severities.code(case.severity)
        self._resolved[slot] = case.resolution is not None
        self._received[slot] = case.received_at.timestamp()
        for tok in key_tokens(case.entities, case.fingerprint):
            self._keys.setdefault(tok, []).append(slot)
        if case.resolution is not None and case.fingerprint:
            self._fp_resolved[case.fingerprint] = slot
        if old is not None:
            for vi in self.vectors.values():
                vi.remove(old)

    def _retire(self, slot: int) -> None:
        if not self._alive[slot]:
            return
        self._alive[slot] = False
        self._live -= 1
        self._total_len -= float(self._len[slot])
        entry = self._terms[slot]
        if entry is not None:
            for tid in entry[0].tolist():
                self._df[tid] -= 1
        self._terms[slot] = None
        case = self._cases[slot]
        if case is not None and case.fingerprint and self._fp_resolved.get(case.fingerprint) == slot:
            del self._fp_resolved[case.fingerprint]
        self._cases[slot] = None

    def add_vectors(self, model: str, items: Sequence[tuple[str, np.ndarray]], last_id: int) -> None:
        """Attach embeddings (by exception id) for `model`; ids of cases not (yet) indexed are skipped."""
        self.last_vector_id[model] = max(self.last_vector_id.get(model, 0), last_id)
        slots, vecs = [], []
        for eid, vec in items:
            slot = self._slot.get(eid)
            if slot is not None:
                slots.append(slot)
                vecs.append(vec)
        if not slots:
            return
        vi = self.vectors.get(model)
        if vi is None:
            dims = int(np.asarray(vecs[0]).shape[0])
            vi = self.vectors[model] = VectorIndex(dims) if self.exact_limit is None else VectorIndex(dims, self.exact_limit)
        vi.add(slots, np.vstack(vecs))

    def vector_of(self, model: str, exception_id: str) -> np.ndarray | None:
        vi = self.vectors.get(model)
        slot = self._slot.get(exception_id)
        return None if vi is None or slot is None else vi.get(slot)

    def last_resolution(self, fingerprint: str) -> StoredCase | None:
        slot = self._fp_resolved.get(fingerprint)
        return None if slot is None else self._cases[slot]

    # ------------------------------------------------------------------ search

    def _mask(self, f: Filters, n: int) -> np.ndarray | None:
        if f.empty:
            return None
        m = self._alive[:n].copy()
        for arr, codes, values in (
            (self._type, self._types, f.types),
            (self._source, self._sources, f.sources),
            (self._status, self._statuses, f.statuses),
            (self._severity, self._severities, f.severities),
        ):
            if values:
                m &= np.isin(arr[:n], codes.wanted(values))
        if f.resolved_only:
            m &= self._resolved[:n]
        if f.since is not None:
            m &= self._received[:n] >= f.since.timestamp()
        if f.until is not None:
            m &= self._received[:n] < f.until.timestamp()
        return m

    def _query_terms(
        self, counts: Mapping[str, int], max_terms: int = MAX_QUERY_TERMS, max_df_share: float = MAX_DF_SHARE
    ) -> list[tuple[int, float, float]]:
        """(term id, idf, query weight) of the most discriminating query terms; unknown terms of five letters
        or more are replaced by the known term one edit away with the most cases (a typo's likely intent)."""
        n = max(1, self._live)
        chosen: dict[int, tuple[float, float]] = {}
        for word, qtf in counts.items():
            tid = self._term_id.get(word)
            weight = 1.0 + math.log(qtf) if qtf > 1 else 1.0
            if not word.isalpha():
                weight *= ID_WEIGHT  # codes and ids: shared ids are the structured signal's job
            if tid is None or self._df[tid] <= 0:
                tid = self._correct(word)
                if tid is None:
                    continue
                weight *= 0.8
            df = self._df[tid]
            if df <= 0 or (df > max_df_share * n and n > 20):
                continue
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            prev = chosen.get(tid)
            if prev is None or prev[1] < weight:
                chosen[tid] = (idf, weight)
        ranked = sorted(chosen.items(), key=lambda kv: -kv[1][0] * kv[1][1])[:max_terms]
        return [(tid, idf, w) for tid, (idf, w) in ranked]

    def _correct(self, word: str) -> int | None:
        if len(word) < 5 or word.isdigit():
            return None
        cands: set[int] = set(self._deletes.get(word, ()))  # the query lost a letter... or has one extra:
        for d in _deletes(word):
            tid = self._term_id.get(d)
            if tid is not None:
                cands.add(tid)
            cands.update(self._deletes.get(d, ()))  # a substituted or transposed letter
        best, best_df = None, 0
        for tid in cands:
            if self._df[tid] > best_df:
                best, best_df = tid, self._df[tid]
        return best

    def _bm25(self, qterms: list[tuple[int, float, float]], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots, scores) of every live case containing a query term."""
        if not qterms:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        avgdl = self._total_len / max(1, self._live)
        docs_parts, w_parts = [], []
        for tid, idf, qw in qterms:
            docs, tfs = self._post[tid].arrays()
            dl = self._len[docs]
            w = (idf * qw) * tfs * (K1 + 1) / (tfs + K1 * (1 - B + B * dl / avgdl))
            docs_parts.append(docs)
            w_parts.append(w)
        docs = np.concatenate(docs_parts)
        weights = np.concatenate(w_parts)
        if docs.shape[0] * 8 < n:  # few postings: sort-based accumulation beats an n-sized array
            slots, inv = np.unique(docs, return_inverse=True)
            scores = np.bincount(inv, weights=weights).astype(np.float32)
        else:
            dense = np.bincount(docs, weights=weights, minlength=n)
            slots = np.flatnonzero(dense)
            scores = dense[slots].astype(np.float32)
        alive = self._alive[slots]
        return slots[alive].astype(np.int64), scores[alive]

    def search(
        self,
        q: Query,
        k: int,
        filters: Filters = Filters(),
        model: str | None = None,
        nearest: Sequence[tuple[str, float]] | None = None,
        fast: bool = False,
    ) -> list[Hit]:
        """Top-k hits for `q` among this tenant's cases (never `q` itself, nor `filters.exclude`).

        `nearest`: (exception id, cosine) from an external vector search (pgvector) instead of the resident
        vectors of `model`. `fast` (the pipeline's hot path) scores only the few rarest query terms."""
        n = len(self._eids)
        if n == 0 or k <= 0 or self._live == 0:
            return []
        mask = self._mask(filters, n)
        excluded: set[int] = set()
        for eid in (q.exception_id, *filters.exclude):
            if eid is not None and eid in self._slot:
                excluded.add(self._slot[eid])

        def allowed(slot: int) -> bool:
            return slot not in excluded and bool(self._alive[slot]) and (mask is None or bool(mask[slot]))

        pool = max(CANDIDATES, 3 * k)
        qterms = self._query_terms(q.terms, *((FAST_TERMS, FAST_DF_SHARE) if fast else ()))
        lex_slots, lex_scores = self._bm25(qterms, n)
        if mask is not None and lex_slots.size:
            keep = mask[lex_slots]
            lex_slots, lex_scores = lex_slots[keep], lex_scores[keep]
        lex_by_slot = dict(zip(lex_slots.tolist(), lex_scores.tolist(), strict=True))
        lists: list[list[int]] = []
        if lex_slots.size:
            top = min(pool + len(excluded), lex_slots.size)
            order = np.argpartition(-lex_scores, top - 1)[:top]
            order = order[np.argsort(-lex_scores[order], kind="stable")]
            lists.append([s for s in lex_slots[order].tolist() if s not in excluded][:pool])
        # structured: shared entity ids and fingerprint
        shared: Counter[int] = Counter()
        for tok in key_tokens(q.entities, q.fingerprint):
            slots = self._keys.get(tok)
            if slots and len(slots) <= 5000:
                shared.update(s for s in slots if allowed(s))
        if shared:
            lists.append([s for s, _ in shared.most_common(pool)])
        # vector
        vi = self.vectors.get(model) if model else None
        qvec = q.vector
        external: dict[int, float] | None = None
        if nearest is not None:
            external = {}
            for eid, sim in nearest:
                slot = self._slot.get(eid)
                if slot is not None and allowed(slot):
                    external[slot] = sim
            lists.append(list(external)[:pool])
            vi = None
        elif vi is not None and qvec is not None and len(vi):
            vslots, _ = vi.search(qvec, pool + len(excluded), mask)
            lists.append([s for s in vslots.tolist() if allowed(s)][:pool])
        if not lists:
            return []
        rrf: dict[int, float] = {}
        for lst in lists:
            for rank, s in enumerate(lst):
                rrf[s] = rrf.get(s, 0.0) + 1.0 / (RRF_K + rank + 1)
        cands = np.fromiter(rrf, dtype=np.int64, count=len(rrf))
        sem: np.ndarray | None = None
        if external is not None:
            floor = min(external.values()) if external else 0.0  # outside the top-N: at most the N-th's cosine
            sem = np.array([external.get(s, floor) for s in cands.tolist()], dtype=np.float32)
        elif vi is not None and qvec is not None:
            sem = vi.similarity(qvec, cands)
        return self._rerank(q, cands, rrf, lex_by_slot, qterms, sem, k)

    def _rerank(
        self,
        q: Query,
        cands: np.ndarray,
        rrf: Mapping[int, float],
        lex_by_slot: Mapping[int, float],
        qterms: list[tuple[int, float, float]],
        sem: np.ndarray | None,
        k: int,
    ) -> list[Hit]:
        lex = np.array([lex_by_slot.get(s, 0.0) for s in cands.tolist()], dtype=np.float32)
        top_lex = float(lex.max()) if lex.size else 0.0
        lex_n = lex / top_lex if top_lex > 0 else lex
        qtype = self._types.codes.get(q.exception_type, -1)
        qsrc = self._sources.codes.get(q.source_system, -1)
        same_type = self._type[cands] == qtype
        same_src = self._source[cands] == qsrc
        n_ent = max(1, len(q.entities))
        fp_tok = f"fp:{q.fingerprint}" if q.fingerprint else None
        w_lex = W_LEX if sem is not None else W_LEX + W_VEC
        score = w_lex * lex_n + W_TYPE * same_type + W_SOURCE * same_src
        if sem is not None:
            score = score + W_VEC * np.clip(sem, 0.0, 1.0)
        hits: list[tuple[float, float, int]] = []
        for i, s in enumerate(cands.tolist()):
            case = self._cases[s]
            if case is None:
                continue
            n_shared = sum(1 for kk, v in q.entities.items() if case.entities.get(kk) == v)
            same_fp = fp_tok is not None and case.fingerprint == q.fingerprint
            total = float(score[i]) + W_ENTITY * min(1.0, n_shared / min(2, n_ent)) + W_FP * same_fp
            hits.append((total, rrf.get(s, 0.0), s))
        hits.sort(key=lambda h: (-h[0], -h[1], self._eids[h[2]]))
        qterm_ids = {tid: idf for tid, idf, _ in qterms}
        out: list[Hit] = []
        for total, _, s in hits[:k]:
            case = self._cases[s]
            assert case is not None
            i = int(np.flatnonzero(cands == s)[0])
            entry = self._terms[s]
            matched: list[str] = []
            if entry is not None and qterm_ids:
                common = [t for t in entry[0].tolist() if t in qterm_ids]
                common.sort(key=lambda t: -qterm_ids[t])
                matched = [self._term_names[t] for t in common[:6]]
            ents = tuple(f"{kk}={v}" for kk, v in q.entities.items() if case.entities.get(kk) == v)
            semantic = None if sem is None else float(sem[i])
            why: list[str] = []
            if case.exception_type == q.exception_type:
                why.append(f"same type {case.exception_type}")
            if q.fingerprint and case.fingerprint == q.fingerprint:
                why.append("same fingerprint")
            if ents:
                why.append("shares " + ", ".join(ents[:3]))
            if matched:
                why.append("terms: " + ", ".join(matched))
            if semantic is not None and semantic > 0:
                why.append(f"semantic {semantic:.2f}")
            if case.source_system == q.source_system:
                why.append(f"same source {case.source_system}")
            res = case.resolution or {}
            out.append(Hit(
                exception_id=case.exception_id,
                score=round(min(1.0, total), 4),
                why="; ".join(why) or "related",
                exception_type=case.exception_type,
                status=case.status,
                severity=case.severity,
                resolution=str(res["summary"]) if res.get("summary") else None,
                lexical=float(lex_n[i]),
                semantic=semantic,
                matched_terms=tuple(matched),
                shared_entities=ents,
            ))
        return out

    def query_for(self, case: StoredCase, model: str | None = None) -> Query:
        """The query that asks for cases like an indexed one."""
        return Query(
            exception_id=case.exception_id,
            exception_type=case.exception_type,
            source_system=case.source_system,
            terms=term_counts(case.body),
            entities=case.entities,
            fingerprint=case.fingerprint,
            vector=self.vector_of(model, case.exception_id) if model else None,
        )
