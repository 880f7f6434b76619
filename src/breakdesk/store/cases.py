"""Similar-case memory: the indexed cases, their embeddings and the background indexer's progress.

The case row of a new exception is written by `write_batch` in the exception's own transaction (see
`insert_cases`), so no processed exception is ever missing from the index. Later changes (status, resolution)
replace the row — delete and insert — so `memory_cases.id` only grows and any process can follow the index by
reading `id > last seen`; embeddings are appended to `memory_vectors` the same way. Every query is
tenant-scoped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from breakdesk.store._base import StoreBase, bulk_insert, chunked, prepare, translate, utcnow
from breakdesk.store.tables import audit_entries, exceptions, memory_cases, memory_tenants, memory_vectors
from breakdesk.store.types import aware_utc

_C = memory_cases.c
_V = memory_vectors.c
_M = memory_tenants.c
_X = exceptions.c
_A = audit_entries.c
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True, kw_only=True)
class CaseDoc:
    """One exception as the memory indexes it (built by `breakdesk.memory.text.case_doc`)."""

    exception_id: str
    exception_type: str
    source_system: str
    status: str
    received_at: datetime
    body: str
    entities: dict[str, str] = field(default_factory=dict)
    severity: str | None = None
    domain: str | None = None
    fingerprint: str | None = None
    resolution: dict[str, Any] | None = None
    resolved_at: datetime | None = None
    #: what the domain pack said about the case's type when it was rendered (`memory.text.type_rendering`)
    rendering: str | None = None


@dataclass(slots=True)
class StoredCase:
    """A `memory_cases` row as read back. Treated as immutable (indexes hold it), but not a frozen dataclass:
    one is built for every case the pipeline indexes, and a frozen dataclass's initialiser costs about eight
    times as much (1.9 against 0.24 µs for these fourteen fields)."""

    id: int
    tenant_id: str
    exception_id: str
    exception_type: str
    source_system: str
    severity: str | None
    status: str
    domain: str | None
    fingerprint: str | None
    entities: dict[str, str]
    body: str
    resolution: dict[str, Any] | None
    received_at: datetime
    resolved_at: datetime | None
    #: the row id whose place in the tenant's recency order this case keeps (a re-rendered case keeps its
    #: earlier row's: `memory_cases.recency`); None: its own
    recency: int | None = None

    @property
    def recent(self) -> int:
        """Its place in the tenant's recency order (what triage's window of latest cases counts by)."""
        return self.recency or self.id


@dataclass(slots=True)
class CaseHead:
    """The small columns of a `memory_cases` row (`case_heads_after`): enough for a process that wrote the row
    itself to tell that the row is the case it wrote, without reading back its entities and body. Not frozen,
    like `StoredCase`: one per case the pipeline indexes."""

    id: int
    exception_id: str
    status: str
    severity: str | None
    fingerprint: str | None
    resolved: bool
    rendering: str | None = None
    #: set on a re-rendered row (`StoredCase.recency`)
    recency: int | None = None


@dataclass(frozen=True, slots=True)
class StoredVector:
    id: int
    exception_id: str
    case_id: int
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class ChangedException:
    """An exception the tenant's audit chain named past the indexer's position (`changed_exceptions`)."""

    exception_id: str
    status: str
    severity: str | None
    #: the latest time and seq among the entries that named it
    changed_at: datetime
    changed_seq: int
    #: (status, severity, indexed_at) of its case; None: it has none
    case: tuple[str, str | None, datetime] | None
    #: its case's type and `rendering` (what the domain pack said when it was rendered), if it has one
    case_type: str | None = None
    case_rendering: str | None = None


class Nearest(NamedTuple):
    """`pgvector_search`'s answer."""

    hits: list[tuple[str, float]]  # (exception id, cosine similarity), best first
    #: every vector that passes the search's filters is in `hits` (so a case outside them has none)
    complete: bool


@dataclass(frozen=True, slots=True)
class MemoryState:
    """The background indexer's progress for one tenant."""

    scanned_seq: int
    model: str | None
    embedded_upto: int
    #: `memory.text.pack_rendering` of the domain pack every case was last checked against (None: never)
    rendered_with: str | None = None
    #: a re-rendering under way: the `pack_rendering` it checks cases against (None: none under way) ...
    rerender_for: str | None = None
    #: ... and the last case id it checked
    rerender_after: int = 0


def rerender_position(state: MemoryState | None, target: str) -> int | None:
    """Where re-rendering a tenant's cases for the pack rendering `target` (`memory.text.pack_rendering`)
    stands: None once every case was checked against it, else the last case id a walk for it has checked (0:
    none yet). What the indexer goes on from and the status counts from, so the two agree."""
    if state is not None and state.rendered_with == target:
        return None
    return state.rerender_after if state is not None and state.rerender_for == target else 0


def _case_params(tenant_id: str, d: CaseDoc, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "exception_id": d.exception_id,
        "exception_type": d.exception_type,
        "source_system": d.source_system,
        "severity": d.severity,
        "status": d.status,
        "domain": d.domain,
        "fingerprint": d.fingerprint,
        "entities": d.entities,
        "body": d.body,
        "resolution": d.resolution,
        "received_at": d.received_at,
        "resolved_at": d.resolved_at,
        "indexed_at": now,
        "rendering": d.rendering,
    }


async def insert_cases(conn: AsyncConnection, tenant_id: str, docs: Sequence[CaseDoc], now: datetime) -> None:
    """Index new exceptions inside the caller's (write_batch's) transaction: one executemany."""
    if docs:
        await bulk_insert(conn, memory_cases, [_case_params(tenant_id, d, now) for d in docs])


def _stored(row: Any) -> StoredCase:
    m = row._mapping
    return StoredCase(
        id=int(m["id"]),
        tenant_id=m["tenant_id"],
        exception_id=m["exception_id"],
        exception_type=m["exception_type"],
        source_system=m["source_system"],
        severity=m["severity"],
        status=m["status"],
        domain=m["domain"],
        fingerprint=m["fingerprint"],
        entities=dict(m["entities"] or {}),
        body=m["body"],
        resolution=m["resolution"],
        received_at=m["received_at"],
        resolved_at=m["resolved_at"],
        recency=m["recency"],
    )


_PGVECTOR_NAME = re.compile(r"[^a-z0-9]+")


def _case_heads_statement() -> Select[Any]:
    """`case_heads_after`'s query (prepared once per dialect; read through the raw driver)."""
    return (
        select(_C.id, _C.exception_id, _C.status, _C.severity, _C.fingerprint, _C.resolution.is_not(None),
               _C.rendering, _C.recency)
        .where(_C.tenant_id == bindparam("t", type_=String), _C.id > bindparam("after", type_=BigInteger))
        .order_by(_C.id)
        .limit(bindparam("limit", type_=Integer))
    )


def last_resolutions_stmt(tenant_id: str, fingerprints: Sequence[str]) -> Select[Any]:
    """The resolved cases of these fingerprints, oldest resolution first. Its `resolution IS NOT NULL` is
    the predicate of the partial index `ix_memory_cases_resolved_fingerprint`, which it must imply for the
    planner to use that index (a test checks the plans)."""
    return (
        select(memory_cases)
        .where(_C.tenant_id == tenant_id, _C.fingerprint.in_(fingerprints), _C.resolution.is_not(None))
        .order_by(_C.resolved_at.asc().nulls_first(), _C.id)  # (`resolution_order`; PostgreSQL's default is last)
    )


def resolution_order(case: StoredCase) -> tuple[bool, datetime, int]:
    """Which of a fingerprint's resolved cases is its last resolution: the latest resolution time (none
    counts as earliest), then the larger row id — `last_resolutions_stmt`'s order, for resident indexes."""
    return (case.resolved_at is not None, case.resolved_at or _EPOCH, case.id)


class CaseRepo(StoreBase):
    """Tenant-scoped reads and writes of the memory tables."""

    _pgvector: bool | None = None
    _pgvector_iterative: bool | None = None  # pgvector >= 0.8 (iterative index scans)

    # ------------------------------------------------------------------ cases

    async def cases_after(self, tenant_id: str, after_id: int, limit: int = 5000) -> list[StoredCase]:
        """Cases indexed after `after_id`, in id order (how a resident index catches up)."""
        stmt = select(memory_cases).where(_C.tenant_id == tenant_id, _C.id > after_id).order_by(_C.id).limit(limit)
        async with self._read() as conn:
            return [_stored(r) for r in (await conn.execute(stmt)).all()]

    async def case_heads_after(self, tenant_id: str, after_id: int, limit: int = 5000) -> list[CaseHead]:
        """`cases_after` without the documents (entities, resolution, body) and dates: what a process needs to
        follow rows it wrote itself (`breakdesk.memory.Memory.index`), which it has in memory already. Served
        by ix_memory_cases_tenant_id like `cases_after`."""
        stmt = prepare("memory.case_heads_after", self._engine.dialect, _case_heads_statement)
        rows = await self._fetch(stmt, {"t": tenant_id, "after": after_id, "limit": limit})
        return [CaseHead(int(i), e, st, sev, fp, bool(res), r, rc) for i, e, st, sev, fp, res, r, rc in rows]

    async def case_renderings_after(self, tenant_id: str, after_id: int, limit: int = 500
                                    ) -> list[tuple[int, str, str, str | None]]:
        """(id, exception id, type, rendering) of the tenant's cases after `after_id`, in id order: what the
        indexer compares with the active domain pack (`MemoryIndexer.rerender`), without the documents."""
        stmt = (select(_C.id, _C.exception_id, _C.exception_type, _C.rendering)
                .where(_C.tenant_id == tenant_id, _C.id > after_id).order_by(_C.id).limit(limit))
        async with self._read() as conn:
            return [(int(i), e, t, r) for i, e, t, r in (await conn.execute(stmt)).all()]

    async def stamp_renderings(self, tenant_id: str, renderings: Mapping[int, str]) -> None:
        """Record, in place, that the cases with these row ids read the same under a new domain pack
        (`memory.text.type_rendering`): no new row, so no new id, resident index entry or embedding."""
        if not renderings:
            return
        stmt = (update(memory_cases).where(_C.tenant_id == tenant_id, _C.id == bindparam("case_id"))
                .values(rendering=bindparam("r")))
        async with self._write() as conn:
            await conn.execute(stmt, [{"case_id": i, "r": r} for i, r in renderings.items()])

    async def cases_by_ids(self, tenant_id: str, ids: Sequence[int]) -> list[StoredCase]:
        """The tenant's cases with these row ids, in id order (ids of other tenants' or deleted rows: absent)."""
        out: list[StoredCase] = []
        async with self._read() as conn:
            for part in chunked(sorted(set(ids))):
                stmt = select(memory_cases).where(_C.tenant_id == tenant_id, _C.id.in_(part)).order_by(_C.id)
                out.extend(_stored(r) for r in (await conn.execute(stmt)).all())
        return out

    def case_as_stored(self, tenant_id: str, case_id: int, doc: CaseDoc) -> StoredCase:
        """`doc`, stored as row `case_id`, exactly as `cases_after` would read it back, without reading it:
        dates aware UTC, and the entities in the order the database gives a document's keys back (SQLite: the
        canonical JSON's sorted keys; PostgreSQL's JSONB: shorter keys first, then bytewise). Their order is
        the order a case's fields and words are analysed in when it is searched for, so it must not depend on
        how the case reached the index."""
        if self._pg:
            entities = dict(sorted(doc.entities.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode())))
        else:  # canonical JSON sorts keys by code point, as `sorted` does; string values read back unchanged
            entities = dict(sorted(doc.entities.items()))
        return StoredCase(case_id, tenant_id, doc.exception_id, doc.exception_type, doc.source_system, doc.severity,
                          doc.status, doc.domain, doc.fingerprint, entities, doc.body, doc.resolution,
                          aware_utc(doc.received_at), aware_utc(doc.resolved_at))

    async def get_case(self, tenant_id: str, exception_id: str) -> StoredCase | None:
        stmt = select(memory_cases).where(_C.tenant_id == tenant_id, _C.exception_id == exception_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return _stored(row) if row is not None else None

    async def count_cases(self, tenant_id: str, after_id: int = 0) -> int:
        """The tenant's cases (those after row `after_id`: past an embedding watermark, say)."""
        stmt = select(func.count()).select_from(memory_cases).where(_C.tenant_id == tenant_id, _C.id > after_id)
        async with self._read() as conn:
            return int((await conn.execute(stmt)).scalar() or 0)

    async def last_resolutions(self, tenant_id: str, fingerprints: Sequence[str]) -> dict[str, StoredCase]:
        """Fingerprint -> its most recently resolved case (for recurrence evidence)."""
        out: dict[str, StoredCase] = {}
        wanted = sorted({f for f in fingerprints if f})
        async with self._read() as conn:
            for part in chunked(wanted):
                for row in (await conn.execute(last_resolutions_stmt(tenant_id, part))).all():
                    case = _stored(row)
                    out[case.fingerprint or ""] = case  # ordered ascending: the last one wins
        return out

    async def replace_cases(
        self, tenant_id: str, docs: Sequence[CaseDoc], *, scanned: int | None = None
    ) -> None:
        """Insert or replace cases (delete + insert: new ids) and record the scan position (the last audit
        seq the indexer looked at), atomically.

        Under the tenant's write lock, like a pipeline batch (`write_batch`), taken before any id is: readers
        follow `id > last seen`, and PostgreSQL hands out ids at insert, not at commit, so two writers of one
        tenant could otherwise commit out of id order and a reader past the larger id would miss the other
        row for good."""
        now = utcnow()
        async with self._write() as conn:
            await self._tenant_head(conn, tenant_id)
            ids = [d.exception_id for d in docs]
            for part in chunked(ids):
                await conn.execute(delete(memory_cases).where(_C.tenant_id == tenant_id, _C.exception_id.in_(part)))
            await insert_cases(conn, tenant_id, docs, now)
            if scanned is not None:
                # Forward only when this pass wrote nothing: cases it rendered may be older than those of a pass
                # that got further (and wrote them first); its position then goes back to its own, so that the
                # next pass looks at those exceptions again instead of leaving the older rendering for good.
                await self._save_state(conn, tenant_id, now, forward=not docs, scanned_seq=scanned)

    async def rerender_cases(self, tenant_id: str, docs: Sequence[tuple[int, CaseDoc]]) -> int:
        """Replace the cases with these row ids by these documents (delete + insert: new ids), each only if its
        row is still there: a row replaced meanwhile (another indexer's pass, a newer status) was rendered from
        a newer exception than this document. Each new row keeps its old row's place in the recency order
        (`recency`): the case is no newer than it was, and triage's window of latest cases must not fill with
        old cases after a pack change. Under the tenant's write lock, as `replace_cases`. Returns how many
        were replaced."""
        if not docs:
            return 0
        now = utcnow()
        async with self._write() as conn:
            await self._tenant_head(conn, tenant_id)
            place: dict[int, int] = {}
            for part in chunked([i for i, _ in docs]):
                gone = (delete(memory_cases).where(_C.tenant_id == tenant_id, _C.id.in_(part))
                        .returning(_C.id, _C.recency))
                place.update((int(i), int(r or i)) for i, r in (await conn.execute(gone)).all())
            rows = []
            for i, d in docs:
                if i in place:
                    params = _case_params(tenant_id, d, now)
                    params["recency"] = place[i]
                    rows.append(params)
            if rows:
                await bulk_insert(conn, memory_cases, rows)
        return len(rows)

    async def changed_exceptions(
        self, tenant_id: str, after_seq: int, limit: int = 500
    ) -> tuple[list[ChangedException], int, int]:
        """The exceptions named by the tenant's audit entries after `after_seq` (at most `limit` entries),
        each with what its case says (`ChangedException`); the last seq read and how many entries were read.

        Why the audit chain: every change to an exception appends to it in the change's own transaction,
        under the tenant's write lock, so seqs are issued in commit order and a reader that saves the last
        seq it read misses nothing. `updated_at` is stamped before that lock is taken, and a keyset on it
        skipped changes committed behind the reader's position. Only the small columns: the server's worker
        reads every entry once, and most exceptions are indexed already as they are
        (`ExceptionRepo.exceptions_by_ids` reads the few that are not in full)."""
        entries = (
            select(_A.seq, _A.subject, _A.at)
            .where(_A.tenant_id == tenant_id, _A.seq > after_seq)
            .order_by(_A.seq)
            .limit(limit)
        )
        out: list[ChangedException] = []
        async with self._read() as conn:
            read = (await conn.execute(entries)).all()
            latest: dict[str, datetime] = {}  # (subjects that are not exceptions match none below)
            last_seq: dict[str, int] = {}
            for seq, subject, at in read:
                at = aware_utc(at)
                if subject not in latest or at > latest[subject]:
                    latest[subject] = at
                last_seq[subject] = int(seq)  # (ascending)
            for part in chunked(list(latest)):
                stmt = (
                    select(_X.exception_id, _X.status, _X.severity, _C.status, _C.severity, _C.indexed_at,
                           _C.exception_type, _C.rendering)
                    .select_from(exceptions.outerjoin(
                        memory_cases, and_(_C.tenant_id == _X.tenant_id, _C.exception_id == _X.exception_id)))
                    .where(_X.tenant_id == tenant_id, _X.exception_id.in_(part))
                )
                for e, st, sev, case_st, case_sev, indexed_at, case_type, rendering in (
                        await conn.execute(stmt)).all():
                    case = None if case_st is None else (case_st, case_sev, aware_utc(indexed_at))
                    out.append(ChangedException(e, st, sev, latest[e], last_seq[e], case, case_type, rendering))
        return out, (int(read[-1][0]) if read else after_seq), len(read)

    # ------------------------------------------------------------------ indexer state

    @asynccontextmanager
    async def indexer_lease(self, tenant_id: str) -> AsyncIterator[bool]:
        """Whether this process may run the memory indexer's pass over `tenant_id` now: on PostgreSQL a
        session advisory lock per tenant, held on its own connection for the pass, so several workers on
        one database do not repeat each other's scans and embeddings (the lock goes with the session if the
        process dies). SQLite: always — one machine, and concurrent passes only repeat work."""
        if not self._pg:
            yield True
            return
        key = f"breakdesk.memory.indexer:{tenant_id}"
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")  # no transaction held open
            got = bool((await conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key})).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})

    async def memory_state(self, tenant_id: str) -> MemoryState | None:
        stmt = select(memory_tenants).where(_M.tenant_id == tenant_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        return MemoryState(int(m["scanned_seq"]), m["model"], int(m["embedded_upto"]), m["rendered_with"],
                           m["rerender_for"], int(m["rerender_after"] or 0))

    async def save_memory_state(self, tenant_id: str, **values: Any) -> None:
        async with self._write() as conn:
            await self._save_state(conn, tenant_id, utcnow(), **values)

    async def _save_state(self, conn: AsyncConnection, tenant_id: str, now: datetime, *,
                          forward: bool = False, **values: Any) -> None:
        """Upsert the tenant's memory state. `forward`: `scanned_seq` only moves ahead (`replace_cases` says
        when: two indexers of one tenant each save where their own pass ended)."""
        ins = (postgresql.insert if self._pg else sqlite.insert)(memory_tenants)
        row = {"tenant_id": tenant_id, "embedded_upto": 0, "updated_at": now}
        row.update(values)
        update: dict[str, Any] = {**values, "updated_at": now}
        if forward and "scanned_seq" in values:
            new = ins.excluded.scanned_seq
            update["scanned_seq"] = sql_case((new > _M.scanned_seq, new), else_=_M.scanned_seq)
        await conn.execute(ins.values(**row).on_conflict_do_update(index_elements=[_M.tenant_id], set_=update))

    # ------------------------------------------------------------------ embeddings

    async def cases_to_embed(self, tenant_id: str, after_id: int, limit: int = 256) -> list[StoredCase]:
        """Cases past the embedding watermark, in id order (replaced cases reappear with a new id)."""
        return await self.cases_after(tenant_id, after_id, limit)

    async def save_vectors(
        self,
        tenant_id: str,
        model: str,
        items: Sequence[tuple[str, int, np.ndarray]],
        embedded_upto: int,
    ) -> None:
        """Store (exception_id, case_id, vector) rows for `model`, replacing older ones, and advance the
        watermark in the same transaction (a crash re-embeds at most one batch). Under the tenant's write lock,
        as `replace_cases`: readers follow vectors by id too."""
        now = utcnow()
        async with self._write() as conn:
            await self._tenant_head(conn, tenant_id)
            ids = [eid for eid, _, _ in items]
            for part in chunked(ids):
                await conn.execute(
                    delete(memory_vectors).where(
                        _V.tenant_id == tenant_id, _V.model == model, _V.exception_id.in_(part)
                    )
                )
            rows = [
                {
                    "tenant_id": tenant_id,
                    "exception_id": eid,
                    "case_id": case_id,
                    "model": model,
                    "dims": int(vec.shape[0]),
                    "vector": self._encode_vector(vec),
                    "embedded_at": now,
                }
                for eid, case_id, vec in items
            ]
            await bulk_insert(conn, memory_vectors, rows)
            await self._save_state(conn, tenant_id, now, model=model, embedded_upto=embedded_upto)

    async def reset_embeddings(self, tenant_id: str, model: str, *, keep_model: bool = True) -> None:
        """Switch the tenant's embedding model: vectors of other models go (and `model`'s own unless
        `keep_model`: its dimensions changed), the watermark restarts."""
        async with self._write() as conn:
            gone = _V.tenant_id == tenant_id
            await conn.execute(delete(memory_vectors).where(gone, _V.model != model) if keep_model
                               else delete(memory_vectors).where(gone))
            await self._save_state(conn, tenant_id, utcnow(), model=model, embedded_upto=0)

    async def vectors_after(
        self, tenant_id: str, model: str, after_id: int, limit: int = 5000
    ) -> list[StoredVector]:
        stmt = (
            select(_V.id, _V.exception_id, _V.case_id, _V.vector)
            .where(_V.tenant_id == tenant_id, _V.model == model, _V.id > after_id)
            .order_by(_V.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [StoredVector(int(i), e, int(c), self._decode_vector(v)) for i, e, c, v in rows]

    async def vector_dims(self, tenant_id: str, model: str) -> int | None:
        """The size of the tenant's stored vectors of `model` (one size at a time: `MemoryIndexer.embed`
        embeds everything again when it changes); None when there are none."""
        stmt = select(_V.dims).where(_V.tenant_id == tenant_id, _V.model == model).limit(1)
        async with self._read() as conn:
            dims = (await conn.execute(stmt)).scalar()
        return None if dims is None else int(dims)

    async def get_vector(self, tenant_id: str, model: str, exception_id: str) -> StoredVector | None:
        stmt = select(_V.id, _V.exception_id, _V.case_id, _V.vector).where(
            _V.tenant_id == tenant_id, _V.model == model, _V.exception_id == exception_id
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else StoredVector(int(row[0]), row[1], int(row[2]), self._decode_vector(row[3]))

    def _encode_vector(self, vec: np.ndarray) -> Any:
        arr = np.asarray(vec, dtype="<f4")
        return arr.tolist() if self._pg else arr.tobytes()

    def _decode_vector(self, value: Any) -> np.ndarray:
        if isinstance(value, bytes | bytearray | memoryview):
            return np.frombuffer(bytes(value), dtype="<f4").astype(np.float32)
        return np.asarray(value, dtype=np.float32)

    # ------------------------------------------------------------------ pgvector (PostgreSQL only)

    async def pgvector_search(
        self, tenant_id: str, model: str, query: np.ndarray, limit: int, filters: Any = None,
        *, among: Sequence[int] | None = None,
    ) -> Nearest:
        """The tenant's nearest vectors (exception_id, cosine similarity), best first: only vectors of the
        case rows they were made from (a replaced case's old vector waits for its new one), and of cases that
        pass `filters` (`breakdesk.memory.Filters`), so that a selective filter still gets `limit`
        neighbours instead of the few of the tenant's nearest that happen to pass it.

        A list shorter than `limit` is complete only if no more vectors pass: an HNSW scan that keeps looking
        for rows passing the tenant and the filters gives up at `hnsw.max_scan_tuples`, short of `limit`,
        when few of the index's vectors pass. So a short list is checked against a count.

        `among`: the case rows (`memory_cases.id`) that pass the filters, when the caller knows them (the
        resident index does): their vectors are compared exactly, found by `case_id`, instead of the
        filters being evaluated on `memory_cases` (a scan of the tenant's cases that cost a 1 % filter at
        100k cases ≈ 20 ms) and the HNSW graph walked for the few that pass. `filters` are then not read."""
        dims = int(query.shape[0])
        distance = f"(v.vector::vector({dims})) <=> CAST(:q AS vector({dims}))"
        where, params, expanding = _vector_filters(tenant_id, model, None if among is not None else filters)
        where.append("v.dims = :dims")  # (vectors of another size cannot be compared; see ensure_pgvector_index)
        params.update(q="[" + ",".join(f"{float(x):.7g}" for x in query) + "]", n=limit, dims=dims)
        if among is not None:
            return await self._pgvector_among(where, params, distance, among)
        joined = ("FROM memory_vectors v JOIN memory_cases c ON c.id = v.case_id AND c.tenant_id = v.tenant_id "
                  f"WHERE {' AND '.join(where)}")
        sql = text(f"SELECT v.exception_id, 1 - ({distance}) AS sim {joined} ORDER BY {distance} LIMIT :n")
        if self._pgvector_iterative is None:
            await pgvector_available(self)  # (which reads the extension's version, once per store)
        async with self._read() as conn:
            # One round trip for the scan's settings: a candidate list as long as the limit (the default 40
            # is shorter than the 61 `Memory.similar` asks for, which cost every search a second pass over
            # the graph and returned the rows past the 40th out of order), and on pgvector >= 0.8 scanning
            # on until enough rows pass the tenant filter and the filters.
            settings = "SELECT set_config('hnsw.ef_search', :ef, true)"
            if self._pgvector_iterative:
                settings += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
            await conn.execute(text(settings), {"ef": str(min(1000, max(40, limit)))})
            rows = (await conn.execute(sql.bindparams(*expanding), params)).all()
            complete = False
            if len(rows) < limit:
                count = text(f"SELECT count(*) {joined}").bindparams(*expanding)
                complete = int((await conn.execute(count, params)).scalar() or 0) <= len(rows)
        # relaxed_order returns the rows an iterative scan finds past the first ef_search out of order
        hits = sorted(((str(e), float(sim)) for e, sim in rows), key=lambda hit: hit[1], reverse=True)
        return Nearest(hits, complete)

    async def _pgvector_among(self, where: list[str], params: dict[str, Any], distance: str,
                              among: Sequence[int]) -> Nearest:
        """`pgvector_search` over the vectors of the case rows `among` (`where`: the tenant's vectors of the
        model and size): exact (ordered by the similarity, which the HNSW index cannot serve), so complete
        unless `limit` cut it."""
        if not among:
            return Nearest([], True)
        sql = text(
            f"SELECT v.exception_id, 1 - ({distance}) AS sim FROM memory_vectors v "
            f"WHERE {' AND '.join(where)} AND v.case_id = ANY(:ids) ORDER BY sim DESC, v.exception_id LIMIT :n"
        ).bindparams(bindparam("ids", type_=postgresql.ARRAY(BigInteger)))
        async with self._read() as conn:
            rows = (await conn.execute(sql, {**params, "ids": list(among)})).all()
        # (a full list may leave out passing vectors, none nearer than its last: those have one, not a cosine of 0)
        return Nearest([(str(e), float(sim)) for e, sim in rows], len(rows) < params["n"])


def _vector_filters(tenant_id: str, model: str, filters: Any) -> tuple[list[str], dict[str, Any], list[Any]]:
    """`pgvector_search`'s WHERE terms over `memory_vectors v JOIN memory_cases c`, their values, and the
    expanding bind parameters (lists)."""
    where = ["v.tenant_id = :t", "v.model = :m"]
    params: dict[str, Any] = {"t": tenant_id, "m": model}
    expanding: list[Any] = []
    if filters is not None:
        for column, values, name in (("exception_type", filters.types, "types"),
                                     ("severity", filters.severities, "severities"),
                                     ("status", filters.statuses, "statuses"),
                                     ("source_system", filters.sources, "sources")):
            if values:
                where.append(f"c.{column} IN :{name}")
                params[name] = list(values)
                expanding.append(bindparam(name, expanding=True))
        if filters.resolved_only:
            where.append("c.resolution IS NOT NULL")
        if filters.since is not None:
            where.append("c.received_at >= :since")
            params["since"] = filters.since
        if filters.until is not None:
            where.append("c.received_at < :until")
            params["until"] = filters.until
    return where, params, expanding


# ---------------------------------------------------------------------- pgvector (PostgreSQL only)


async def pgvector_available(store: CaseRepo) -> bool:
    """True on PostgreSQL when the `vector` extension is installed (created here when it is available
    and we may); False everywhere else, and then vectors are searched in process."""
    if not store._pg:
        return False
    if store._pgvector is not None:
        return store._pgvector
    version: Any = None
    try:
        installed = text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        async with store._read() as conn:
            version = (await conn.execute(installed)).scalar()
            available = (
                await conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
            ).first()
        if version is None and available is not None:
            async with store._write() as conn:
                await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
                version = (await conn.execute(installed)).scalar()
    except Exception:  # no privilege, or no extension: the in-process index serves instead
        version = None
    store._pgvector = version is not None
    # pgvector >= 0.8 scans an HNSW index iteratively (`pgvector_search`)
    store._pgvector_iterative = (version is not None
                                 and tuple(int(p) for p in str(version).split(".")[:2]) >= (0, 8))
    return store._pgvector

async def ensure_pgvector_index(store: CaseRepo, model: str, dims: int) -> None:
    """An HNSW index over one model's vectors of one size (a partial expression index). Created on first use,
    not by a migration, because the extension is optional.

    Per size as well as per model: an index casts every row it covers to `vector(dims)`, so one covering a
    model's vectors of any size would refuse (and fail the insert of) a vector of another size — another
    tenant's endpoint serving a model of the same name, or one redeployed with other dimensions. Indexes of
    earlier versions covered the model alone: each is dropped once its per-size successor exists."""
    slug = _PGVECTOR_NAME.sub("_", model.lower())
    prefix = "ix_memory_vectors_hnsw_" + slug[:30] + "_"  # (earlier versions' names: model cut at 30, size)
    # A hash of the whole name: models alike in their first characters (`org/all-minilm-...`,
    # `org/all-mpnet-...`) would otherwise share an index name, and the second would get no index. (Names stay
    # within PostgreSQL's 63 characters, past which it cuts them.)
    named = f"ix_memory_vectors_hnsw_{slug[:20]}_{hashlib.sha1(model.encode()).hexdigest()[:8]}_"
    literal = model.replace("'", "''")
    try:
        async with store._write() as conn:
            # Every index of an earlier version over this model refuses vectors of any size but its own,
            # whatever size this call is about (a tenant whose first vectors have another size than the
            # tenant's that made it): each is replaced, the one of its size made first so searches keep one.
            found = (await conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'memory_vectors' "
                     "AND indexname LIKE :p"), {"p": prefix + "%"})).all()
            legacy = {str(n): int(str(n)[len(prefix):]) for n, d in found
                      if str(n).startswith(prefix) and str(n)[len(prefix):].isdigit()
                      and f"'{literal}'" in str(d) and "dims" not in str(d)}
            for size in sorted({int(dims), *legacy.values()}):
                await conn.execute(
                    text(
                        f'CREATE INDEX IF NOT EXISTS "{named}{size}d" ON memory_vectors USING hnsw '
                        f"((vector::vector({size})) vector_cosine_ops) "
                        f"WHERE model = '{literal}' AND dims = {size}"
                    )
                )
            for name in legacy:
                await conn.execute(text(f'DROP INDEX IF EXISTS "{name}"'))
    except SQLAlchemyError as exc:
        raise translate(exc) from exc
