"""Shared plumbing for the store's repositories: transactions, error translation, audit chain appends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Dialect, Row, Table, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from breakdesk.audit.chain import AuditEntry, canonical_json, link_json
from breakdesk.store.engine import WRITE_OPTION, WalCheckpointer, sqlite_file
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.records import AuditRow
from breakdesk.store.tables import audit_entries, audit_heads
from breakdesk.store.types import UTCDateTime

T = TypeVar("T")

#: Bound parameters per IN (...) list; keeps well under SQLite's and asyncpg's parameter limits.
IN_CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunked(items: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class _BulkColumn:
    name: str
    process: Callable[[Any], Any] | None
    #: Datetime columns: a batch stamps most rows with the same few instants, so convert each distinct
    #: value once.
    memo: bool


_bulk_plans: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, tuple[_BulkColumn, ...]] | None] = {}

#: Builds an INSERT variant (for example an upsert) of a table for a dialect; see `bulk_insert`.
InsertFactory = Callable[[Dialect], Any]


def _json_text(value: Any) -> str | None:
    """What SQLAlchemy's JSON bind processor gives for a `none_as_null` column with Breakdesk's serializer
    (`engine._json_dumps`), without its per-value dispatch."""
    return None if value is None else canonical_json(value).decode()


def _column_processor(table: Table, name: str, dialect: Dialect) -> _BulkColumn:
    col_type = table.c[name].type
    impl = col_type.dialect_impl(dialect)
    if isinstance(impl, JSON) and impl.none_as_null and dialect.name in ("sqlite", "postgresql"):
        # both drivers take the JSON text (asyncpg's codecs, set up by SQLAlchemy, add the jsonb prefix)
        return _BulkColumn(name, _json_text, False)
    return _BulkColumn(name, impl.bind_processor(dialect), isinstance(col_type, UTCDateTime))


def _bulk_plan(
    table: Table, dialect: Dialect, keys: tuple[str, ...], statement: InsertFactory | None
) -> tuple[str, tuple[_BulkColumn, ...]] | None:
    name = "insert" if statement is None else f"{statement.__module__}.{statement.__qualname__}"
    cache_key = (table.name, name, dialect.name, keys)
    if cache_key not in _bulk_plans:
        stmt = insert(table) if statement is None else statement(dialect)
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        if compiled.positiontup is None:  # named paramstyle: nothing to gain, use the normal path
            _bulk_plans[cache_key] = None
        else:
            names = tuple(compiled.positiontup)
            _bulk_plans[cache_key] = (compiled.string, tuple(_column_processor(table, n, dialect) for n in names))
    return _bulk_plans[cache_key]


def bulk_params(
    columns: Sequence[_BulkColumn], rows: Sequence[dict[str, Any]], encoded: Collection[str] = ()
) -> list[tuple[Any, ...]]:
    """Driver parameter tuples for `rows`, built column by column (one tight loop per column instead of a
    generator and a processor dispatch per value). Columns named in `encoded` already hold what the
    driver takes (for example JSON text the caller had to produce anyway) and pass through."""
    out: list[list[Any]] = []
    for col in columns:
        name, process = col.name, col.process
        values = [r[name] for r in rows]
        if process is not None and name not in encoded:
            if col.memo:
                converted = {v: process(v) for v in set(values)}
                values = [converted[v] for v in values]
            else:
                values = [process(v) for v in values]
        out.append(values)
    return list(zip(*out, strict=True))


async def bulk_insert(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    encoded: Collection[str] = (),
    statement: InsertFactory | None = None,
) -> None:
    """`executemany` of a Core INSERT with SQLAlchemy's per-row parameter bookkeeping skipped.

    The statement is SQLAlchemy's own, compiled once per table, dialect and column set, and the bind
    processors are SQLAlchemy's (JSON columns excepted, see `_json_text`); only the conversion loop is ours.
    The batch write path inserts about ten rows per exception, so this loop is on the hot path. Rows must
    share their keys; `encoded` names columns whose values are already in driver form. `statement` builds
    an INSERT variant instead (an upsert: a module-level function, since its name keys the compiled cache).
    """
    if not rows:
        return
    plan = _bulk_plan(table, conn.dialect, tuple(rows[0]), statement)
    if plan is None:
        if encoded:
            raise StoreError("pre-encoded columns need a positional paramstyle driver")
        await conn.execute(insert(table) if statement is None else statement(conn.dialect), list(rows))
        return
    sql, columns = plan
    params = bulk_params(columns, rows, encoded)
    if (
        statement is None
        and len(params) >= COPY_MIN_ROWS
        and conn.dialect.name == "postgresql"
        and await _copy(conn, table, columns, params)
    ):
        return
    await conn.exec_driver_sql(sql, params)


#: From this many rows a PostgreSQL insert is a binary COPY: one message stream the server loads without
#: planning and executing an INSERT per row (measured: several times faster than asyncpg's executemany).
COPY_MIN_ROWS = 20


async def _copy(
    conn: AsyncConnection, table: Table, columns: Sequence[_BulkColumn], params: list[tuple[Any, ...]]
) -> bool:
    """COPY the rows in through asyncpg, inside the transaction SQLAlchemy opened; False when that
    transaction has not reached the server yet (nothing ran in it so far), so the caller inserts instead."""
    import asyncpg  # only reached on PostgreSQL, whose driver is asyncpg

    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection) or not driver.is_in_transaction():
        return False
    try:
        await driver.copy_records_to_table(table.name, records=params, columns=[c.name for c in columns])
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict("the write conflicts with data already stored (duplicate key or missing reference)") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"database error ({type(exc).__name__})") from exc
    except (asyncpg.InterfaceError, OSError) as exc:
        raise StoreError("the database connection was lost; retry the operation") from exc
    return True


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
        path = sqlite_file(engine)
        #: SQLite files: WAL checkpoints run in the background instead of inside a writer's commit.
        self._checkpointer = WalCheckpointer(path) if path is not None else None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def write_chunk(self) -> int:
        """Exceptions per pipeline write transaction that suit this database (`Orchestrator.process`).

        PostgreSQL works in its own process, so a batch is written in chunks while the next chunk is
        decided (measured: ~10-15 % faster at 125-250 than one transaction per 500). SQLite works on this
        process's cores and pays per transaction for rewriting the same hot index pages into the WAL, so one
        transaction per batch was fastest there (measured: 1,850/s at 500, 1,600/s at 125, 1,460/s at 63)."""
        return 250 if self._pg else 10_000

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
        if self._checkpointer is not None:
            self._checkpointer.request()

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
        linked = link_json(
            tenant_id, head[0], head[1], ((r.at, r.actor, r.action, r.subject, r.detail) for r in rows)
        )
        if not linked:
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
                    "detail": detail_json,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e, detail_json in linked
            ],
            encoded=("detail",),
        )
        entries = [e for e, _ in linked]
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
