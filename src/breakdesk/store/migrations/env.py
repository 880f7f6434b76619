"""Alembic environment for Breakdesk's packaged migrations.

Normally `breakdesk.store.migrate` hands over a connection that is already inside a (locked) transaction;
when run by the plain `alembic` command it opens its own engine from `sqlalchemy.url` or the environment.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from breakdesk.store.engine import WRITE_OPTION, database_url, make_engine
from breakdesk.store.tables import metadata

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or database_url()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=_url(), target_metadata=metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (handed_over := config.attributes.get("connection")) is not None:
    _run(handed_over)
else:
    asyncio.run(_run_with_own_engine())
