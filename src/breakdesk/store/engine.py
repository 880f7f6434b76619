"""Engine construction: URL defaults, JSON codec and per-connection SQLite settings."""

from __future__ import annotations

import os
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from breakdesk.audit.chain import canonical_json

DEFAULT_URL = "sqlite+aiosqlite:///./breakdesk.db"
URL_ENV = "BREAKDESK_DATABASE_URL"

#: Execution option that marks a connection's next transaction as a writer (see `_sqlite_begin`).
WRITE_OPTION = "breakdesk_write"

_BUSY_TIMEOUT_MS = 10_000


def database_url(url: str | None = None) -> str:
    """The explicit URL, else $BREAKDESK_DATABASE_URL, else a SQLite file in the working directory."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def _json_dumps(value: Any) -> str:
    return canonical_json(value).decode()


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take BEGIN away from the sqlite3 module (it skips BEGIN for SELECT and DDL) and emit it ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that read the audit head and then tries
    # to write after another writer committed gets SQLITE_BUSY_SNAPSHOT, which busy_timeout cannot cure.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg) with Breakdesk's settings applied."""
    target = make_url(url if url is not None else database_url())
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
