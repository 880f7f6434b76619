"""Schema migrations, run programmatically from the packaged `migrations/` directory (no alembic.ini).

`Store.open` upgrades automatically; `breakdesk db upgrade` calls `upgrade(url)`. Concurrent upgraders are
serialised (an advisory lock on PostgreSQL, the write lock on SQLite), so many processes may start at once.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from breakdesk.store.engine import WRITE_OPTION, make_engine
from breakdesk.store.errors import StoreError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Arbitrary constant: the key of the PostgreSQL advisory lock held while migrating.
_PG_LOCK_KEY = 0x4244_4D49_4752  # "BDMIGR"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts; `url` only matters for offline/CLI use."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    """Revisions shipped with this code (cached: readiness probes call this often)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")


def _upgrade_on(connection: Connection, revision: str) -> None:
    _lock(connection)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade_on(connection: Connection, revision: str) -> None:
    _lock(connection)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _current_on(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction (all or nothing where the database allows)."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            await conn.run_sync(_upgrade_on, revision)


async def downgrade_engine(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            await conn.run_sync(_downgrade_on, revision)


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(_current_on)


async def is_current(engine: AsyncEngine) -> bool:
    """True when the database is at exactly the revisions this code ships."""
    return await current_revisions(engine) == set(head_revisions())


async def upgrade_async(url: str | None = None, revision: str = "head") -> None:
    engine = make_engine(url)
    try:
        await upgrade_engine(engine, revision)
    finally:
        await engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Synchronous entry point for `breakdesk db upgrade` (URL defaults to $BREAKDESK_DATABASE_URL or SQLite)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(upgrade_async(url, revision))
        return
    raise StoreError("upgrade() cannot run inside an event loop; await upgrade_async() instead")
