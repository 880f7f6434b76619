"""Exception projections, their event streams, dedupe lookups and the batch write path.

`write_batch` is the pipeline's only write: one transaction per call, bulk inserts (`executemany` with
precompiled statements; binary COPY on PostgreSQL) and a fixed number of statements per call regardless of
its size (no per-row round trips). Events arrive with their JSON already encoded when the pipeline has it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Dialect,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from breakdesk.audit.chain import canonical_json, utc_iso
from breakdesk.store._base import StoreBase, bulk_insert, chunked, utcnow
from breakdesk.store.errors import Conflict, InvalidCursor, NotFound, StoreError
from breakdesk.store.records import (
    TERMINAL_STATUSES,
    AuditRow,
    EventRow,
    ExceptionRow,
    ExceptionWrite,
    FingerprintStats,
    unaudited_change,
)
from breakdesk.store.tables import exception_events, exceptions, fingerprints, idempotency_keys, intake_queue

#: Projection columns a write may set (keys and the recurrence counter are owned by the store).
PROJECTION_FIELDS: tuple[str, ...] = (
    "source_system",
    "exception_type",
    "severity",
    "status",
    "actionability",
    "playbook_id",
    "approval_required",
    "confidence",
    "priority",
    "fingerprint",
    "idempotency_key",
    "source_id",
    "assignee",
    "domain_pack",
    "tenant_policy",
    "received_at",
    "triaged_at",
    "resolved_at",
    "updated_at",
    "record",
    "summary",
)
_UPDATABLE = frozenset(PROJECTION_FIELDS) | {"recurrence_count"}

SORTS: dict[str, str] = {
    "received_at": "received_at",
    "-received_at": "received_at",
    "updated_at": "updated_at",
    "-updated_at": "updated_at",
    "priority": "priority",
    "-priority": "priority",
}
_TIME_SORT_KEYS = frozenset({"received_at", "updated_at"})

_LIST_COLUMNS = [c for c in exceptions.c if c.name != "record"]

_X = exceptions.c
_E = exception_events.c
_F = fingerprints.c


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one `write_batch` call stored (for metrics and logs)."""

    inserted: int
    updated: int
    recurrences: int
    events: int
    audit_entries: int
    audit_seq: int


def _row_params(row: ExceptionRow, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": row.tenant_id,
        "exception_id": row.exception_id,
        "source_system": row.source_system,
        "exception_type": row.exception_type,
        "severity": row.severity,
        "status": row.status,
        "actionability": row.actionability,
        "playbook_id": row.playbook_id,
        "approval_required": row.approval_required,
        "confidence": row.confidence,
        "priority": row.priority,
        "fingerprint": row.fingerprint,
        "idempotency_key": row.idempotency_key,
        "source_id": row.source_id,
        "recurrence_count": row.recurrence_count,
        "assignee": row.assignee,
        "domain_pack": row.domain_pack,
        "tenant_policy": row.tenant_policy,
        "received_at": row.received_at,
        "triaged_at": row.triaged_at,
        "resolved_at": row.resolved_at,
        "updated_at": row.updated_at or now,
        "record": row.record,
        "summary": row.summary,
    }


def _as_dict(row: Row) -> dict[str, Any]:
    return dict(row._mapping)


def _values(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def encode_cursor(sort: str, key: Any, exception_id: str) -> str:
    """Opaque keyset cursor: base64url(JSON [sort, key, id])."""
    value = utc_iso(key) if isinstance(key, datetime) else key
    return base64.urlsafe_b64encode(orjson.dumps([sort, value, exception_id])).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, value, exception_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("the cursor is not valid; start again without one") from exc
    if made_for != sort or not isinstance(exception_id, str):
        raise InvalidCursor(f"the cursor was made for sort {made_for!r}, not {sort!r}")
    if SORTS[sort] in _TIME_SORT_KEYS:
        if not isinstance(value, str):
            raise InvalidCursor("the cursor is not valid; start again without one")
        try:
            return datetime.fromisoformat(value), exception_id
        except ValueError as exc:
            raise InvalidCursor("the cursor is not valid; start again without one") from exc
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidCursor("the cursor is not valid; start again without one")
    return float(value), exception_id


@dataclass(frozen=True, slots=True)
class BatchLookup:
    """What the store already knows about a batch's idempotency keys, exception ids and fingerprints."""

    known_keys: dict[str, str]  # idempotency key -> the exception it was recorded against
    taken_ids: set[str]  # exception ids the tenant already has
    open_by_fingerprint: dict[str, str]  # fingerprint -> its most recently received open exception
    fingerprint_stats: dict[str, FingerprintStats]


@dataclass(slots=True)
class _FpAgg:
    """Net effect of one batch on one fingerprint row."""

    count: int
    first_seen: datetime
    last_seen: datetime
    last_exception_id: str  # the target seen at `last_seen` (of equals, the last written)
    final_status: dict[str, bool]  # target exception id -> open after this batch (insertion = touch order)


class ExceptionRepo(StoreBase):
    # ------------------------------------------------------------------ batch write

    async def write_batch(
        self,
        tenant_id: str,
        writes: Sequence[ExceptionWrite],
        *,
        complete_queue_ids: Sequence[int] = (),
        approvals: Sequence[Any] = (),
        cases: Sequence[Any] = (),
    ) -> BatchResult:
        """Store a batch of pipeline results atomically: rows, events, audit chain, fingerprints, keys.

        `complete_queue_ids` marks intake-queue items DONE in the same transaction, so an item is never
        both processed and still pending. `approvals` (`breakdesk.store.approvals.Approval`) are the approval
        requests of the batch's PENDING_APPROVAL exceptions, stored with them. `cases`
        (`breakdesk.store.cases.CaseDoc`) index the new exceptions for similar-case search in the same
        transaction, so no processed exception is missing from the memory.
        """
        plan = _plan(tenant_id, writes)
        now = utcnow()
        try:
            async with self._write() as conn:
                head = await self._tenant_head(conn, tenant_id)
                seqs = await self._max_seqs(conn, tenant_id, plan.existing)
                missing = plan.existing - seqs.keys()
                if missing:
                    raise NotFound(
                        f"exception {sorted(missing)[0]!r} does not exist for tenant {tenant_id!r} "
                        "(a recurrence or update must target a stored exception)"
                    )
                for new_id in plan.new_ids:
                    seqs[new_id] = 0
                if plan.inserts:
                    await bulk_insert(conn, exceptions, [_row_params(w.row, now) for w in plan.inserts])
                if plan.updates:
                    await conn.execute(_UPDATE_PROJECTION, [_update_params(w.row, now) for w in plan.updates])
                if plan.recurrences:
                    await conn.execute(
                        _BUMP_RECURRENCE,
                        [
                            {"b_tenant": tenant_id, "b_id": target, "b_inc": inc, "b_updated": at}
                            for target, (inc, at) in plan.recurrences.items()
                        ],
                    )
                events = _event_params(tenant_id, writes, seqs)
                await bulk_insert(conn, exception_events, events, encoded=_EVENT_JSON)
                keys = [
                    {
                        "tenant_id": tenant_id,
                        "idempotency_key": w.row.idempotency_key,
                        "exception_id": w.target_id,
                        "created_at": now,
                    }
                    for w in writes
                    if w.row.idempotency_key is not None and (w.is_new or w.recurrence_of is not None)
                ]
                await bulk_insert(conn, idempotency_keys, keys)
                await self._upsert_fingerprints(conn, tenant_id, writes)
                if approvals:
                    from breakdesk.store.approvals import insert_approvals  # the approvals mixin imports us

                    await insert_approvals(conn, tenant_id, approvals)
                if cases:
                    from breakdesk.store.cases import insert_cases  # the memory mixin sits beside this one

                    await insert_cases(conn, tenant_id, cases, now)
                audits = [a for w in writes for a in w.audits]
                new_head = await self._append_audit(conn, tenant_id, head, audits)
                if complete_queue_ids:
                    await _complete_queue(conn, tenant_id, complete_queue_ids, now)
        except Conflict as exc:
            raise await self._explain_conflict(tenant_id, writes) from exc
        if self._planner is not None and plan.inserts:
            await self._planner.wrote(self._engine, len(plan.inserts))
        return BatchResult(
            inserted=len(plan.inserts),
            updated=len(plan.updates),
            recurrences=sum(inc for inc, _ in plan.recurrences.values()),
            events=len(events),
            audit_entries=len(audits),
            audit_seq=new_head[0],
        )

    async def _max_seqs(self, conn: AsyncConnection, tenant_id: str, ids: set[str]) -> dict[str, int]:
        """Current last event seq of each existing exception in `ids` (absent key = no such exception)."""
        out: dict[str, int] = {}
        for part in chunked(sorted(ids)):
            last = (
                select(func.max(_E.seq))
                .where(_E.tenant_id == _X.tenant_id, _E.exception_id == _X.exception_id)
                .scalar_subquery()
            )
            stmt = select(_X.exception_id, func.coalesce(last, 0)).where(
                _X.tenant_id == tenant_id, _X.exception_id.in_(part)
            )
            for exc_id, seq in (await conn.execute(stmt)).all():
                out[exc_id] = int(seq)
        return out

    async def _upsert_fingerprints(
        self, conn: AsyncConnection, tenant_id: str, writes: Sequence[ExceptionWrite]
    ) -> None:
        aggs: dict[str, _FpAgg] = {}
        for w in writes:
            fp = w.row.fingerprint
            if fp is None:
                continue
            target = w.target_id
            is_open = w.recurrence_of is not None or w.row.status not in TERMINAL_STATUSES
            delta = 1 if (w.is_new or w.recurrence_of is not None) else 0
            seen = w.row.received_at
            agg = aggs.get(fp)
            if agg is None:
                aggs[fp] = _FpAgg(delta, seen, seen, target, {target: is_open})
                continue
            agg.count += delta
            agg.first_seen = min(agg.first_seen, seen)
            if seen >= agg.last_seen:  # a batch need not be in time order (backfills, retries)
                agg.last_seen = seen
                agg.last_exception_id = target
            agg.final_status.pop(target, None)  # re-insert so dict order follows the latest touch
            agg.final_status[target] = is_open
        if not aggs:
            return
        params: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        for fp, agg in aggs.items():
            open_ids = [t for t, is_open in agg.final_status.items() if is_open]
            params.append(
                {
                    "tenant_id": tenant_id,
                    "fingerprint": fp,
                    "count": agg.count,
                    "first_seen": agg.first_seen,
                    "last_seen": agg.last_seen,
                    "open_exception_id": open_ids[-1] if open_ids else None,
                    "last_exception_id": agg.last_exception_id,
                }
            )
            # The upsert's CASE only clears the open pointer for `last_exception_id`; clear the other closed
            # targets here.
            stale.extend(
                {"b_tenant": tenant_id, "b_fp": fp, "b_id": t}
                for t, is_open in agg.final_status.items()
                if not is_open and t != agg.last_exception_id
            )
        await bulk_insert(conn, fingerprints, params, statement=_fingerprint_upsert)
        if stale:
            await conn.execute(_CLEAR_OPEN_FP, stale)

    async def _explain_conflict(self, tenant_id: str, writes: Sequence[ExceptionWrite]) -> Conflict:
        """After a rejected batch, find which id or key collided, so the error names it (no SQL)."""
        new_ids = [w.row.exception_id for w in writes if w.is_new]
        keys = [
            w.row.idempotency_key
            for w in writes
            if w.row.idempotency_key is not None and (w.is_new or w.recurrence_of is not None)
        ]
        async with self._read() as conn:
            for part in chunked(new_ids):
                stmt = (
                    select(_X.exception_id)
                    .where(_X.tenant_id == tenant_id, _X.exception_id.in_(part))
                    .limit(1)
                )
                found = (await conn.execute(stmt)).scalar()
                if found is not None:
                    return Conflict(f"batch rejected, nothing written: exception {found!r} already exists")
            for part in chunked(keys):
                stmt2 = select(idempotency_keys.c.idempotency_key, idempotency_keys.c.exception_id).where(
                    idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.idempotency_key.in_(part)
                )
                hit = (await conn.execute(stmt2.limit(1))).first()
                if hit is not None:
                    return Conflict(
                        f"batch rejected, nothing written: idempotency key {hit[0]!r} already belongs to exception {hit[1]!r}"
                    )
        return Conflict("batch rejected, nothing written: it conflicts with data already stored")

    # ------------------------------------------------------------------ dedupe lookups

    async def batch_lookup(
        self, tenant_id: str, keys: Iterable[str], ids: Iterable[str], fps: Iterable[str]
    ) -> BatchLookup:
        """Everything the orchestrator checks before deciding a batch, read in one transaction: which keys
        and ids are taken, and the open exception and statistics of each fingerprint. One snapshot and one
        connection checkout instead of four."""
        fps = list(fps)
        async with self._read() as conn:
            return BatchLookup(
                known_keys=await self._find_keys(conn, tenant_id, keys),
                taken_ids=await self._existing_ids(conn, tenant_id, ids),
                open_by_fingerprint=await self._open_by_fingerprints(conn, tenant_id, fps),
                fingerprint_stats=await self._fingerprint_stats(conn, tenant_id, fps),
            )

    async def existing_exception_ids(self, tenant_id: str, ids: Iterable[str]) -> set[str]:
        """Which of these exception ids the tenant already has (caller-chosen ids must stay unique)."""
        async with self._read() as conn:
            return await self._existing_ids(conn, tenant_id, ids)

    async def find_by_idempotency_keys(self, tenant_id: str, keys: Iterable[str]) -> dict[str, str]:
        """Known idempotency keys -> the exception they were recorded against (recurrences included)."""
        async with self._read() as conn:
            return await self._find_keys(conn, tenant_id, keys)

    async def find_open_by_fingerprints(self, tenant_id: str, fps: Iterable[str]) -> dict[str, str]:
        """Fingerprint -> the most recently received open exception carrying it (open = not terminal)."""
        async with self._read() as conn:
            return await self._open_by_fingerprints(conn, tenant_id, fps)

    async def fingerprint_stats(self, tenant_id: str, fps: Iterable[str]) -> dict[str, FingerprintStats]:
        """Occurrence counts and first/last sightings per fingerprint (for recurrence scoring)."""
        async with self._read() as conn:
            return await self._fingerprint_stats(conn, tenant_id, fps)

    @staticmethod
    async def _existing_ids(conn: AsyncConnection, tenant_id: str, ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for part in chunked(sorted(set(ids))):
            stmt = select(_X.exception_id).where(_X.tenant_id == tenant_id, _X.exception_id.in_(part))
            out.update(r[0] for r in (await conn.execute(stmt)).all())
        return out

    @staticmethod
    async def _find_keys(conn: AsyncConnection, tenant_id: str, keys: Iterable[str]) -> dict[str, str]:
        c = idempotency_keys.c
        out: dict[str, str] = {}
        for part in chunked(sorted({k for k in keys if k is not None})):
            stmt = select(c.idempotency_key, c.exception_id).where(
                c.tenant_id == tenant_id, c.idempotency_key.in_(part)
            )
            out.update({k: e for k, e in (await conn.execute(stmt)).all()})
        return out

    @staticmethod
    async def _open_by_fingerprints(conn: AsyncConnection, tenant_id: str, fps: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in chunked(sorted({f for f in fps if f is not None})):
            stmt = (
                select(_X.fingerprint, _X.exception_id)
                .where(
                    _X.tenant_id == tenant_id,
                    _X.fingerprint.in_(part),
                    _X.status.not_in(sorted(TERMINAL_STATUSES)),
                )
                .order_by(_X.received_at, _X.exception_id)
            )
            out.update({fp: exc_id for fp, exc_id in (await conn.execute(stmt)).all()})
        return out

    @staticmethod
    async def _fingerprint_stats(
        conn: AsyncConnection, tenant_id: str, fps: Iterable[str]
    ) -> dict[str, FingerprintStats]:
        out: dict[str, FingerprintStats] = {}
        for part in chunked(sorted({f for f in fps if f is not None})):
            stmt = select(_F.fingerprint, _F.count, _F.first_seen, _F.last_seen, _F.last_exception_id).where(
                _F.tenant_id == tenant_id, _F.fingerprint.in_(part)
            )
            for fp, count, first, last, last_id in (await conn.execute(stmt)).all():
                out[fp] = FingerprintStats(int(count), first, last, last_id)
        return out

    # ------------------------------------------------------------------ reads

    async def get_exception(self, tenant_id: str, exception_id: str) -> dict[str, Any] | None:
        """The full projection, including the canonical `record`."""
        stmt = select(exceptions).where(_X.tenant_id == tenant_id, _X.exception_id == exception_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return _as_dict(row) if row is not None else None

    async def exceptions_by_ids(self, tenant_id: str, exception_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`get_exception` for many: the tenant's exceptions with these ids, by id (unknown ids absent)."""
        out: dict[str, dict[str, Any]] = {}
        async with self._read() as conn:
            for part in chunked(sorted(set(exception_ids))):
                stmt = select(exceptions).where(_X.tenant_id == tenant_id, _X.exception_id.in_(part))
                for row in (await conn.execute(stmt)).all():
                    out[row.exception_id] = _as_dict(row)
        return out

    async def list_exceptions(
        self,
        tenant_id: str,
        status: str | Iterable[str] | None = None,
        exception_type: str | Iterable[str] | None = None,
        severity: str | Iterable[str] | None = None,
        source_system: str | Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        sort: str = "-received_at",
        *,
        include_record: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of exceptions and the cursor of the next page (None on the last page).

        Keyset pagination on (sort key, exception_id): stable under concurrent inserts, no OFFSET scans.
        `since` is inclusive and `until` exclusive, both on received_at; `text` is a case-insensitive
        substring match on summary, exception id and source id.
        """
        if sort not in SORTS:
            raise StoreError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if not 1 <= limit <= 1000:
            raise StoreError("limit must be between 1 and 1000")
        key = exceptions.c[SORTS[sort]]
        descending = sort.startswith("-")
        stmt: Select[Any] = select(*(exceptions.c if include_record else _LIST_COLUMNS)).where(
            _X.tenant_id == tenant_id
        )
        for column, wanted in (
            (_X.status, _values(status)),
            (_X.exception_type, _values(exception_type)),
            (_X.severity, _values(severity)),
            (_X.source_system, _values(source_system)),
        ):
            if wanted is not None:
                stmt = stmt.where(column == wanted[0] if len(wanted) == 1 else column.in_(wanted))
        if since is not None:
            stmt = stmt.where(_X.received_at >= since)
        if until is not None:
            stmt = stmt.where(_X.received_at < until)
        if text:
            stmt = stmt.where(
                or_(
                    _X.summary.icontains(text, autoescape=True),
                    _X.exception_id.icontains(text, autoescape=True),
                    _X.source_id.icontains(text, autoescape=True),
                )
            )
        if cursor is not None:
            value, after_id = decode_cursor(cursor, sort)
            stmt = stmt.where(_after(key, value, after_id, descending))
        order = (key.desc(), _X.exception_id.desc()) if descending else (key.asc(), _X.exception_id.asc())
        stmt = stmt.order_by(*order).limit(limit + 1)
        async with self._read() as conn:
            rows = [_as_dict(r) for r in (await conn.execute(stmt)).all()]
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode_cursor(sort, last[key.name], last["exception_id"])

    async def get_events(self, tenant_id: str, exception_id: str) -> list[dict[str, Any]]:
        """The exception's event stream in seq order (empty if the exception is unknown to this tenant)."""
        stmt = (
            select(_E.exception_id, _E.seq, _E.stage, _E.at, _E.decision, _E.payload)
            .where(_E.tenant_id == tenant_id, _E.exception_id == exception_id)
            .order_by(_E.seq)
        )
        async with self._read() as conn:
            return [_as_dict(r) for r in (await conn.execute(stmt)).all()]

    # ------------------------------------------------------------------ human actions

    async def update_exception(self, tenant_id: str, exception_id: str, /, **fields: Any) -> dict[str, Any]:
        """Set projection fields directly, with an `exception.update` audit entry naming them (every change
        to an exception is in the tenant's chain: the memory's indexer follows it). Prefer
        `append_events(..., fields=...)` for human actions, which records the change with its events and
        its actor's audit entries in one transaction."""
        detail = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in sorted(fields.items())}
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            await self._apply_fields(conn, tenant_id, exception_id, fields)
            await self._append_audit(conn, tenant_id, head, [
                AuditRow("system", "exception.update", exception_id, utcnow(), {"fields": detail})])
            row = (
                await conn.execute(
                    select(exceptions).where(_X.tenant_id == tenant_id, _X.exception_id == exception_id)
                )
            ).one()
        return _as_dict(row)

    async def append_events(
        self,
        tenant_id: str,
        exception_id: str,
        events: Sequence[EventRow],
        audits: Sequence[AuditRow] = (),
        *,
        fields: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Append events (and audit entries, and optionally projection changes) to one exception atomically.
        Returns the seqs given to the events."""
        for ev in events:
            if ev.exception_id != exception_id:
                raise StoreError(
                    f"event for {ev.exception_id!r} passed to append_events for {exception_id!r}"
                )
        unaudited = unaudited_change(exception_id, fields, audits)
        if unaudited is not None:
            raise StoreError(unaudited)
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            seqs = await self._max_seqs(conn, tenant_id, {exception_id})
            if exception_id not in seqs:
                raise NotFound(f"exception {exception_id!r} does not exist for tenant {tenant_id!r}")
            start = seqs[exception_id]
            params = [_event_param(tenant_id, exception_id, start + i, ev) for i, ev in enumerate(events, 1)]
            await bulk_insert(conn, exception_events, params, encoded=_EVENT_JSON)
            if fields:
                await self._apply_fields(conn, tenant_id, exception_id, dict(fields))
            await self._append_audit(conn, tenant_id, head, audits)
        return [p["seq"] for p in params]

    async def _apply_fields(
        self, conn: AsyncConnection, tenant_id: str, exception_id: str, fields: dict[str, Any]
    ) -> None:
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise StoreError(f"cannot update exception field(s): {', '.join(unknown)}")
        values = dict(fields)
        values.setdefault("updated_at", utcnow())
        where = and_(_X.tenant_id == tenant_id, _X.exception_id == exception_id)
        result = await conn.execute(update(exceptions).where(where).values(**values))
        if result.rowcount == 0:
            raise NotFound(f"exception {exception_id!r} does not exist for tenant {tenant_id!r}")
        status = values.get("status")
        if status is None:
            return
        fc = fingerprints.c
        own_fp = select(_X.fingerprint).where(where).scalar_subquery()
        if status in TERMINAL_STATUSES:
            # An exception is only ever the open one of its own fingerprint: the key lookup avoids a scan.
            await conn.execute(
                update(fingerprints)
                .where(fc.tenant_id == tenant_id, fc.fingerprint == own_fp, fc.open_exception_id == exception_id)
                .values(open_exception_id=None)
            )
        else:
            await conn.execute(
                update(fingerprints)
                .where(fc.tenant_id == tenant_id, fc.fingerprint == own_fp)
                .values(open_exception_id=exception_id)
            )


# ---------------------------------------------------------------------- batch planning (pure)


@dataclass(slots=True)
class _Plan:
    inserts: list[ExceptionWrite]
    updates: list[ExceptionWrite]
    recurrences: dict[str, tuple[int, datetime]]  # target -> (count, latest updated_at)
    new_ids: list[str]
    existing: set[str]  # targets that must already be stored


def _plan(tenant_id: str, writes: Sequence[ExceptionWrite]) -> _Plan:
    """Validate a batch before touching the database and sort its writes by kind."""
    inserts: list[ExceptionWrite] = []
    updates: list[ExceptionWrite] = []
    recurrences: dict[str, tuple[int, datetime]] = {}
    new_ids: set[str] = set()
    existing: set[str] = set()
    keys: set[str] = set()
    for n, w in enumerate(writes):
        row = w.row
        if row.tenant_id != tenant_id:
            raise StoreError(
                f"write {n}: exception {row.exception_id!r} belongs to tenant {row.tenant_id!r}, not {tenant_id!r}"
            )
        if w.is_new and w.recurrence_of is not None:
            raise StoreError(f"write {n}: a new exception cannot also be a recurrence of {w.recurrence_of!r}")
        target = w.target_id
        for ev in w.events:
            if ev.exception_id not in (row.exception_id, target):
                raise StoreError(f"write {n}: event for {ev.exception_id!r} does not belong to {target!r}")
        if row.idempotency_key is not None and (w.is_new or w.recurrence_of is not None):
            if row.idempotency_key in keys:
                raise Conflict(
                    f"batch rejected, nothing written: idempotency key {row.idempotency_key!r} appears twice"
                )
            keys.add(row.idempotency_key)
        if w.is_new:
            if row.exception_id in new_ids:
                raise Conflict(
                    f"batch rejected, nothing written: exception {row.exception_id!r} appears twice as new"
                )
            new_ids.add(row.exception_id)
            inserts.append(w)
            continue
        if target not in new_ids:
            existing.add(target)
        if w.recurrence_of is not None:
            count, latest = recurrences.get(target, (0, row.received_at))
            recurrences[target] = (count + 1, max(latest, row.updated_at or row.received_at))
        else:
            updates.append(w)
    return _Plan(inserts, updates, recurrences, [w.row.exception_id for w in inserts], existing)


def _event_param(tenant_id: str, exception_id: str, seq: int, ev: EventRow) -> dict[str, Any]:
    """The event's row with `decision` and `payload` as JSON text (insert with `encoded=_EVENT_JSON`)."""
    if ev.encoded is not None:
        decision, payload = ev.encoded
    else:
        decision = None if ev.decision is None else canonical_json(ev.decision).decode()
        payload = canonical_json(ev.payload).decode()
    return {
        "tenant_id": tenant_id,
        "exception_id": exception_id,
        "seq": seq,
        "stage": ev.stage,
        "at": ev.at,
        "decision": decision,
        "payload": payload,
    }


_EVENT_JSON = ("decision", "payload")


def _event_params(
    tenant_id: str, writes: Sequence[ExceptionWrite], seqs: dict[str, int]
) -> list[dict[str, Any]]:
    """Number events per target exception, continuing from each one's stored maximum."""
    out: list[dict[str, Any]] = []
    for w in writes:
        target = w.target_id
        seq = seqs[target]
        for ev in w.events:
            seq += 1
            out.append(_event_param(tenant_id, target, seq, ev))
        seqs[target] = seq
    return out


def _update_params(row: ExceptionRow, now: datetime) -> dict[str, Any]:
    params = {
        f"b_{name}": value for name, value in _row_params(row, now).items() if name in PROJECTION_FIELDS
    }
    params["b_tenant"] = row.tenant_id
    params["b_id"] = row.exception_id
    return params


def _after(key: Any, value: Any, after_id: str, descending: bool) -> ColumnElement[bool]:
    if descending:
        return or_(key < value, and_(key == value, _X.exception_id < after_id))
    return or_(key > value, and_(key == value, _X.exception_id > after_id))


async def _complete_queue(conn: AsyncConnection, tenant_id: str, ids: Sequence[int], now: datetime) -> None:
    q = intake_queue.c
    for part in chunked(list(ids)):
        await conn.execute(
            update(intake_queue)
            .where(q.tenant_id == tenant_id, q.id.in_(part), q.state == "PENDING")
            .values(state="DONE", processed_at=now, lease_until=None, error=None)
        )


def _fingerprint_upsert(dialect: Dialect) -> Any:
    """Insert a batch's fingerprint rows, merging each into an existing row of the same fingerprint."""
    ins = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(fingerprints)
    ex = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[_F.tenant_id, _F.fingerprint],
        set_={
            "count": _F["count"] + ex["count"],
            "first_seen": case((ex.first_seen < _F.first_seen, ex.first_seen), else_=_F.first_seen),
            "last_seen": case((ex.last_seen > _F.last_seen, ex.last_seen), else_=_F.last_seen),
            # The latest-seen occurrence, not the latest written: a backfilled older one leaves it be (a tie
            # goes to this write).
            "last_exception_id": case(
                (ex.last_seen >= _F.last_seen, ex.last_exception_id), else_=_F.last_exception_id
            ),
            "open_exception_id": case(
                (ex.open_exception_id.is_not(None), ex.open_exception_id),
                (_F.open_exception_id == ex.last_exception_id, null()),
                else_=_F.open_exception_id,
            ),
        },
    )


_UPDATE_PROJECTION = (
    update(exceptions)
    .where(_X.tenant_id == bindparam("b_tenant"), _X.exception_id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=exceptions.c[name].type) for name in PROJECTION_FIELDS})
)

_BUMP_RECURRENCE = (
    update(exceptions)
    .where(_X.tenant_id == bindparam("b_tenant"), _X.exception_id == bindparam("b_id"))
    .values(
        recurrence_count=_X.recurrence_count + bindparam("b_inc"),
        updated_at=bindparam("b_updated", type_=_X.updated_at.type),
    )
)

_CLEAR_OPEN_FP = (
    update(fingerprints)
    .where(
        _F.tenant_id == bindparam("b_tenant"),
        _F.fingerprint == bindparam("b_fp"),
        _F.open_exception_id == bindparam("b_id"),
    )
    .values(open_exception_id=None)
)
