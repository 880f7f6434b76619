"""Shared plumbing for the store's repositories: transactions, error translation, audit chain appends."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Dialect, Row, Table, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import greenlet_spawn

from breakdesk.audit.chain import AuditEntry, canonical_json, link_json
from breakdesk.slicing import Slicer
from breakdesk.store.engine import WRITE_OPTION, WalCheckpointer, sqlite_file, sqlite_pragmas
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.planner import PlannerStats
from breakdesk.store.records import AuditRow
from breakdesk.store.tables import audit_entries, audit_heads
from breakdesk.store.types import UTCDateTime

T = TypeVar("T")

#: Bound parameters per IN (...) list; keeps well under SQLite's and asyncpg's parameter limits.
IN_CHUNK = 500
#: Audit entries hashed between checks of the event loop's time slice (`_append_audit`).
AUDIT_SLICE_ROWS = 50


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


def _type_processor(col_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor of a type, except JSON documents, which become their canonical text."""
    impl = col_type.dialect_impl(dialect)
    if isinstance(impl, JSON) and impl.none_as_null and dialect.name in ("sqlite", "postgresql"):
        # both drivers take the JSON text (asyncpg's codecs, set up by SQLAlchemy, add the jsonb prefix)
        return _json_text
    return impl.bind_processor(dialect)


def _column_processor(table: Table, name: str, dialect: Dialect) -> _BulkColumn:
    col_type = table.c[name].type
    return _BulkColumn(name, _type_processor(col_type, dialect), isinstance(col_type, UTCDateTime))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A Core statement compiled once per dialect into driver SQL with positional parameters.

    Hot write paths run the same few statements thousands of times; compiling them (and computing their
    cache keys) on every call cost more CPU than the database spent executing them. Bind parameters must be
    explicit `bindparam`s with a type; `params` orders and converts named values for the driver.
    """

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    #: Values of the statement's own literals (e.g. `coalesce(x, 0)`), which SQLAlchemy also binds.
    literals: Mapping[str, Any]

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        lit = self.literals
        return tuple(
            v if p is None or v is None else p(v)
            for v, p in zip([values[n] if n in values else lit[n] for n in self.names], self.processors, strict=True)
        )


_prepared: dict[tuple[str, Any], Prepared] = {}


def prepare(key: Any, dialect: Dialect, build: Callable[[], ClauseElement]) -> Prepared:
    """The statement `build()` makes, compiled for `dialect` on first use and cached under `key`."""
    cache_key = (dialect.name, key)
    hit = _prepared.get(cache_key)
    if hit is None:
        compiled: Any = build().compile(dialect=dialect)  # a SQLCompiler: positiontup and binds
        if compiled.positiontup is None:
            raise StoreError(f"{dialect.name}: prepared statements need a positional paramstyle driver")
        names = tuple(compiled.positiontup)
        binds = compiled.binds
        procs = tuple(_type_processor(binds[n].type, dialect) for n in names)
        literals = {n: binds[n].effective_value for n in names if not binds[n].required}
        hit = _prepared[cache_key] = Prepared(compiled.string, names, procs, literals)
    return hit


def bulk_statement(
    table: Table, dialect: Dialect, rows: Sequence[dict[str, Any]], *, encoded: Collection[str] = (),
    statement: InsertFactory | None = None,
) -> Op:
    """A program step (see `Program`) inserting `rows` with `bulk_insert`'s compiled plan and conversion."""
    plan = _bulk_plan(table, dialect, tuple(rows[0]), statement)
    if plan is None:
        raise StoreError(f"{dialect.name}: bulk statements need a positional paramstyle driver")
    sql, columns = plan
    return ("many", sql, bulk_params(columns, rows, encoded))


#: One step of a write program: (kind, driver SQL, parameters). Kinds: "row" (answer: the first row or
#: None), "rows" (all rows), "count" (rows changed), "many" (executemany of a parameter list; answer None).
Op = tuple[str, str, Any]
#: A write transaction as a generator of driver statements, each sent its answer; it returns its result.
#: Written once, it runs in one trip to SQLite's driver thread, or statement by statement on asyncpg.
Program = Generator[Op, Any, T]


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
    if len(rows) == 1:  # a journal write's usual row: no per-column lists
        row = rows[0]
        return [tuple(
            row[c.name] if c.process is None or c.name in encoded else c.process(row[c.name]) for c in columns
        )]
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
    known = _known_cause(text)
    if known is not None:
        return StoreError(known)
    return StoreError(f"database error ({type(getattr(exc, 'orig', None) or exc).__name__})")


def _known_cause(text: str) -> str | None:
    """A plain reason for driver errors a user can act on (their texts carry no SQL or values)."""
    if "file is not a database" in text:
        return "the file is not a SQLite database"
    if "value too long for type" in text:  # PostgreSQL: a text longer than its column (SQLite does not check)
        column = text.rsplit("value too long for type", 1)[1].strip()
        return f"a value is longer than the database allows ({column})"
    return None


def translate_driver(exc: Exception) -> StoreError:
    """Map a raw sqlite3 / asyncpg error (from a write program) to a store error without SQL."""
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict("the write conflicts with data already stored (duplicate key or missing reference)")
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return StoreError("the database is busy; retry the operation")
        return StoreError(_known_cause(text) or f"database error ({type(exc).__name__})")
    import asyncpg

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict("the write conflicts with data already stored (duplicate key or missing reference)")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(_known_cause(str(exc).lower()) or f"database error ({type(exc).__name__})")
    return StoreError("the database connection was lost; retry the operation")


def _run_sqlite_program(conn: sqlite3.Connection, program: Program[T]) -> T:
    """Drive a write program to its end on the connection's own thread, in one BEGIN IMMEDIATE transaction."""
    conn.execute("BEGIN IMMEDIATE")
    return _finish_sqlite_program(conn, program)


def _finish_sqlite_program(conn: sqlite3.Connection, program: Program[T]) -> T:
    """Run a write program inside the BEGIN IMMEDIATE transaction the caller opened; commit or roll back."""
    try:
        op = next(program)
        while True:
            kind, sql, params = op
            if kind == "many":
                conn.executemany(sql, params)
                answer: Any = None
            else:
                cur = conn.execute(sql, params)
                answer = cur.fetchone() if kind == "row" else cur.fetchall() if kind == "rows" else cur.rowcount
            op = program.send(answer)
    except StopIteration as done:
        conn.execute("COMMIT")
        return done.value
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        program.close()
        raise


class InlineSqliteWriter:
    """A sqlite3 connection used straight from the event loop's thread for small write programs.

    A journal claim is a handful of statements that SQLite runs in tens of microseconds (WAL,
    synchronous=NORMAL: the commit appends to the WAL file without an fsync), yet going through aiosqlite
    costs a hand-off to its thread and a wake-up of the event loop on the way back, which were most of a
    non-idempotent step's overhead. The loop must never wait for another writer, so this connection has no
    busy timeout: when BEGIN IMMEDIATE finds the write lock taken, `run` declines and the caller goes
    through aiosqlite, whose thread waits instead. Durability and isolation are the other connections'
    (same file, same WAL, same pragmas): it is one more connection, not a different store.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._disabled = False
        #: Two event loops in two threads sharing a store must not share the connection at the same time.
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection | None:
        if self._pid != os.getpid():  # never use a connection inherited across fork(); open our own
            self._conn, self._pid = None, os.getpid()
        if self._conn is None and not self._disabled:
            try:
                conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                self._disabled = True
                return None
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":  # a commit would fsync here: not on the loop
                    conn.close()
                    self._disabled = True
                    return None
                # no busy wait and no inline checkpoint (copying pages and an fsync) on the loop's thread: the
                # background checkpointer and the other connections' backstop keep the WAL short
                for pragma in sqlite_pragmas(busy_timeout_ms=0, autocheckpoint_pages=0):
                    conn.execute(pragma)
            except sqlite3.Error:
                conn.close()
                return None  # e.g. the file is locked while it is being migrated: try again next time
            self._conn = conn
        return self._conn

    def run(self, program: Program[T]) -> tuple[bool, T | None]:
        """(True, result) when the program ran and committed here; (False, None), with the program not
        started, when the write lock is taken or the connection is unavailable."""
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._connection()
            if conn is None:
                return False, None
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:  # busy (another writer), or something the aiosqlite path will report
                return False, None
            return True, _finish_sqlite_program(conn, program)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._disabled = True
            if conn is not None and self._pid == os.getpid():
                conn.close()


async def _run_asyncpg_program(conn: Any, program: Program[T], *, single: bool = False) -> T:
    """Drive a write program on a raw asyncpg connection in its own transaction, skipping SQLAlchemy's
    per-statement compilation and result processing (asyncpg caches the prepared statements by text).
    `single`: the program is one statement, which PostgreSQL runs atomically in an implicit transaction."""
    single = single and not conn.is_in_transaction()  # inside a transaction it would not commit by itself
    async with contextlib.nullcontext() if single else conn.transaction():
        try:
            op = next(program)
            ops = 0
            while True:
                kind, sql, params = op
                ops += 1
                if single and ops > 1:  # it would run in a transaction of its own: refuse before it does
                    raise StoreError("a single-statement write program issued a second statement")
                if kind == "many":
                    if len(params) == 1:  # one row: a plain execute is one message exchange less
                        await conn.execute(sql, *params[0])
                    else:
                        await conn.executemany(sql, params)
                    answer: Any = None
                elif kind == "row":
                    answer = await conn.fetchrow(sql, *params)
                elif kind == "rows":
                    answer = await conn.fetch(sql, *params)
                else:
                    status = await conn.execute(sql, *params)
                    answer = int(status.rsplit(" ", 1)[-1])
                op = program.send(answer)
        except StopIteration as done:
            return done.value
        except BaseException:
            program.close()
            raise


async def _run_sqlalchemy_program(conn: AsyncConnection, program: Program[T]) -> T:
    """Any other driver: the same statements through `exec_driver_sql` in the caller's transaction."""
    try:
        op = next(program)
        while True:
            kind, sql, params = op
            result = await conn.exec_driver_sql(sql, params)
            answer: Any = (
                None if kind == "many" else result.first() if kind == "row"
                else result.all() if kind == "rows" else result.rowcount
            )
            op = program.send(answer)
    except StopIteration as done:
        return done.value


class StoreBase:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pg = engine.dialect.name == "postgresql"
        #: PostgreSQL: keeps planner statistics current on the tables the pipeline grows (store/planner.py).
        self._planner = PlannerStats() if self._pg else None
        path = sqlite_file(engine)
        #: SQLite files: WAL checkpoints run in the background instead of inside a writer's commit.
        self._checkpointer = WalCheckpointer(path) if path is not None else None
        #: SQLite files: small write programs run on the event loop's thread (see `InlineSqliteWriter`).
        self._inline = InlineSqliteWriter(path) if path is not None else None

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

    def _close_inline(self) -> None:
        """Close the inline SQLite writer's connection (the store is closing)."""
        if self._inline is not None:
            self._inline.close()

    async def _write_program(self, program: Program[T], *, inline: bool = False, single: bool = False) -> T:
        """Run a write program as one transaction with as few driver round trips as the driver allows.

        SQLite: with `inline` (a small program: microseconds of SQLite work) the transaction runs on the
        event loop's own thread when the write lock is free (`InlineSqliteWriter`); otherwise the whole
        transaction (BEGIN IMMEDIATE ... COMMIT) is one job on aiosqlite's connection thread, instead of
        about four thread hand-offs per statement through SQLAlchemy's adapter. PostgreSQL: the raw asyncpg
        connection, one round trip per statement; a `single` program (exactly one statement, atomic by
        itself) runs in its implicit transaction, without the BEGIN and COMMIT round trips. Store errors
        raised by the program roll it back.
        """
        if inline and self._inline is not None:
            try:
                done, value = self._inline.run(program)
            except sqlite3.Error as exc:
                raise translate_driver(exc) from exc
            if done:
                if self._checkpointer is not None:
                    self._checkpointer.request()
                return value  # type: ignore[return-value]  # done: the program's own result
        result = await self._on_driver(
            lambda conn: _run_sqlite_program(conn, program),
            lambda driver: _run_asyncpg_program(driver, program, single=single),
            lambda: self._write_program_sqlalchemy(program),
        )
        if self._checkpointer is not None:
            self._checkpointer.request()
        return result

    async def _on_driver(
        self,
        in_sqlite_thread: Callable[[sqlite3.Connection], T],
        on_asyncpg: Callable[[Any], Awaitable[T]],
        otherwise: Callable[[], Awaitable[T]],
    ) -> T:
        """Run a job on a pooled DBAPI connection without an AsyncConnection around it (measured: 38 µs to
        check out and return, against 90 µs through `engine.connect()`; the pool still resets it on return):
        `in_sqlite_thread` with the sqlite3 connection as one job on aiosqlite's thread, or `on_asyncpg` with
        the asyncpg connection, their driver errors translated; `otherwise` (through SQLAlchemy) for any
        other driver."""
        try:
            fairy = await self._engine.raw_connection()
            try:
                driver: Any = fairy.driver_connection
                run_in_thread = getattr(driver, "_execute", None)  # aiosqlite's job queue (SQLAlchemy uses it too)
                if self.dialect == "sqlite" and run_in_thread is not None:
                    try:
                        done: T = await run_in_thread(lambda: in_sqlite_thread(driver._conn))
                    except sqlite3.Error as exc:
                        raise translate_driver(exc) from exc
                    return done
                if self._pg and hasattr(driver, "copy_records_to_table"):
                    import asyncpg

                    try:
                        return await on_asyncpg(driver)
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        raise translate_driver(exc) from exc
            finally:
                await greenlet_spawn(fairy.close)
        except SQLAlchemyError as exc:
            raise translate(exc) from exc
        return await otherwise()

    async def _fetch(self, stmt: Prepared, values: Mapping[str, Any]) -> list[Sequence[Any]]:
        """One prepared SELECT through the raw driver (`_on_driver`), its rows as the driver gives them
        (tuples on SQLite, records on asyncpg): for hot reads of hundreds of rows, where SQLAlchemy's result
        processing cost about 5 µs per row (measured on `case_heads_after`: 5.3-6.9 against 1.7 µs per row).
        Values come back in driver form, so only for columns whose driver value is what the caller wants
        (integers, text, booleans). One statement: a consistent snapshot by itself on both databases."""
        params = stmt.params(values)

        async def through_sqlalchemy() -> list[Sequence[Any]]:
            async with self._read() as conn:
                return list((await conn.exec_driver_sql(stmt.sql, params)).all())

        return await self._on_driver(lambda conn: conn.execute(stmt.sql, params).fetchall(),
                                     lambda driver: driver.fetch(stmt.sql, *params), through_sqlalchemy)

    async def _write_program_sqlalchemy(self, program: Program[T]) -> T:
        """Drivers without a fast path: the program through SQLAlchemy in a normal write transaction."""
        async with self._write() as conn:
            return await _run_sqlalchemy_program(conn, program)

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
        """Extend the chain inside the caller's transaction; returns the new head. A pipeline batch's entries
        are hashed a slice at a time with the event loop free in between (`breakdesk.slicing`): their
        canonical JSON and SHA-256 links take milliseconds per hundred entries."""
        params: list[dict[str, Any]] = []
        new_head = head
        slicer = Slicer()
        for start in range(0, len(rows), AUDIT_SLICE_ROWS):
            part, new_head = audit_params(tenant_id, new_head, rows[start:start + AUDIT_SLICE_ROWS])
            params.extend(part)
            await slicer.tick()
        if not params:
            return head
        await bulk_insert(conn, audit_entries, params, encoded=("detail",))
        await conn.execute(
            update(audit_heads)
            .where(audit_heads.c.tenant_id == tenant_id)
            .values(seq=new_head[0], hash=new_head[1])
        )
        return new_head


def audit_params(
    tenant_id: str, head: tuple[int, str], rows: Sequence[AuditRow]
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """Chain `rows` onto `head`: the audit_entries insert parameters (detail as its hashed JSON text, see
    `bulk_insert`'s `encoded`) and the new head."""
    linked = link_json(tenant_id, head[0], head[1], ((r.at, r.actor, r.action, r.subject, r.detail) for r in rows))
    if not linked:
        return [], head
    params = [
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
    ]
    last = linked[-1][0]
    return params, (last.seq, last.hash)


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
