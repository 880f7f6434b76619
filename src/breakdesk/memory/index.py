"""One tenant's resident case index and the hybrid search over it.

Why resident: the pipeline asks for similar cases for every exception it triages, and a database full-text
query costs 1-5 ms at 20k cases once it is restricted to one tenant (measured with SQLite FTS5: the tenant
restriction intersects a posting list as long as the tenant's case count), against a budget of ~0.1 ms per
exception on the hot path. So the database keeps the cases (`memory_cases`, written in the exception's own
transaction) and every process that searches keeps an in-memory index it follows by case id. The lexical
index is immediate: a case is searchable as soon as its transaction commits and the searching process next
syncs (before every search batch).

A search scores every case that shares something with the query on four signals (`breakdesk.memory.text`
says why a case is read through two lenses):

- declared key fields: the fields the domain pack says define "the same problem" for the query's type
  (`similarity.keyFields`, e.g. reason, counterparty and depository of a settlement fail), as the share of
  them a case matches exactly. Only the domain knows which attributes those are: lexically, the same message
  with another counterparty looks closer than the same problem in other words;
- key fields: exact `field=value` matches (counterparty, LEI, account, payer, reason codes, the exception's
  own ids, the fingerprint), each weighted by its IDF among cases of the query's type (saturating, so that
  one rare coincidence does not outweigh several shared facts), as the share of the query's matchable
  evidence. Without declared key fields this is most of what "the same problem" means;
- text: BM25 over the message words (light stemming), which separates causes among cases with the same
  fields. Typos on either side still match: an unknown query word is corrected to the most common known
  word one edit away, and a known word also matches its rarer one-edit variants in the index;
- vector: cosine similarity of embeddings, when the tenant has an embedder.

The scores are fused as a weighted sum of normalised scores plus boosts for the same type and source (the
vector list also brings in candidates that share no word); when fewer than k cases share anything, the
latest cases of the same type fill in. Equal scores rank by exception id. Every hit says why it matched.
The hot path (`Memory.for_batch`) asks for a whole batch at once (`similar_many`, `search_many`: the same
hits and scores without vectors, scored together and pruned); the weights were tuned with
`python -m bench.memory`.
"""

from __future__ import annotations

import math
import struct
import threading
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from breakdesk.domain.models import ExceptionRecord
from breakdesk.memory.resolution import resolution_headline
from breakdesk.memory.text import (
    analyze,
    describe,
    field_token,
    key_tokens,
    resolution_summary,
    similarity_keys,
)
from breakdesk.memory.vectors import VectorIndex
from breakdesk.native import load_kernel
from breakdesk.packs.compiler import CompiledDomainPack
from breakdesk.pipeline.types import SimilarCase
from breakdesk.store.cases import StoredCase, resolution_order

#: The batched search's scoring loop in C (setup.py builds it with Cython); numpy does the same without it.
_scoring = load_kernel("breakdesk.memory._scoring")

K1 = 1.2
B = 0.75
#: Query words scored, most discriminating first (bounded work per query).
MAX_QUERY_TERMS = 16
#: Words and field values in more than this share of a tenant's cases say little and cost the most to score
#: (applies once a tenant has more than `SMALL_INDEX` cases).
MAX_DF_SHARE = 0.2
SMALL_INDEX = 50
#: A one-edit variant counts as a misspelling of a word when it is this much rarer than the word.
VARIANT_DF_RATIO = 0.25
#: Query weight of a corrected or misspelt match.
TYPO_WEIGHT = 0.8
#: Below n / SORT_FACTOR postings a query's scores are accumulated over its sorted distinct cases, above
#: over n-sized arrays. Both give the same numbers; 8 was the fastest of 0.5, 1, 3 and 8 on the pipeline
#: bench's queries at ~5.6k cases (~1.7k postings per query).
SORT_FACTOR = 8
#: `search_many` first tries skipping the biggest field lists whose shares add up to less than this share of
#: the best possible score; where that proves nothing, it skips what stays under the k-th best score it found
#: (which always holds). Only speed depends on it: 0.75-0.9 were the fastest of 0-1 on the pipeline bench.
PRUNE_GUESS = 0.75
#: ...and only lists of at least this many cases (or 1/32 of the tenant's).
PRUNE_MIN_POSTINGS = 64
#: `search_many` scores a batch's queries together, as many at a time as keep (queries x cases) within this
#: many cells (an index-sized boolean and int64 array per group: ~9 MB).
BATCH_CELLS = 1 << 20
#: ...and at most this many queries (see `search_many`).
CHUNK_QUERIES = 128
#: Candidates taken from each list (lexical+fields, vector) before the final ranking.
CANDIDATES = 60
#: Field IDF saturates here: every shared value held by fewer than ~1 in 3 cases of the type counts the same.
#: A rarer shared value (an instrument, a claim's procedure code) is more often a coincidence or the
#: particular instance than the kind of problem, so what counts is how many ordinary facts two cases share
#: (counterparty, reason, depository, payer...) — on the labeled set, lower caps did better down to ~1.
FIELD_IDF_CAP = 1.0
#: Field values in most cases of the type (`status=FAILED` among fails) are skipped: they cost postings
#: and separate nothing.
MIN_FIELD_IDF = 0.3
#: Fusion weights: normalised text score (BM25 / best BM25), share of the query's field evidence matched,
#: cosine (when the tenant has vectors), same type, same source. Tuned on tests/data/retrieval (bench.memory):
#: fields carry most of "the same problem", text separates causes among cases with the same fields. With
#: vectors the cosine takes over most of that second role (paraphrases share meaning, not words), so the
#: text weight halves.
W_TEXT, W_FIELD, W_VEC, W_TYPE, W_SOURCE = 0.10, 0.40, 1.00, 0.30, 0.10
W_TEXT_WITH_VECTORS = 0.05
#: ...unless the pack declares the type's key fields: they then say which cases are the same problem, and the
#: words and the cosine only order those, where the words do better than half weight (labeled set, minilm).
W_TEXT_WITH_VECTORS_AND_KEYS = 0.10
#: Weight of the share of the query's declared key fields (`similarity.keyFields` of its type) a case matches,
#: on top of W_FIELD (declared fields count there too): a case matching every field that defines the problem
#: ranks far above one sharing an incidental attribute or a few words. On the labeled set 0.4-1.0 do alike.
W_KEY = 1.0


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


class Query:
    """What a search looks for: a case's text terms (term → weight), key fields, vector (optional), own id.

    Treated as immutable (`replace` makes a changed copy). A plain class rather than a frozen dataclass:
    the pipeline builds one per exception, and a dataclass's generated initialiser runs as interpreted code
    (frozen, one `object.__setattr__` call per field) where this one is compiled."""

    def __init__(
        self,
        exception_id: str | None,
        exception_type: str,
        source_system: str,
        terms: Mapping[str, float],
        entities: Mapping[str, str],
        fingerprint: str | None = None,
        vector: np.ndarray | None = None,
        key_fields: tuple[str, ...] = (),
        tokens: tuple[str, ...] | None = None,
    ) -> None:
        self.exception_id = exception_id
        self.exception_type = exception_type
        self.source_system = source_system
        self.terms = terms
        self.entities = entities
        self.fingerprint = fingerprint
        self.vector = vector
        #: The fields that define "the same problem" for the query's type (the domain pack's
        #: `similarity.keyFields`); empty when the pack declares none.
        self.key_fields = key_fields
        #: The exact-match tokens of `entities` then of the fingerprint, in that order (`query_tokens`), when
        #: the caller has them already: the hot path computes them once per exception for both its query
        #: and its case (`TenantIndex.add`).
        self.tokens = tokens

    def replace(self, **changes: Any) -> Query:
        """A copy with some fields changed (as `dataclasses.replace`)."""
        fields = {name: getattr(self, name) for name in _QUERY_FIELDS}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Query has no field {sorted(unknown)[0]!r}")
        fields.update(changes)
        return Query(**fields)

    def __repr__(self) -> str:
        return (f"Query(exception_id={self.exception_id!r}, exception_type={self.exception_type!r}, "
                f"source_system={self.source_system!r}, entities={dict(self.entities)!r})")


_QUERY_FIELDS = ("exception_id", "exception_type", "source_system", "terms", "entities", "fingerprint", "vector",
                 "key_fields", "tokens")


def query_tokens(entities: Mapping[str, str], fingerprint: str | None) -> tuple[str, ...]:
    """The tokens a query looks its fields up by: `field_token` of each entity, then `fp:<fingerprint>`.
    (An entity literally named `fp` whose value is the fingerprint reads as the fingerprint.)"""
    out = [f"fp:{v}" if name == "fp" and v == fingerprint else field_token(name, v) for name, v in entities.items()]
    if fingerprint:
        out.append(f"fp:{fingerprint}")
    return tuple(out)


def case_query(record: ExceptionRecord, fingerprint: str | None, domain: CompiledDomainPack | None
               ) -> tuple[str, dict[str, str], dict[str, float], list[str], Query]:
    """The hot path's reading of one exception: its text and key fields (`describe`), its text terms
    (`analyze`) and structured tokens (`key_tokens`), which its index entry reuses, and its query. One
    compiled call: made one by one from the pipeline's interpreted loop, the five cost more in argument
    passing than some of them in work."""
    body, entities = describe(record, domain)
    counts, tokens, query = text_query(record.exception_id, record.exception_type, record.source_system,
                                       fingerprint, body, entities, similarity_keys(domain, record.exception_type))
    return body, entities, counts, tokens, query


def text_query(exception_id: str, exception_type: str, source_system: str, fingerprint: str | None, body: str,
               entities: dict[str, str], keys: tuple[str, ...]) -> tuple[dict[str, float], list[str], Query]:
    """`case_query` from an exception's rendered text and key fields (`describe`) and its type's similarity
    keys: what the search process (`memory.sidecar`) receives instead of the record and its pack."""
    counts = analyze(body, entities)
    tokens = key_tokens(entities, fingerprint)
    qtokens = (query_tokens(entities, fingerprint) if fingerprint and entities.get("fp") == fingerprint
               else tuple(tokens))
    query = Query(exception_id, exception_type, source_system, counts, entities, fingerprint, None, keys, qtokens)
    return counts, tokens, query


#: One field of a query that other cases can share: (posting id, weight, name, value). A plain tuple, not a
#: NamedTuple: the hot path makes ~7 per query, and compiled code builds a plain tuple without a call.
QField = tuple[int, float, str, str]

#: `SimilarCase(...)` without the generated `__new__`'s Python frame (the hot path makes k per query).
_new_tuple = tuple.__new__
#: a hit's score → `round(score, 4)`, as the pipeline shows it: scores recur (cases matching the same fields
#: score alike), and a look-up costs a tenth of rounding.
_ROUNDED: dict[float, float] = {}
_WEIGHT = itemgetter(1)
_NO_COUNTS: dict[int, int] = {}
#: A slot or a term frequency as the bytes postings hold it (native int32, float32).
_I32 = struct.Struct("=i").pack
_F32 = struct.Struct("=f").pack


class Hit(NamedTuple):
    """One similar case, its fused score (0..1) and why it is similar. A tuple: the hot path makes many."""

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


def _deletes(word: str) -> list[str]:
    return [word[:i] + word[i + 1:] for i in range(len(word))]


def _typo_candidate(word: str) -> bool:
    return len(word) >= 5 and word.isalpha()


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


#: Type of a query's prepared lists: (query words, fields, their weight total, declared keys, their count).
_Prep = tuple[list[tuple[int, float]], list["QField"], float, list["QField"], float]
#: Field weights at least this add up exactly in float64 (24-bit mantissas, exponents within 2^6 / 2^-24 of
#: each other): `_score_chunk` relies on it to add skipped lists' shares afterwards.
MIN_EXACT_WEIGHT = 2.0 ** -20
#: One ranked candidate: (-score, exception id, slot, normalised text score).
_Ranked = tuple[float, str, int, float]


def _below(reach: float, theta: float) -> bool:
    """`reach` (a bound summed in float64) is surely below `theta` (a float32 score): float32 rounding of the
    fused score is ~1e-7 relative, the margin 1e-6."""
    return reach * (1 + 1e-6) + 1e-6 < theta


@dataclass(slots=True)
class _Lists:
    """A chunk's posting lists as `TenantIndex._gather` collects them for the numpy scorer (the compiled one
    reads the index's own lists)."""

    parts: list[np.ndarray]  # each list's postings (slots), query after query
    norms: list[np.ndarray]  # the text lists' BM25 norms, in the same order
    sizes: list[int]
    weights: list[float]
    kinds: list[int]  # 0 text, 1 field, 2 declared key
    q_lists: list[int]  # query i's lists: q_lists[i]:q_lists[i + 1]
    sk_start: list[int]  # query i's skipped lists: sk_start[i]:sk_start[i + 1]
    sk_row: list[int]  # a skipped list's row of `_held`
    sk_w: list[float]  # ...its field weight (float32-exact)
    sk_c: list[float]  # ...and how many declared keys it is


#: float64 → the float32 it rounds to, as a float (field weights recur: a dict look-up is cheaper than numpy).
_FLOAT32: dict[float, float] = {}

_SCRATCH = threading.local()
_NO_HELD = np.zeros((1, 1), np.uint8)


def _scratch(size: int) -> np.ndarray:
    """An int64 array of at least `size` cells, reused across `search_many` calls of this thread (allocating
    one per batch costs more in page faults than the search itself)."""
    have: np.ndarray | None = getattr(_SCRATCH, "where", None)
    if have is None or have.shape[0] < size:
        have = _SCRATCH.where = np.empty(size, dtype=np.int64)
    return have


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


class TenantIndex:
    """Everything one tenant's searches need, in memory. Not shared between tenants by construction.

    Why postings and per-case entries are `bytearray`s and flat arrays, not an `array` per list and per
    case: every `array` (and tuple) is an object the garbage collector tracks, and its full passes walk
    every tracked object in the process, stalling the event loop that also answers the API. An `array` per
    posting list and per case made ~12 tracked objects per case: ~1.2 million at 100,000 cases, a full pass
    of ~0.3 s (bench/RESULTS.md, `--only heap`). What is left is one per case, its `StoredCase`.
    """

    def __init__(self, tenant_id: str, exact_limit: int | None = None) -> None:
        self.tenant_id = tenant_id
        self.exact_limit = exact_limit
        self.last_case_id = 0
        self.last_vector_id: dict[str, int] = {}
        self._eids: list[str] = []
        #: Every slot's exception id sorts after the previous slot's (ids issued in order, no case replaced):
        #: ranking ties by id is then ranking them by slot.
        self._ids_ascending = True
        self._slot: dict[str, int] = {}
        self._cases: list[StoredCase | None] = []
        # Per slot, flat: slot s's term ids are `_slot_tids[_slot_t_at[s]:_slot_t_at[s + 1]]`, its field ids
        # likewise (what a retired slot held stays, unread: only live slots are looked at).
        self._slot_tids = array("i")
        self._slot_t_at = array("q", [0])
        self._slot_fids = array("i")
        self._slot_f_at = array("q", [0])
        self._alive = np.zeros(0, dtype=bool)
        self._len = np.zeros(0, dtype=np.float32)
        self._type = np.zeros(0, dtype=np.int32)
        self._source = np.zeros(0, dtype=np.int32)
        self._status = np.zeros(0, dtype=np.int32)
        self._severity = np.zeros(0, dtype=np.int32)
        self._resolved = np.zeros(0, dtype=bool)
        self._received = np.zeros(0, dtype=np.float64)
        #: per slot, its case's place in the tenant's recency order (`StoredCase.recent`: the row id, or for a
        #: re-rendered case its earlier row's); triage's window counts the latest by it (`_window`)
        self._recent = np.zeros(0, dtype=np.int64)
        #: every slot's place is later than every earlier slot's (no re-rendered case held): the window is then
        #: a tail of slots
        self._recent_ascending = True
        self._recent_max = 0
        #: (window, first slot, live mask) of the last `_window` computed out of slot order, until a change
        self._window_at: tuple[int, int, np.ndarray] | None = None
        self._types, self._sources, self._statuses, self._severities = _Codes(), _Codes(), _Codes(), _Codes()
        self._term_id: dict[str, int] = {}
        self._term_names: list[str] = []
        # Word postings, like field postings: per word id, its slots (int32) and term frequencies (float32) in
        # `bytearray`s, and for the words searched, their slots and BM25 norms as numpy arrays (`_text_slots`:
        # the hot path reuses them across a batch) with the average length they were computed at.
        self._tdocs: list[bytearray] = []
        self._ttfs: list[bytearray] = []
        self._tnorms: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        self._df: list[int] = []
        self._deletes: dict[str, list[int]] = {}  # one-letter deletions of words -> the words
        self._near: dict[int, list[int]] = {}  # word -> words one edit away
        self._field_id: dict[str, int] = {}
        # Field postings, native int32 slots in a `bytearray` per field value (a tenant has several new field
        # values per case, ids mostly: see the class docstring for why not an `array`).
        self._fpost: list[bytearray] = []
        self._fnp: dict[int, np.ndarray] = {}  # field id -> its postings as numpy, while they do not grow
        self._fdf: list[int] = []
        self._type_live: dict[int, int] = {}
        self._by_type: dict[int, array] = {}  # type code -> slots, oldest first
        #: type code -> field id -> live cases of the type holding the field value (one dict per type: the
        #: hot path looks up many fields of one type at a time, without building a key per field)
        self._type_df: dict[int, dict[int, int]] = {}
        #: fingerprint -> the live slots of its resolved cases (a tuple of ints: untracked by the collector);
        #: `last_resolution` picks among them as the store does, so a reopened case hands the fingerprint back
        #: to the resolution before it
        self._fp_resolved: dict[str, tuple[int, ...]] = {}
        self._field_stats: dict[tuple[int, bool], dict[int, tuple[int, float]]] = {}
        self._held_rows: dict[int, int] = {}  # field id -> its row of `_held` (`_held_row`), until a change
        self._held: np.ndarray | None = None
        #: field id -> `_field_slots(fid, _slots_from)`, until a change (the hot path asks for each list often)
        self._slots_of: dict[int, np.ndarray] = {}
        self._slots_from = 0
        self._total_len = 0.0
        self._live = 0
        self.vectors: dict[str, VectorIndex] = {}

    # ------------------------------------------------------------------ size

    def __len__(self) -> int:
        return self._live

    @property
    def slots(self) -> int:
        """Cases held, replaced ones included (what the index's memory grows with)."""
        return len(self._eids)

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
        self._received, self._recent = g(self._received), g(self._recent)

    def _term(self, word: str) -> int:
        tid = self._term_id.get(word)
        if tid is None:
            tid = self._term_id[word] = len(self._term_names)
            self._term_names.append(word)
            self._tdocs.append(bytearray())
            self._ttfs.append(bytearray())
            self._df.append(0)
            if _typo_candidate(word):
                for other in self._neighbours(word):
                    self._near.setdefault(tid, []).append(other)
                    self._near.setdefault(other, []).append(tid)
                for d in _deletes(word):
                    self._deletes.setdefault(d, []).append(tid)
        return tid

    def _neighbours(self, word: str) -> set[int]:
        """Known words one edit away from `word` (insertion, deletion, substitution, transposition)."""
        out: set[int] = set(self._deletes.get(word, ()))  # `word` plus a letter
        for d in _deletes(word):
            tid = self._term_id.get(d)
            if tid is not None:  # `word` minus a letter
                out.add(tid)
            out.update(self._deletes.get(d, ()))  # a substituted or transposed letter
        out.discard(self._term_id.get(word, -1))
        return out

    def _field(self, token: str) -> int:
        fid = self._field_id.get(token)
        if fid is None:
            fid = self._field_id[token] = len(self._fpost)
            self._fpost.append(bytearray())
            self._fdf.append(0)
        return fid

    def add(self, case: StoredCase, counts: Mapping[str, float] | None = None,
            tokens: Sequence[str] | None = None) -> None:
        """Add or replace one case (a replaced case's old slot stops matching). `counts`: the case's text
        terms when the caller has them already (`analyze(case.body, case.entities)`); `tokens`: its
        structured tokens likewise (`key_tokens(case.entities, case.fingerprint)`)."""
        if case.tenant_id != self.tenant_id:
            raise ValueError(f"case of tenant {case.tenant_id!r} offered to the index of {self.tenant_id!r}")
        if self._field_stats:
            self._field_stats.clear()
        if self._held_rows:
            self._held_rows.clear()
        if self._slots_of:
            self._slots_of.clear()
        self._window_at = None
        eid = case.exception_id
        self.last_case_id = max(self.last_case_id, case.id)
        old = self._slot.get(eid)
        if old is not None:
            self._retire(old)
        slot = len(self._eids)
        self._grow(slot + 1)
        if self._ids_ascending and self._eids and eid <= self._eids[-1]:
            self._ids_ascending = False
        self._eids.append(eid)
        self._slot[eid] = slot
        self._cases.append(case)
        counts = counts if counts is not None else analyze(case.body, case.entities)
        at = _I32(slot)
        length = 0.0
        if counts:
            term_id, tdocs, ttfs, df, tids = self._term_id, self._tdocs, self._ttfs, self._df, self._slot_tids
            for word, tf in counts.items():
                tid = term_id.get(word)
                if tid is None:
                    tid = self._term(word)
                tdocs[tid].extend(at)
                ttfs[tid].extend(_F32(tf))
                df[tid] += 1
                tids.append(tid)
                length += tf
        self._slot_t_at.append(len(self._slot_tids))
        tcode = self._types.code(case.exception_type)
        field_id, fpost, fdf, fids = self._field_id, self._fpost, self._fdf, self._slot_fids
        type_df = self._type_df.get(tcode)
        if type_df is None:
            type_df = self._type_df[tcode] = {}
        for tok in dict.fromkeys(tokens if tokens is not None else key_tokens(case.entities, case.fingerprint)):
            fid = field_id.get(tok)
            if fid is None:
                fid = self._field(tok)
            fpost[fid].extend(at)
            fdf[fid] += 1
            type_df[fid] = type_df.get(fid, 0) + 1
            fids.append(fid)
        self._slot_f_at.append(len(fids))
        self._len[slot] = length
        self._total_len += length
        self._alive[slot] = True
        self._live += 1
        self._type[slot] = tcode
        self._type_live[tcode] = self._type_live.get(tcode, 0) + 1
        by_type = self._by_type.get(tcode)
        if by_type is None:
            by_type = self._by_type[tcode] = array("i")
        by_type.append(slot)
        self._source[slot] = self._sources.code(case.source_system)
        self._status[slot] = self._statuses.code(case.status)
        self._severity[slot] = self._severities.code(case.severity)
        resolution = case.resolution
        self._resolved[slot] = resolution is not None
        self._received[slot] = case.received_at.timestamp()
        recent = case.recent
        self._recent[slot] = recent
        if recent < self._recent_max:
            self._recent_ascending = False
        else:
            self._recent_max = recent
        if resolution is not None and case.fingerprint:
            self._fp_resolved[case.fingerprint] = (*self._fp_resolved.get(case.fingerprint, ()), slot)
        if old is not None:
            for vi in self.vectors.values():
                vi.remove(old)

    def _retire(self, slot: int) -> None:
        if not self._alive[slot]:
            return
        self._field_stats.clear()
        self._held_rows.clear()
        self._slots_of.clear()
        self._window_at = None
        self._alive[slot] = False
        self._live -= 1
        tcode = int(self._type[slot])
        self._type_live[tcode] -= 1
        self._total_len -= float(self._len[slot])
        for tid in self._terms_of(slot):
            self._df[tid] -= 1
        type_df = self._type_df[tcode]
        for fid in self._fields_of(slot):
            self._fdf[fid] -= 1
            type_df[fid] -= 1
        case = self._cases[slot]
        if case is not None and case.fingerprint and case.resolution is not None:
            left = tuple(s for s in self._fp_resolved.get(case.fingerprint, ()) if s != slot)
            if left:
                self._fp_resolved[case.fingerprint] = left
            else:
                self._fp_resolved.pop(case.fingerprint, None)
        self._cases[slot] = None

    def _terms_of(self, slot: int) -> array:
        """The term ids of slot `slot`'s words (each once)."""
        return self._slot_tids[self._slot_t_at[slot]:self._slot_t_at[slot + 1]]

    def _fields_of(self, slot: int) -> array:
        """The field ids of slot `slot`'s structured tokens (each once)."""
        return self._slot_fids[self._slot_f_at[slot]:self._slot_f_at[slot + 1]]

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
        """The fingerprint's latest resolved case, as the store's `last_resolutions` orders them: by
        resolution time (none first), then row id."""
        held = [self._cases[slot] for slot in self._fp_resolved.get(fingerprint, ())]
        return max((case for case in held if case is not None), key=resolution_order, default=None)

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

    def case_ids(self, filters: Filters, at_most: int) -> list[int] | None:
        """The store ids (`memory_cases.id`) of the live cases that pass `filters`, or None when the filters
        are empty or more than `at_most` cases pass: the rows `Store.pgvector_search(among=...)` compares
        exactly, a selective filter's cheaper path than the HNSW graph (`Memory.similar`)."""
        if filters.empty:
            return None
        mask = self._mask(filters, len(self._eids))
        assert mask is not None
        slots = np.flatnonzero(mask)
        if slots.shape[0] > at_most:
            return None
        cases = self._cases
        out: list[int] = []
        for slot in slots.tolist():
            case = cases[slot]
            if case is not None:  # (live slots hold their case)
                out.append(case.id)
        return out

    def _df_cap(self) -> float:
        return MAX_DF_SHARE * self._live if self._live > SMALL_INDEX else float("inf")

    def _query_terms(self, counts: Mapping[str, float]) -> list[tuple[int, float]]:
        """(term id, query weight * idf) of the most discriminating query words, with their misspellings in
        the index; an unknown word of five letters or more stands for the most common known word one edit
        away (a typo's likely intent)."""
        n = max(1, self._live)
        cap = self._df_cap()
        chosen: dict[int, tuple[float, float, int]] = {}  # tid -> (idf, weight, representative tid)
        for word, qtf in counts.items():
            weight = 1.0 + math.log(qtf) if qtf > 1 else float(qtf)
            tid = self._term_id.get(word)
            if (tid is None or self._df[tid] <= 0) and _typo_candidate(word):
                best, best_df = None, 0
                for cand in self._neighbours(word):
                    if self._df[cand] > best_df:
                        best, best_df = cand, self._df[cand]
                tid, weight = best, weight * TYPO_WEIGHT
            if tid is None:
                continue
            df = self._df[tid]
            if df <= 0 or df > cap:
                continue
            idf = _idf(n, df)
            prev = chosen.get(tid)
            if prev is None or prev[0] * prev[1] < idf * weight:
                chosen[tid] = (idf, weight, tid)
        ranked = sorted(chosen.items(), key=lambda kv: -kv[1][0] * kv[1][1])[:MAX_QUERY_TERMS]
        out = [(tid, idf * w) for tid, (idf, w, _) in ranked]
        for tid, (idf, w, _) in ranked:  # misspellings of a word in other cases: rarer words one edit away
            limit = max(1.0, self._df[tid] * VARIANT_DF_RATIO)
            for other in self._near.get(tid, ()):
                if 0 < self._df[other] <= limit and other not in chosen:
                    out.append((other, idf * w * TYPO_WEIGHT))
        return out

    def _query_fields(self, q: Query, self_slot: int | None) -> tuple[list[QField], float, list[QField], float]:
        """The query's fields other cases can share and their weight totals (the most a case can match), in two
        lists. All fields, rarest first, weighted by IDF among cases of the query's type — `csd=DTC` is rare
        in the tenant but says nothing among settlement fails — saturating at `FIELD_IDF_CAP`. And the
        fields the pack declares to define the problem (`q.key_fields`), in query order, weighing 1 each
        however common their value: the pack, not the data, says they matter (their number is bounded by the
        pack schema, and so is the cost of their postings)."""
        cap = self._df_cap()
        qtype = self._types.codes.get(q.exception_type, -1)
        n_type = max(1, self._type_live.get(qtype, 0) - (self_slot is not None))
        n_all = max(1, self._live)
        own = self._fields_of(self_slot) if self_slot is not None else None
        own_set = set(own) if own is not None else ()
        declared = q.key_fields
        out: list[QField] = []
        keys: list[QField] = []
        total = key_total = 0.0
        field_id, fdf = self._field_id, self._fdf
        type_df = self._type_df.get(qtype, _NO_COUNTS)
        # (df, field weight) of a field value among the query's type — the weight 0.0 where the value is too
        # common or says too little to count as a field (it may still be a declared key): the same for every
        # query of a batch until the index changes (`_field_stats` is emptied on every add and retire)
        stats_key = (qtype, self_slot is not None)
        stats = self._field_stats.get(stats_key)
        if stats is None:
            stats = self._field_stats[stats_key] = {}
        items = list(q.entities.items())
        if q.fingerprint:
            items.append(("fp", q.fingerprint))
        tokens = q.tokens if q.tokens is not None else query_tokens(q.entities, q.fingerprint)
        if len(tokens) != len(items):
            raise ValueError(f"query {q.exception_id}: {len(tokens)} tokens for {len(items)} fields")
        for j in range(len(items)):  # (indexing, not `zip(strict=True)`: compiled, it is a generic call)
            name, value = items[j]
            token = tokens[j]
            fid = field_id.get(token)
            if fid is None:
                continue
            mine = own is not None and fid in own_set
            stat = None if mine else stats.get(fid)
            if stat is None:
                df = fdf[fid] - mine
                df_type = type_df.get(fid, 0) - mine
                idf = _idf(n_type, df_type) if df_type > 0 else _idf(n_all, df) if df > 0 else 0.0
                stat = (df, min(idf, FIELD_IDF_CAP) if 0 < df <= cap and idf >= MIN_FIELD_IDF else 0.0)
                if not mine:
                    stats[fid] = stat
            df, weight = stat
            if df <= 0:
                continue
            if name in declared:  # declared fields are searched however common
                keys.append((fid, 1.0, name, value))
                key_total += 1.0
            if weight:
                out.append((fid, weight, name, value))
                total += weight
        out.sort(key=_WEIGHT, reverse=True)  # stable: equal weights stay in query order
        return out, total, keys, key_total

    def _scores(self, qterms: list[tuple[int, float]], qfields: Sequence[QField], qkeys: Sequence[QField], n: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(slots, BM25 text scores, incidental field scores, declared key field scores) of every case sharing
        a word or a field with the query."""
        avgdl = self._total_len / max(1, self._live) or 1.0
        # Postings and their weights gathered in Python lists, multiplied once: a numpy call costs about as
        # much as a few hundred postings, and a query has up to ~30 posting lists. (float32 products either
        # way: `norm * w` per list and `norms * repeat(w)` give the same numbers.)
        docs_parts: list[np.ndarray] = []
        norms: list[np.ndarray] = []
        sizes: list[int] = []
        weights: list[float] = []
        for tid, w in qterms:
            docs, norm = self._text_slots(tid, avgdl)
            docs_parts.append(docs)
            norms.append(norm)
            sizes.append(docs.shape[0])
            weights.append(w)
        nt = sum(sizes)
        bounds = [nt]
        for group in (qfields, qkeys):
            start = len(sizes)
            for f in group:
                docs = self._field_slots(f[0])
                docs_parts.append(docs)
                sizes.append(docs.shape[0])
                weights.append(f[1])
            bounds.append(bounds[-1] + sum(sizes[start:]))
        total = bounds[-1]
        if total == 0:
            empty = np.zeros(0, np.float32)
            return np.zeros(0, np.int64), empty, empty, empty
        docs = np.concatenate(docs_parts)
        w_all = np.repeat(np.asarray(weights, dtype=np.float32), sizes)
        if nt:
            w_all[:nt] *= np.concatenate(norms)
        # One bincount for the three signals: a posting of signal i goes to row i of a (3, width) table, so
        # every cell sums the same weights in the same order as one bincount per signal would (same floats),
        # with a third of the numpy calls (this runs once per triaged exception).
        b0, b1 = bounds[0], bounds[1]
        if total * SORT_FACTOR < n:  # few postings: sort-based accumulation beats n-sized arrays
            slots, cell = np.unique(docs, return_inverse=True)
            width = slots.shape[0]
            cell = cell.astype(np.int64, copy=False)
            cell[b0:b1] += width
            cell[b1:] += 2 * width
            table = np.bincount(cell, weights=w_all, minlength=3 * width).reshape(3, width)
            alive = self._alive[slots]
            slots = slots[alive]
            table = table[:, alive]
        else:
            cell = docs.astype(np.int64)
            cell[b0:b1] += n
            cell[b1:] += 2 * n
            table = np.bincount(cell, weights=w_all, minlength=3 * n).reshape(3, n)
            # every weight is positive, so the cases with a posting are exactly those with a score
            present = np.zeros(n, dtype=bool)
            present[docs] = True
            present &= self._alive[:n]
            slots = np.flatnonzero(present)
            table = table[:, slots]
        text, fields, keys = table.astype(np.float32)
        return slots.astype(np.int64), text, fields, keys

    def _with_same_type(self, slots: np.ndarray, text: np.ndarray, fields: np.ndarray, keys: np.ndarray, qtype: int,
                        k: int, allowed: Any, window: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidates topped up to `k` with the latest allowed cases of the query's type (scores 0: only
        the type and source boosts rank them). `window`: a window's mask out of slot order (`_window`): the
        type's cases in it, latest place first (the last slots may hold re-rendered old cases outside it)."""
        have = set(slots.tolist())
        extra: list[int] = []
        recent: Any = self._by_type.get(qtype, array("i"))
        if window is not None and len(recent):
            mine = np.frombuffer(recent, dtype=np.int32)
            mine = mine[window[mine]]
            recent = mine[np.argsort(self._recent[mine], kind="stable")].tolist()
        for scanned, slot in enumerate(reversed(recent)):
            if len(extra) + len(have) >= k or scanned >= 4 * k + 64:  # bounded: a filter may exclude most
                break
            if slot not in have and allowed(slot):
                extra.append(slot)
        if not extra:
            return slots, text, fields, keys
        zeros = np.zeros(len(extra), dtype=np.float32)
        merged = np.concatenate([slots, np.asarray(extra, dtype=np.int64)])
        order = np.argsort(merged, kind="stable")  # callers rely on sorted slots
        return (merged[order], np.concatenate([text, zeros])[order], np.concatenate([fields, zeros])[order],
                np.concatenate([keys, zeros])[order])

    def search(
        self,
        q: Query,
        k: int,
        filters: Filters = Filters(),
        model: str | None = None,
        nearest: Sequence[tuple[str, float]] | None = None,
        window: int = 0,
        nearest_complete: bool = False,
    ) -> list[Hit]:
        """Top-k hits for `q` among this tenant's cases (never `q` itself, nor `filters.exclude`).

        `nearest`: (exception id, cosine) from an external vector search (pgvector) instead of the resident
        vectors of `model`; `nearest_complete`: it holds every case with a vector that passes `filters` (it
        came back shorter than asked), so a case outside it has none and a cosine of 0, not the N-th's.
        `window`: among the latest `window` cases only (`_window`), as triage searches."""
        n = len(self._eids)
        if n == 0 or k <= 0 or self._live == 0:
            return []
        mask = self._mask(filters, n)
        from_slot, live = self._window(window)
        if from_slot > 0 or live is not self._alive:
            inside = live[:n].copy()
            inside[:from_slot] = False
            mask = inside if mask is None else mask & inside
        excluded: set[int] = set()
        for eid in (q.exception_id, *filters.exclude):
            if eid is not None and eid in self._slot:
                excluded.add(self._slot[eid])
        self_slot = self._slot.get(q.exception_id) if q.exception_id is not None else None
        if self_slot is not None and not self._alive[self_slot]:
            self_slot = None

        def allowed(slot: int) -> bool:
            return slot not in excluded and bool(self._alive[slot]) and (mask is None or bool(mask[slot]))

        qterms = self._query_terms(q.terms)
        qfields, fnorm, qkeys, knorm = self._query_fields(q, self_slot)
        slots, text, fields, keys = self._scores(qterms, qfields, qkeys, n)
        if mask is not None or excluded:
            keep = mask[slots] if mask is not None else np.ones(slots.shape[0], dtype=bool)
            for slot in excluded:
                keep &= slots != slot
            slots, text, fields, keys = slots[keep], text[keep], fields[keep], keys[keep]
        # vectors: from pgvector, or the resident index of `model`
        vi = self.vectors.get(model) if model else None
        qvec = q.vector
        external: dict[int, float] | None = None
        vec_slots: list[int] = []
        floor = 0.0
        if nearest is not None:
            # a case outside the N nearest is at most as near as the N-th, whatever the filters let through
            floor = 0.0 if nearest_complete else min((sim for _, sim in nearest), default=0.0)
            external = {}
            for eid, sim in nearest:
                hit_slot = self._slot.get(eid)
                if hit_slot is not None and allowed(hit_slot):
                    external[hit_slot] = sim
            vec_slots = list(external)[:CANDIDATES]
            vi = None
        elif vi is not None and qvec is not None and len(vi):
            found, _ = vi.search(qvec, CANDIDATES + len(excluded), mask)
            vec_slots = [s for s in found.tolist() if allowed(s)][:CANDIDATES]
        else:
            vi = None
        qtype = self._types.codes.get(q.exception_type, -1)
        if slots.shape[0] < k:  # too little shared: the latest cases of the same type are still the nearest
            slots, text, fields, keys = self._with_same_type(slots, text, fields, keys, qtype, k, allowed,
                                                             None if live is self._alive else live)
        if slots.size == 0 and not vec_slots:
            return []
        qsrc = self._sources.codes.get(q.source_system, -1)
        with_vectors = external is not None or vi is not None
        w_text = (W_TEXT if not with_vectors else W_TEXT_WITH_VECTORS_AND_KEYS if knorm > 0 else W_TEXT_WITH_VECTORS)
        top_text = float(text.max()) if text.size else 0.0
        text_n = text / top_text if top_text > 0 else text
        score = w_text * text_n + W_FIELD * (fields / fnorm if fnorm > 0 else fields)
        if knorm > 0:
            score += W_KEY * (keys / knorm)
        score += W_TYPE * (self._type[slots] == qtype) + W_SOURCE * (self._source[slots] == qsrc)
        if with_vectors and slots.shape[0] > CANDIDATES:  # the vector score is still to come: a wide pool
            pick = np.argpartition(-score, CANDIDATES - 1)[:CANDIDATES]
            cand, cand_text, cand_score = slots[pick], text_n[pick], score[pick]
        elif not with_vectors and slots.shape[0] > k:
            # The score is final: every case scoring at least the k-th best, ties ranked by id below (a pool
            # of a fixed size would cut a tie at an arbitrary place).
            neg = -score
            kth = np.partition(neg, k - 1)[k - 1]
            pick = np.flatnonzero(neg <= kth)
            if self._ids_ascending and pick.shape[0] > k:  # slots in id order: the first of a tie are kept
                tie = neg[pick] == kth
                pick = pick[~tie | (np.cumsum(tie) <= k - (pick.shape[0] - int(tie.sum())))]
            cand, cand_text, cand_score = slots[pick], text_n[pick], score[pick]
        else:
            cand, cand_text, cand_score = slots, text_n, score
        sem: np.ndarray | None = None
        if with_vectors:
            in_pool = set(cand.tolist())
            extra = [s for s in vec_slots if s not in in_pool]
            if extra:  # vector candidates sharing no word or field with the query, or outside the lexical pool
                ex = np.asarray(extra, dtype=np.int64)
                ex_text = np.zeros(ex.shape[0], dtype=np.float32)
                ex_score = (W_TYPE * (self._type[ex] == qtype) + W_SOURCE * (self._source[ex] == qsrc)).astype(np.float32)
                if slots.size:  # `slots` is sorted: the lexical scores of those that have one
                    pos = np.minimum(np.searchsorted(slots, ex), slots.shape[0] - 1)
                    found_at = slots[pos] == ex
                    ex_text[found_at] = text_n[pos[found_at]]
                    ex_score[found_at] = score[pos[found_at]]
                cand = np.concatenate([cand, ex])
                cand_text = np.concatenate([cand_text, ex_text])
                cand_score = np.concatenate([cand_score, ex_score])
            if external is not None:
                sem = np.array([external.get(s, floor) for s in cand.tolist()], dtype=np.float32)
            else:
                assert vi is not None and qvec is not None
                sem = vi.similarity(qvec, cand)
            cand_score = cand_score + W_VEC * np.clip(sem, 0.0, 1.0)
        scale = w_text + W_FIELD + W_TYPE + W_SOURCE + (W_VEC if sem is not None else 0.0) + (W_KEY if knorm > 0 else 0.0)
        sems = sem.tolist() if sem is not None else [None] * cand.shape[0]
        ranked = sorted((-sc, self._eids[slot], slot, tx, sm) for sc, slot, tx, sm in
                        zip(cand_score.tolist(), cand.tolist(), cand_text.tolist(), sems, strict=True))[:k]
        pairs = self._explaining(qterms, qfields, qkeys)
        return [self._hit(q, slot, -neg / scale, tx, sm, *pairs, len(qkeys)) for neg, _, slot, tx, sm in ranked]

    @staticmethod
    def _explaining(qterms: Sequence[tuple[int, float]], qfields: Sequence[QField], qkeys: Sequence[QField]
                    ) -> tuple[dict[int, float], list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """What every explanation compares against (`_hit`), prepared once for the k hits, never for the pool.
        The other shared fields leave out the declared key fields (they count in both scores, but a reader
        should see each shared fact once) and the fingerprint (said as "same fingerprint")."""
        keys = {f[2] for f in qkeys}
        return (dict(qterms), [(name, value, f"{name}={value}") for _, _, name, value in qkeys],
                [(name, value, f"{name}={value}") for _, _, name, value in qfields if name != "fp" and name not in keys])

    def _bare_hit(self, slot: int, score: float, lexical: float) -> Hit:
        """A hit without its explanation (`search_many(explain=False)`)."""
        case = self._cases[slot]
        assert case is not None
        return Hit(case.exception_id, round(score, 4), "", case.exception_type, case.status, case.severity,
                   resolution_summary(case.resolution), lexical)

    def search_many(self, queries: Sequence[Query], k: int, *, explain: bool = True) -> list[list[Hit]]:
        """`search(q, k)` for each query (no filters, no vectors: the pipeline's lexical + structured lookups
        for one batch): the same hits in the same order with the same scores, for less work.

        Why: the pipeline searches once per exception, and a search scores every case sharing anything with
        the query — common values such as `csd=DTC` or `side=RECEIVE` make that a sixth of the tenant, most of
        which cannot reach the top k — through ~40 numpy calls whose fixed cost outweighs the arithmetic. So
        the queries are scored together (`_score_chunk`: one pass of numpy calls for up to `CHUNK_QUERIES`
        queries) and first pruned (`_prune_plan`): each skips its biggest field lists when the most a case
        found only in those could score is below the k-th best score of the others; where that does not
        hold, the query is scored again skipping only what stays below the k-th best score found. Equal
        scores rank by exception id, as in `search`. `explain=False` leaves `Hit.why` empty: the pipeline
        shows ids, scores and resolutions only, and explaining k hits costs as much as finding them."""
        out: list[list[Hit]] = []
        for q, found in zip(queries, self._batch(queries, k), strict=True):
            if found is None:
                out.append(self._one(q, k, explain))
                continue
            scale, ranked, prep = found
            if explain and ranked:
                assert prep is not None
                qterms, qfields, _, qkeys, _ = prep
                pairs = self._explaining(qterms, qfields, qkeys)
                out.append([self._hit(q, slot, -neg / scale, tx, None, *pairs, len(qkeys)) for neg, _, slot, tx in ranked])
            else:
                out.append([self._bare_hit(slot, -neg / scale, tx) for neg, _, slot, tx in ranked])
        return out

    def similar_many(self, queries: Sequence[Query], k: int, window: int = 0) -> list[tuple[SimilarCase, ...]]:
        """`search_many(queries, k, explain=False)` as the pipeline's triage evidence (id, score, how it was
        resolved: the resolution's headline), built straight from the ranking: the hot path makes k of them
        per exception. With `window` > 0, among the latest `window` cases only (`_window`): exactly what
        `search(q, k, window=window)` finds."""
        out: list[tuple[SimilarCase, ...]] = []
        cases, rounded = self._cases, _ROUNDED
        from_slot, live = self._window(window)
        for q, found in zip(queries, self._batch(queries, k, from_slot, live), strict=True):
            if found is None:
                alone: list[SimilarCase] = []
                for h in self._one(q, k, False, window):
                    hit_case = self.case(h.exception_id)
                    alone.append(SimilarCase(h.exception_id, h.score, h.why,
                                             resolution_headline(hit_case.resolution) if hit_case else None))
                out.append(tuple(alone))
                continue
            scale, ranked, _ = found
            row = []
            for neg, eid, slot, _ in ranked:
                case = cases[slot]
                assert case is not None  # ranked slots are alive
                res = case.resolution  # most cases are unresolved: no call for those
                score = -neg / scale
                shown = rounded.get(score)
                if shown is None:
                    if len(rounded) > 4096:
                        rounded.clear()
                    shown = rounded[score] = round(score, 4)
                row.append(_new_tuple(SimilarCase, (eid, shown, "", resolution_headline(res) if res else None)))
            out.append(tuple(row))
        return out

    def window_start(self, window: int) -> int:
        """The first slot of the latest `window` live cases (`_window`); 0 for no window or no more live cases
        than that."""
        return self._window(window)[0]

    def _window(self, window: int) -> tuple[int, np.ndarray]:
        """The latest `window` live cases, by their place in the tenant's recency order (`StoredCase.recent`):
        (the first slot holding one, a live mask over every slot that is true for exactly those). The mask is
        `_alive` itself when they are the last `window` live slots, as they are unless the index holds
        re-rendered cases (which keep their earlier place but take a new slot). Only live cases count, and the
        order is the rows', not the slots': a process that followed every change and one that loaded the
        tenant afterwards (without the old slots of replaced cases) look through the same cases.

        Why the pipeline has a window: a batched search costs about in proportion to how many cases share
        the query's common values, i.e. to the tenant's size (bench/RESULTS.md: ~4x from 10k to 100k cases),
        and the pipeline searches once per exception. Bounding what triage looks through bounds that cost
        however long a tenant has been running; `similar` (API, CLI) still searches every case. Why by the
        rows' order and not the slots': re-rendering a domain pack's cases gives each a new slot, and would
        otherwise fill the window with old cases until as many new ones had arrived."""
        n = len(self._eids)
        if not 0 < window < self._live:
            return 0, self._alive
        if self._recent_ascending:
            if self._live == n:
                return n - window, self._alive
            return int(np.flatnonzero(self._alive[:n])[-window]), self._alive
        at = self._window_at
        if at is not None and at[0] == window:
            return at[1], at[2]
        live = np.flatnonzero(self._alive[:n])
        places = self._recent[live]
        cut = live.shape[0] - window
        kth = np.partition(places, cut)[cut]  # the earliest place in the window
        later = live[places > kth]
        # (places are unique among live rows in a store; equal ones, from hand-built indexes, go by slot)
        chosen = np.concatenate([later, live[places == kth][later.shape[0] - window:]])
        mask = np.zeros(self._alive.shape[0], dtype=bool)
        mask[chosen] = True
        first = int(chosen.min())
        self._window_at = (window, first, mask)
        return first, mask

    def _batch(self, queries: Sequence[Query], k: int, from_slot: int = 0, live: np.ndarray | None = None
               ) -> list[tuple[float, list[_Ranked], _Prep | None] | None]:
        """Per query: (the score scale, its top k as `search` ranks them, its prepared lists), or None for a
        query `search` must answer itself (its own case is indexed, or fewer than k cases share anything).
        Only cases from slot `from_slot` on that `live` marks (default: every live case) are candidates: a
        window (`_window`)."""
        live = self._alive if live is None else live
        n = len(self._eids)
        if n == 0 or k <= 0 or self._live == 0 or not queries:
            return [(1.0, [], None) for _ in queries]
        out: list[tuple[float, list[_Ranked], _Prep | None] | None] = [None] * len(queries)
        todo = [i for i, q in enumerate(queries) if q.exception_id is None or q.exception_id not in self._slot]
        # (a query whose own case is indexed is left to `search`, which knows how to exclude it)
        # A chunk at a time, start to end: what a query needs is dropped with its chunk (objects kept across
        # the whole batch would survive into the collector's older generations and make its passes dearer).
        per_chunk = max(1, min(CHUNK_QUERIES, BATCH_CELLS // n))
        for start in range(0, len(todo), per_chunk):
            part = todo[start:start + per_chunk]
            preps = [(self._query_terms(queries[i].terms), *self._query_fields(queries[i], None)) for i in part]
            plans = [self._prune_plan(prep, None, k) for prep in preps]
            found = self._score_chunk([queries[i] for i in part], preps, [plan[0] for plan in plans], k, from_slot,
                                      live)
            # Where the guess skipped too much, the k-th best found is still a lower bound of the true one:
            # skip what stays under it. That always holds (the cases scoring above it are then all kept).
            again: list[int] = []
            for j, (f, (skipped, reach)) in enumerate(zip(found, plans, strict=True)):
                if skipped and (f is None or not _below(reach, f[0])):
                    plans[j] = self._prune_plan(preps[j], f[0]) if f is not None else ({}, 0.0)
                    again.append(j)
            if again:
                redone = self._score_chunk([queries[part[j]] for j in again], [preps[j] for j in again],
                                           [plans[j][0] for j in again], k, from_slot, live)
                full = []
                for j, f in zip(again, redone, strict=True):
                    found[j] = f
                    if plans[j][0] and (f is None or not _below(plans[j][1], f[0])):
                        full.append(j)  # cannot happen (see above); kept exact all the same
                if full:
                    redone = self._score_chunk([queries[part[j]] for j in full], [preps[j] for j in full],
                                               [{}] * len(full), k, from_slot, live)
                    for j, f in zip(full, redone, strict=True):
                        found[j] = f
            for i, prep, f in zip(part, preps, found, strict=True):
                if f is not None:  # None: fewer than k candidates, `search` tops them up with recent cases
                    scale = W_TEXT + W_FIELD + W_TYPE + W_SOURCE + (W_KEY if prep[4] > 0 else 0.0)
                    out[i] = (scale, f[1], prep)
        return out

    def _field_slots(self, fid: int, from_slot: int = 0) -> np.ndarray:
        """The slots holding field value `fid` (from slot `from_slot` on: postings are in slot order, so a
        tail), as a numpy array (the whole list cached until the postings grow; `_gather` keeps the window's
        tails for its batch in `_slots_of`)."""
        docs = self._fpost[fid]
        out = self._fnp.get(fid)
        if out is None or out.shape[0] != len(docs) >> 2:
            out = self._fnp[fid] = np.frombuffer(docs, dtype=np.int32).copy() if docs else np.zeros(0, np.int32)
        if from_slot <= 0 or (out.shape[0] and out[0] >= from_slot):
            return out
        return out[int(np.searchsorted(out, from_slot)):]

    def _text_slots(self, tid: int, avgdl: float, from_slot: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Word `tid`'s postings and their BM25 norms, from slot `from_slot` on (a tail: postings are in slot
        order)."""
        have = self._tnorms.get(tid)
        raw = self._tdocs[tid]
        norm: np.ndarray | None = None
        if have is not None and have[0].shape[0] == len(raw) >> 2:  # the postings have not grown
            docs = have[0]
            if abs(avgdl - have[2]) <= 0.02 * have[2]:
                norm = have[1]
        else:
            docs = np.frombuffer(raw, dtype=np.int32).copy() if raw else np.zeros(0, np.int32)
        if norm is None:  # BM25's tf·(k1+1) / (tf + k1·(1-b+b·dl/avgdl)), again once avgdl moved 2 %
            tfs = np.frombuffer(self._ttfs[tid], dtype=np.float32) if raw else np.zeros(0, np.float32)
            norm = (tfs * (K1 + 1) / (tfs + K1 * (1 - B + B * self._len[docs] / avgdl))).astype(np.float32)
            self._tnorms[tid] = (docs, norm, avgdl)
        if from_slot:
            at_slot = int(np.searchsorted(docs, from_slot))
            docs, norm = docs[at_slot:], norm[at_slot:]
        return docs, norm

    def _held_row(self, fid: int) -> int:
        """The row of `_held` that says which slots hold field value `fid` (kept until the index changes: the
        big lists a batch skips recur across its queries, and one matrix is read without stacking)."""
        row = self._held_rows.get(fid)
        if row is None:
            n = len(self._eids)
            row = len(self._held_rows)
            held = self._held
            if held is None or row == 0:  # the first since a change: a cleared matrix as tall as the last one
                held = self._held = np.zeros((8 if held is None else held.shape[0], n), dtype=bool)
            elif row >= held.shape[0]:
                grown = np.zeros((2 * held.shape[0], n), dtype=bool)
                grown[:row] = held[:row]
                held = self._held = grown
            held[row, self._field_slots(fid)] = True
            self._held_rows[fid] = row
        return row

    def _one(self, q: Query, k: int, explain: bool, window: int = 0) -> list[Hit]:
        """`search` for a query `search_many` leaves to it, without explanations unless asked."""
        hits = self.search(q, k, window=window)
        return hits if explain else [h._replace(why="", matched_terms=(), shared_entities=()) for h in hits]

    def _prune_plan(self, prep: _Prep, theta: float | None = None, k: int = 0
                    ) -> tuple[dict[int, tuple[float, float]], float]:
        """The field lists a query may skip — {field id: (float32 field weight, declared key count)} — and the
        most a case found only in them can score (their shares + text weight + type and source boosts).

        A field list adds a constant to every case in it, so that bound holds for every skipped case. The
        biggest lists (of at least `PRUNE_MIN_POSTINGS` or 1/32 of the cases) are skipped first while the
        bound stays under `PRUNE_GUESS` of the best possible score — or, given `theta` (a k-th best score
        found), surely under `theta`. Whether the bound is under the k-th best score is checked by the caller.
        Guessing with `k`, nothing is skipped where the lists and words left hold fewer than k postings: the
        query would find fewer than k cases and be scored again."""
        _, qfields, fnorm, qkeys, knorm = prep
        if len(qfields) + len(qkeys) < 2:
            return {}, 0.0
        fpost = self._fpost
        big = max(PRUNE_MIN_POSTINGS, self._live // 32)  # skipping a small list saves less than it costs
        big <<= 2  # (in bytes: four per posting)
        # Most queries of a small tenant have no list that big: nothing to plan.
        has_big = False
        for group in (qfields, qkeys):
            for f in group:
                if len(fpost[f[0]]) >= big:
                    has_big = True
                    break
        if not has_big:
            return {}, 0.0
        # field id -> float32 field weight (0 for a declared key that is no field), in query order, then
        # the declared key count of each
        share: dict[int, float] = {}
        counts: dict[int, float] = {}
        as32 = _FLOAT32
        for f in qfields:
            w = f[1]
            w32 = as32.get(w)
            if w32 is None:
                if len(as32) > 4096:
                    as32.clear()
                w32 = as32[w] = float(np.float32(w))
            if 0.0 < w32 < MIN_EXACT_WEIGHT:
                return {}, 0.0
            share[f[0]] = w32
        for f in qkeys:
            fid = f[0]
            if fid not in share:
                share[fid] = 0.0
            counts[fid] = counts.get(fid, 0.0) + 1.0
        if len(share) < 2:
            return {}, 0.0
        bigs = [fid for fid in share if len(fpost[fid]) >= big]
        bound: dict[int, float] = {}
        bounds = 0.0
        for fid, w in share.items():
            c = counts.get(fid, 0.0)
            b = bound[fid] = (W_FIELD * w / fnorm if w else 0.0) + (W_KEY * c / knorm if c else 0.0)
            bounds += b
        reach = (W_TEXT if prep[0] else 0.0) + W_TYPE + W_SOURCE
        guess = PRUNE_GUESS * (reach + bounds)
        skipped: dict[int, tuple[float, float]] = {}
        if len(bigs) > 1:
            bigs.sort(key=lambda f: -len(fpost[f]))
        for fid in bigs:
            if (reach + bound[fid] < guess) if theta is None else _below(reach + bound[fid], theta):
                skipped[fid] = (share[fid], counts.get(fid, 0.0))
                reach += bound[fid]
        if not skipped or len(skipped) == len(share):
            return {}, 0.0
        if k and theta is None:
            # Fewer than k postings left (words and unskipped lists together): fewer than k cases found, and
            # the query would be scored again in full.
            tdocs = self._tdocs
            left = sum(len(tdocs[tid]) >> 2 for tid, _ in prep[0])
            for fid in share:
                if fid not in skipped:
                    left += len(fpost[fid]) >> 2
                    if left >= k:
                        break
            if left < k:
                return {}, 0.0
        return skipped, reach

    def _gather(self, preps: Sequence[_Prep], skips: Sequence[Mapping[int, tuple[float, float]]],
                from_slot: int) -> _Lists:
        """What a chunk's queries score, for `_score_chunk_numpy`: every list's postings from slot `from_slot`
        on, query after query (text, fields, declared keys, in `search`'s order), with their list weights and
        kinds and the BM25 norms of the text postings; each query's skipped lists (their `_held` rows and
        shares)."""
        avgdl = self._total_len / max(1, self._live) or 1.0
        if self._slots_from != from_slot:
            self._slots_of.clear()
            self._slots_from = from_slot
        slots_of = self._slots_of
        out = _Lists([], [], [], [], [], [0], [0], [], [], [])
        parts, norms, sizes, weights, kinds = out.parts, out.norms, out.sizes, out.weights, out.kinds
        sk_row, sk_w, sk_c = out.sk_row, out.sk_w, out.sk_c
        for (qterms, qfields, _, qkeys, _), skip in zip(preps, skips, strict=True):
            for tid, w in qterms:
                docs, norm = self._text_slots(tid, avgdl, from_slot)
                parts.append(docs)
                norms.append(norm)
                sizes.append(docs.shape[0])
                weights.append(w)
                kinds.append(0)
            for kind, group in ((1, qfields), (2, qkeys)):
                for f in group:  # (declared keys weigh 1 each)
                    fid = f[0]
                    if fid in skip:
                        continue
                    fdocs = slots_of.get(fid)
                    if fdocs is None:
                        fdocs = slots_of[fid] = self._field_slots(fid, from_slot)
                    parts.append(fdocs)
                    sizes.append(fdocs.shape[0])
                    weights.append(f[1])
                    kinds.append(kind)
            out.q_lists.append(len(sizes))
            for fid, (w, c) in skip.items():
                sk_row.append(self._held_row(fid))
                sk_w.append(w)
                sk_c.append(c)
            out.sk_start.append(len(sk_row))
        return out

    def _score_chunk(self, queries: Sequence[Query], preps: Sequence[_Prep],
                     skips: Sequence[Mapping[int, tuple[float, float]]], k: int, from_slot: int = 0,
                     live: np.ndarray | None = None) -> list[tuple[float, list[_Ranked]] | None]:
        """Each query's k-th best score and top k (as `search` ranks them) over the cases from slot `from_slot`
        on sharing a word or a field list not in its `skips` with it; None for a query with fewer than k such
        cases. (Postings are in slot order: the window is each list's tail, so only the tails are read.
        Skipped lists add their shares to the cases found, so they need no window.) Only cases `live` marks
        count (default: every live case; `_window`'s mask for a window out of slot order). By the compiled loop
        (`breakdesk.memory._scoring`) when built, else by numpy: the same numbers."""
        live = self._alive if live is None else live
        if _scoring is None:
            return self._score_chunk_numpy(queries, preps, self._gather(preps, skips, from_slot), k, live)
        avgdl = self._total_len / max(1, self._live) or 1.0
        codes_t, codes_s = self._types.codes, self._sources.codes
        todo: list[tuple[Any, ...]] = []
        for q, prep, skip in zip(queries, preps, skips, strict=True):
            qterms, qfields, fnorm, qkeys, knorm = prep
            texts: list[tuple[np.ndarray, np.ndarray, float]] = []
            for tid, w in qterms:
                docs, norm = self._text_slots(tid, avgdl, from_slot)
                texts.append((docs, norm, w))
            skipped = [(self._held_row(fid), w, c) for fid, (w, c) in skip.items()]
            todo.append((texts, qfields, qkeys, skip, skipped, codes_t.get(q.exception_type, -1),
                         codes_s.get(q.source_system, -1), fnorm if fnorm > 0 else 1.0,
                         knorm if knorm > 0 else 1.0, bool(qterms)))
        # (`_held_row` may have grown the matrix: it is read once every row is in)
        held = self._held.view(np.uint8) if self._held is not None and self._held_rows else _NO_HELD
        found = _scoring.score_queries(
            self._fpost, todo, held, live.view(np.uint8), self._type, self._source, self._eids, from_slot,
            k, self._ids_ascending, W_TEXT, W_FIELD, W_KEY, W_TYPE, W_SOURCE)
        if self._ids_ascending:  # ranked by the kernel
            return [None if got is None else (-got[0], got[1]) for got in found]
        return [None if got is None else (-got[0], sorted(got[1])[:k]) for got in found]

    def _score_chunk_numpy(self, queries: Sequence[Query], preps: Sequence[_Prep], lists: _Lists, k: int,
                           live: np.ndarray) -> list[tuple[float, list[_Ranked]] | None]:
        """`_score_chunk` in numpy, over `_gather`'s lists.

        Scores are `search`'s, bit for bit: text sums the same float32 weights in the same order (one cell per
        query, case and signal, one bincount for all); field and key sums are exact in float64 whatever the
        order (weights ≥ `MIN_EXACT_WEIGHT` with 24-bit mantissas, fewer than 64 of them), so skipped lists
        can be added in the same bincount from `_held_row`'s bitmaps; the fusion is the same float32
        arithmetic."""
        n = len(self._eids)
        nq = len(queries)
        sizes = lists.sizes
        kind = np.repeat(np.asarray(lists.kinds, dtype=np.int64), sizes)  # each posting's: 0 text, 1 fields, 2 keys
        q_lists, sk_start = lists.q_lists, lists.sk_start
        offset = np.repeat(np.arange(nq, dtype=np.int64) * n, [q_lists[i + 1] - q_lists[i] for i in range(nq)])
        cells_all = (np.concatenate(lists.parts) if sizes else np.zeros(0, np.int64)).astype(np.int64, copy=False) \
            + np.repeat(offset, sizes)  # a posting's cell: query position · n + slot
        # float32 list weights (declared keys weigh 1), text ones times their BM25 norms (float32 products,
        # as in `_scores`)
        w32 = np.repeat(np.asarray(lists.weights, dtype=np.float32), sizes)
        if lists.norms:
            w32[kind == 0] *= np.concatenate(lists.norms)
        sk_row, sk_w, sk_c = lists.sk_row, lists.sk_w, lists.sk_c
        # The cells that have a posting, in (query, case) order (the distinct postings, sorted as int32: cells
        # are fewer than `BATCH_CELLS`. In isolation 1.4-2x faster than marking a chunk-sized boolean array and
        # reading it back, the earlier way, at 80k-300k cells; on the pipeline bench's replayed searches the two
        # measured alike, within noise), and each posting's cell position among them (through a reused
        # scratch array).
        where = _scratch(nq * n)
        ordered = np.sort(cells_all.astype(np.int32))
        if ordered.shape[0]:
            distinct = np.empty(ordered.shape[0], dtype=bool)
            distinct[0] = True
            np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
            cells = ordered[distinct].astype(np.int64)
        else:
            cells = np.zeros(0, np.int64)
        width = cells.shape[0]
        where[cells] = np.arange(width, dtype=np.int64)
        index = where[cells_all]
        index += kind * width  # a posting of signal i goes to row i of a (3, width) table
        qpos, slots = np.divmod(cells, n)
        bound_at = np.searchsorted(qpos, np.arange(nq + 1))
        counts = np.diff(bound_at)
        if sk_row:  # each skipped list's share, for the cells of the queries that skipped it, in the same count
            pos_of = np.repeat(np.arange(nq), [sk_start[i + 1] - sk_start[i] for i in range(nq)])
            lens = counts[pos_of]
            cell_at = np.repeat(bound_at[pos_of] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
            held = self._held
            assert held is not None
            member = held.reshape(-1)[np.repeat(np.asarray(sk_row, dtype=np.int64) * n, lens) + slots[cell_at]]
            if any(sk_c):
                index = np.concatenate([index, cell_at + width, cell_at + 2 * width])
                w_all = np.concatenate([w32, np.repeat(sk_w, lens) * member, np.repeat(sk_c, lens) * member])
            else:
                index = np.concatenate([index, cell_at + width])
                w_all = np.concatenate([w32, np.repeat(sk_w, lens) * member])
        else:
            w_all = w32
        table = np.bincount(index, weights=w_all, minlength=3 * width).reshape(3, width)
        if self._live != n or live is not self._alive:  # replaced cases keep their slot, not their say
            alive = live[slots]
            cells, slots, table, qpos = cells[alive], slots[alive], table[:, alive], qpos[alive]
            bound_at = np.searchsorted(qpos, np.arange(nq + 1))
            counts = np.diff(bound_at)
        bounds = bound_at.tolist()
        signals = table.astype(np.float32)  # text, fields, keys
        # Per-query constants spread over their cells; a zero norm divides by 1 (`search` leaves those unscaled).
        top_text: list[float] = [1.0] * nq
        text = signals[0]
        for pos, prep in enumerate(preps):
            if prep[0] and bounds[pos + 1] > bounds[pos]:  # the best text score (none without query words)
                top = float(text[bounds[pos]:bounds[pos + 1]].max())
                if top > 0:
                    top_text[pos] = top
        codes_t, codes_s = self._types.codes, self._sources.codes
        per_q = np.asarray([top_text, [p[2] if p[2] > 0 else 1.0 for p in preps],
                            [p[4] if p[4] > 0 else 1.0 for p in preps]], dtype=np.float32)
        signals /= np.repeat(per_q, counts, axis=1)
        text_n = signals[0]
        score = W_TEXT * text_n + W_FIELD * signals[1]
        score += W_KEY * signals[2]  # zero where the query has no declared keys
        qtypes = np.asarray([codes_t.get(q.exception_type, -1) for q in queries], dtype=np.int32)
        qsrcs = np.asarray([codes_s.get(q.source_system, -1) for q in queries], dtype=np.int32)
        score += (W_TYPE * (self._type[slots] == np.repeat(qtypes, counts))
                  + W_SOURCE * (self._source[slots] == np.repeat(qsrcs, counts)))
        # Each query's k-th best score, and every case scoring at least that (ties at the k-th included).
        neg = -score
        kths = [-math.inf] * nq
        for pos in range(nq):
            lo, hi = bounds[pos], bounds[pos + 1]
            if hi - lo >= k:
                kths[pos] = float(np.partition(neg[lo:hi], k - 1)[k - 1])
        kth_at = np.repeat(np.asarray(kths, dtype=np.float32), counts)
        picked = np.flatnonzero(neg <= kth_at)
        if self._ids_ascending and picked.shape[0] > nq * k:
            # Ties at the k-th score, ranked by id: slots are in id order here, and a query's cells in slot
            # order, so of each query's tied cases the first (k - strictly better ones) are kept.
            tie = neg[picked] == kth_at[picked]
            per = np.bincount(qpos[picked], minlength=nq)
            better = per - np.bincount(qpos[picked], weights=tie, minlength=nq).astype(np.int64)
            seen = np.cumsum(tie)
            first = np.concatenate([[0], seen])[np.cumsum(per) - per]  # ties before each query's picks
            picked = picked[~tie | (seen - np.repeat(first, per) <= np.repeat(k - better, per))]
        per_query = np.bincount(qpos[picked], minlength=nq).tolist()
        p_neg, p_slot, p_text = neg[picked].tolist(), slots[picked].tolist(), text_n[picked].tolist()
        results: list[tuple[float, list[_Ranked]] | None] = []
        eids = self._eids
        n_of = counts.tolist()
        i = 0
        for pos in range(nq):
            j = i + per_query[pos]
            if n_of[pos] < k:
                results.append(None)
            else:
                ranked = sorted(zip(p_neg[i:j], [eids[s] for s in p_slot[i:j]], p_slot[i:j], p_text[i:j],
                                    strict=True))[:k]
                results.append((-kths[pos], ranked))
            i = j
        return results

    def _hit(self, q: Query, slot: int, score: float, lexical: float, semantic: float | None,
             weights: Mapping[int, float], key_pairs: Sequence[tuple[str, str, str]],
             field_pairs: Sequence[tuple[str, str, str]], n_keys: int) -> Hit:
        """A hit and its explanation: type, fingerprint, the declared key fields it matches, other shared
        fields (rarest first), matched words. `score` is the fused score over the sum of the weights in
        play (0..1). `key_pairs` / `field_pairs`: (name, value, "name=value") of the query's declared key
        fields and other shareable fields (not the fingerprint), rarest first."""
        case = self._cases[slot]
        assert case is not None
        matched: list[str] = []
        if weights:
            common = [(-weights[t], t) for t in self._terms_of(slot) if t in weights]
            if len(common) > 1:
                common.sort()
            names = self._term_names
            matched = [names[t] for _, t in common[:6]]
        get = case.entities.get
        same = tuple([shown for name, v, shown in key_pairs if get(name) == v])
        others = tuple([shown for name, v, shown in field_pairs if get(name) == v])
        why: list[str] = []
        if case.exception_type == q.exception_type:
            why.append(f"same type {case.exception_type}")
        if q.fingerprint and case.fingerprint == q.fingerprint:
            why.append("same fingerprint")
        if same:
            why.append(f"same problem ({len(same)} of {n_keys} key fields): " + ", ".join(same))
        if others:
            why.append("shares " + ", ".join(others[:3]))
        if matched:
            why.append("terms: " + ", ".join(matched))
        if semantic is not None and semantic > 0:
            why.append(f"semantic {semantic:.2f}")
        if case.source_system == q.source_system:
            why.append(f"same source {case.source_system}")
        return Hit(case.exception_id, round(score, 4), "; ".join(why) or "related", case.exception_type, case.status,
                   case.severity, resolution_summary(case.resolution), lexical, semantic,
                   tuple(matched), same + others)

    def query_for(self, case: StoredCase, model: str | None = None, key_fields: tuple[str, ...] = ()) -> Query:
        """The query that asks for cases like an indexed one (`key_fields`: its type's declared key fields)."""
        return Query(
            exception_id=case.exception_id,
            exception_type=case.exception_type,
            source_system=case.source_system,
            terms=analyze(case.body, case.entities),
            entities=case.entities,
            fingerprint=case.fingerprint,
            vector=self.vector_of(model, case.exception_id) if model else None,
            key_fields=key_fields,
        )
