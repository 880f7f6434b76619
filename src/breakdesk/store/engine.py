"""Engine construction: URL defaults, JSON codec and per-connection SQLite settings."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from breakdesk.audit.chain import canonical_json
from breakdesk.store.errors import StoreError

DEFAULT_URL = "sqlite+aiosqlite:///./breakdesk.db"
#: The drivers Breakdesk runs on (async ones: the store is asyncio throughout).
DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_URL_HINT = "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DATABASE"
URL_ENV = "BREAKDESK_DATABASE_URL"

#: Execution option that marks a connection's next transaction as a writer (see `_sqlite_begin`).
WRITE_OPTION = "breakdesk_write"

_BUSY_TIMEOUT_MS = 10_000

#: WAL pages after which a committing connection checkpoints inline (SQLite's default is 1,000). Only a
#: backstop: `WalCheckpointer` checkpoints in the background long before, so commits do not wait for it.
_AUTOCHECKPOINT_PAGES = 16_000


def database_url(url: str | None = None) -> str:
    """The explicit URL, else $BREAKDESK_DATABASE_URL, else a SQLite file in the working directory."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def _json_dumps(value: Any) -> str:
    return canonical_json(value).decode()


def sqlite_pragmas(
    busy_timeout_ms: int = _BUSY_TIMEOUT_MS, autocheckpoint_pages: int = _AUTOCHECKPOINT_PAGES
) -> tuple[str, ...]:
    """Per-connection settings every Breakdesk SQLite connection runs with (after journal_mode=WAL).

    synchronous=NORMAL in WAL mode: a commit is durable against a crash of this process (the WAL is written
    before the commit returns) but not against an OS crash or power loss (the WAL is fsynced at checkpoints)."""
    return (
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA wal_autocheckpoint={autocheckpoint_pages}",
    )


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take BEGIN away from the sqlite3 module (it skips BEGIN for SELECT and DDL) and emit it ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        for pragma in sqlite_pragmas():
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that read the audit head and then tries
    # to write after another writer committed gets SQLITE_BUSY_SNAPSHOT, which busy_timeout cannot cure.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class WalCheckpointer:
    """Checkpoints a SQLite WAL database from its own thread and connection, so commits never wait for it.

    With SQLite's default, the commit that pushes the WAL past 1,000 pages copies them into the database
    file and fsyncs it before returning: measured on the pipeline's batch writes, that was two thirds of
    the commit time. Writers poke `request()` after committing; at most every `interval` seconds the thread
    runs a PASSIVE checkpoint, which never blocks readers or writers. Durability is unchanged: a
    transaction is durable once its commit returns (WAL, synchronous=NORMAL: against process crashes),
    whoever later copies its pages into the database file.
    """

    def __init__(self, path: str, interval: float = 0.2) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request(self) -> None:
        """Ask for a checkpoint soon (cheap; starts the thread on first use, and again in a forked child)."""
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if (self._thread is None or not self._thread.is_alive()) and not self._stopping:
                    self._thread = threading.Thread(target=self._run, name="breakdesk-wal-checkpoint", daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the pending checkpoint, if any, and end the thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error:
            self._stopping = True  # cannot open the file: commits keep checkpointing inline (the backstop)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:
                    pass  # busy or failing disk: the next request, or the inline backstop, checkpoints
                if self._stopping:
                    return
                time.sleep(self.interval)
        finally:
            conn.close()


def sqlite_path(url: URL) -> str | None:
    """The database file a SQLite URL names (None for other databases and in-memory SQLite)."""
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return name


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The database file of a SQLite engine (None for other databases and in-memory SQLite)."""
    return sqlite_path(engine.url)


def database_target(url: str | URL | None = None) -> URL:
    """`url` (default `database_url()`) parsed, and one Breakdesk runs on; else a StoreError that says which
    URL forms work (a password it holds masked)."""
    raw = url if url is not None else database_url()
    try:
        target = make_url(raw)
    except (ArgumentError, ValueError):  # (ValueError: a port that is not a number)
        shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", str(raw))  # (a password, should it hold one)
        raise StoreError(f"invalid database URL {shown!r}: {_URL_HINT}") from None
    if target.drivername not in DRIVERS:
        raise StoreError(f"unsupported database URL {target.render_as_string(hide_password=True)!r}: {_URL_HINT}")
    return target


def make_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg) with Breakdesk's settings applied."""
    target = database_target(url)
    path = sqlite_path(target)
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):  # (SQLite would only say "unable to open database file")
            raise StoreError(f"cannot open the SQLite database {path}: directory {folder} does not exist")
    engine = create_async_engine(
        target,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        **kwargs,
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine
