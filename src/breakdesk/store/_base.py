"""Shared plumbing for the store's repositories: transactions, error translation, audit chain appends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Dialect, Row, Table, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from breakdesk.audit.chain import AuditEntry, link
from breakdesk.store.engine import WRITE_OPTION
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.records import AuditRow
from breakdesk.store.tables import audit_entries, audit_heads

T = TypeVar("T")

#: Bound parameters per IN (...) list; keeps well under SQLite's and asyncpg's parameter limits.
IN_CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunked(items: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_BulkPlan = tuple[str, tuple[str, ...], list[Any]]  # SQL, parameter order, bind processor per parameter
_bulk_plans: dict[tuple[str, str, tuple[str, ...]], _BulkPlan] = {}


def _bulk_plan(table: Table, dialect: Dialect, keys: tuple[str, ...]) -> _BulkPlan | None:
    cache_key = (table.name, dialect.name, keys)
    plan = _bulk_plans.get(cache_key)
    if plan is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
        if compiled.positiontup is None:  # named paramstyle: nothing to gain, use the normal path
            return None
        names = tuple(compiled.positiontup)
        procs = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        plan = _bulk_plans[cache_key] = (compiled.string, names, procs)
    return plan


async def bulk_insert(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """`executemany` of a Core INSERT with SQLAlchemy's per-row parameter bookkeeping skipped.

    The statement and the bind processors are SQLAlchemy's own (compiled once per table, dialect and column
    set); only the loop that turns dicts into parameter tuples is ours. That takes about a third off each
    bulk insert, and the batch write path inserts a dozen rows per exception. Rows must share their keys.
    """
    if not rows:
        return
    plan = _bulk_plan(table, conn.dialect, tuple(rows[0]))
    if plan is None:
        await conn.execute(insert(table), list(rows))
        return
    sql, names, procs = plan
    pairs = list(zip(names, procs, strict=True))
    params = [tuple(p(r[n]) if p is not None else r[n] for n, p in pairs) for r in rows]
    await conn.exec_driver_sql(sql, params)


def translate(exc: SQLAlchemyError) -> StoreError:
    """Map a driver error to a store error whose message carries no SQL."""
    if isinstance(exc, IntegrityError):
        return Conflict("the write conflicts with data already stored (duplicate key or missing reference)")
    text = str(getattr(exc, "orig", "") or "").lower()
    if "locked" in text or "busy" in text:
        return StoreError("the database is busy; retry the operation")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return StoreError("the database connection was lost; retry the operation")
    return StoreError(f"database error ({type(getattr(exc, 'orig', None) or exc).__name__})")


class StoreBase:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot on SQLite (WAL) and PostgreSQL."""
        try:
            async with self._engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise translate(exc) from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite it takes the database write lock at BEGIN (BEGIN IMMEDIATE)."""
        try:
            async with self._engine.connect() as conn:
                await conn.execution_options(**{WRITE_OPTION: True})
                async with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise translate(exc) from exc

    async def _tenant_head(self, conn: AsyncConnection, tenant_id: str) -> tuple[int, str]:
        """Lock the tenant's audit head (FOR UPDATE on PostgreSQL) and return (seq, hash).

        Taken first in every write transaction, so writers of one tenant queue here instead of deadlocking
        later; it doubles as the check that the tenant exists.
        """
        stmt = select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.tenant_id == tenant_id)
        row = (await conn.execute(stmt.with_for_update())).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return int(row.seq), str(row.hash)

    async def _append_audit(
        self, conn: AsyncConnection, tenant_id: str, head: tuple[int, str], rows: Sequence[AuditRow]
    ) -> tuple[int, str]:
        """Extend the chain inside the caller's transaction; returns the new head."""
        entries = link(
            tenant_id, head[0], head[1], ((r.at, r.actor, r.action, r.subject, r.detail) for r in rows)
        )
        if not entries:
            return head
        await bulk_insert(
            conn,
            audit_entries,
            [
                {
                    "tenant_id": e.tenant_id,
                    "seq": e.seq,
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "detail": e.detail,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in entries
            ],
        )
        last = entries[-1]
        await conn.execute(
            update(audit_heads)
            .where(audit_heads.c.tenant_id == tenant_id)
            .values(seq=last.seq, hash=last.hash)
        )
        return last.seq, last.hash


def audit_entry(row: Row) -> AuditEntry:
    m = row._mapping
    return AuditEntry(
        tenant_id=m["tenant_id"],
        seq=int(m["seq"]),
        at=m["at"],
        actor=m["actor"],
        action=m["action"],
        subject=m["subject"],
        detail=m["detail"],
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )
