"""Packaged migrations: idempotent, detectable, and identical to the Core table definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from breakdesk.store import Store, upgrade, upgrade_async
from breakdesk.store.engine import make_engine
from breakdesk.store.migrate import current_revisions, downgrade_engine, head_revisions, upgrade_engine
from breakdesk.store.tables import metadata


async def test_migrations_apply_twice_and_are_current(db_url: str) -> None:
    await upgrade_async(db_url)
    await upgrade_async(db_url)
    async with await Store.open(db_url) as store:
        assert await store.migrations_current()
        assert await current_revisions(store.engine) == set(head_revisions())
        assert len(head_revisions()) == 1  # one linear history


async def test_fresh_database_is_not_current_until_upgraded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    store = await Store.open(url, migrate=False)
    try:
        assert not await store.migrations_current()
        await upgrade_engine(store.engine)
        assert await store.migrations_current()
    finally:
        await store.close()


async def test_unreachable_database_is_not_ready() -> None:
    # A PostgreSQL port nobody listens on (a failed aiosqlite connect leaks a thread; see aiosqlite#241).
    store = await Store.open("postgresql+asyncpg://nobody@127.0.0.1:1/none", migrate=False)
    try:
        assert not await store.migrations_current()
    finally:
        await store.close()


def test_sync_upgrade_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("BREAKDESK_DATABASE_URL", url)
    upgrade()  # what `breakdesk db upgrade` calls; URL from the environment
    upgrade(url)
    assert (tmp_path / "cli.db").exists()


async def test_schema_matches_table_definitions(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await upgrade_engine(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_downgrade_removes_everything_and_upgrade_restores(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'down.db'}")
    try:
        await upgrade_engine(engine)
        await downgrade_engine(engine, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await upgrade_engine(engine)
        assert await current_revisions(engine) == set(head_revisions())
    finally:
        await engine.dispose()


async def test_sqlite_connections_carry_the_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            values = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
    finally:
        await engine.dispose()
    assert values == ["wal", 1, 10_000, 1]  # synchronous=NORMAL is 1


async def test_postgres_documents_are_lz4_compressed_where_the_server_has_it(pg_url: str) -> None:
    async with await Store.open(pg_url) as store, store.engine.connect() as conn:
        methods = (
            await conn.execute(text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"))
        ).scalar() or []
        rows = (
            await conn.execute(
                text(
                    "SELECT attrelid::regclass::text, attname, attcompression::text FROM pg_attribute "
                    "WHERE attrelid::regclass::text IN ('audit_entries', 'exceptions', 'exception_events', "
                    "'memory_cases') AND attname IN ('detail', 'record', 'payload', 'body')"
                )
            )
        ).all()
    expected = "l" if "lz4" in methods else ""
    assert {(t, c): str(m or "") for t, c, m in rows} == {
        ("audit_entries", "detail"): expected,
        ("exceptions", "record"): expected,
        ("exception_events", "payload"): expected,
        ("memory_cases", "body"): expected,
    }


async def test_last_resolutions_query_uses_the_partial_fingerprint_index(db_url: str) -> None:
    """The index holds resolved cases only; the planner takes it only where the query implies its predicate."""
    from breakdesk.store.cases import last_resolutions_stmt

    engine = make_engine(db_url)
    try:
        await upgrade_engine(engine)
        async with engine.connect() as conn:
            sql = str(last_resolutions_stmt("t1", ["fp-1", "fp-2"]).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table: force the choice
                plan = "\n".join(str(r[0]) for r in await conn.execute(text("EXPLAIN " + sql)))
            else:
                plan = "\n".join(str(r[-1]) for r in await conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    finally:
        await engine.dispose()
    assert "ix_memory_cases_resolved_fingerprint" in plan, plan


async def test_memory_ids_are_never_reused_and_the_rebuild_keeps_rows_and_ids(tmp_path: Path) -> None:
    """0007 (SQLite): `memory_cases` and `memory_vectors` are rebuilt with AUTOINCREMENT, their rows and ids
    kept; afterwards a row replacing the latest one gets a larger id (readers follow `id > last seen`)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}")
    case = ("INSERT INTO memory_cases (tenant_id, exception_id, exception_type, source_system, status, entities, "
            "body, received_at, indexed_at) VALUES ('t1', :e, 'T', 's', 'OPEN', '{}', 'b', '2026-01-01', "
            "'2026-01-01')")
    vector = ("INSERT INTO memory_vectors (tenant_id, exception_id, case_id, model, dims, vector, embedded_at) "
              "VALUES ('t1', :e, 1, 'm', 1, x'00000000', '2026-01-01')")
    try:
        await upgrade_engine(engine, "0006")
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO tenants (tenant_id, name, created_at, settings) VALUES ('t1', 't', "
                                    "'2026-01-01', '{}')"))
            for e in ("E-1", "E-2", "E-3"):
                await conn.execute(text(case), {"e": e})
                await conn.execute(text(vector), {"e": e})
            await conn.execute(text("DELETE FROM memory_cases WHERE id = 3"))  # a reused id, before 0007
            await conn.execute(text(case), {"e": "E-3"})
        await upgrade_engine(engine)
        async with engine.begin() as conn:
            rows = (await conn.execute(text("SELECT id, exception_id FROM memory_cases ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(1, "E-1"), (2, "E-2"), (3, "E-3")]
            for table, insert in (("memory_cases", case), ("memory_vectors", vector)):
                await conn.execute(text(f"DELETE FROM {table} WHERE exception_id = 'E-3'"))
                await conn.execute(text(insert), {"e": "E-3"})
                ids = (await conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))).scalars().all()
                assert ids == [1, 2, 4], table
            indexes = (await conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'memory_%' "
                "AND name LIKE 'ix_%' ORDER BY name"))).scalars().all()
        assert indexes == ["ix_memory_cases_resolved_fingerprint", "ix_memory_cases_tenant_id",
                           "ix_memory_vectors_case_id", "ix_memory_vectors_tenant_model_id"]
        await downgrade_engine(engine, "0006")
        await upgrade_engine(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM memory_cases"))).scalar() == 3
    finally:
        await engine.dispose()


async def test_the_indexer_position_restarts_at_the_beginning_of_the_audit_chain(tmp_path: Path) -> None:
    """0008: the indexer's keyset position on `updated_at` (which skipped late commits) becomes an audit
    seq, from the start of the chain: what the old position skipped is found again."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'seq.db'}")
    try:
        await upgrade_engine(engine, "0007")
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO tenants (tenant_id, name, created_at, settings) VALUES "
                                    "('t1', 't', '2026-01-01', '{}')"))
            await conn.execute(text("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ('t1', 42, 'h')"))
            await conn.execute(text("INSERT INTO memory_tenants (tenant_id, scanned_at, scanned_id, embedded_upto, "
                                    "updated_at) VALUES ('t1', '2026-01-01', 'E-9', 7, '2026-01-01')"))
        await upgrade_engine(engine)
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM memory_tenants"))).mappings().one()
        assert row["scanned_seq"] == 0 and row["embedded_upto"] == 7 and "scanned_at" not in row
        await downgrade_engine(engine, "0007")
        await upgrade_engine(engine)
    finally:
        await engine.dispose()


async def test_the_rendering_digests_go_and_come_back_without_losing_rows_or_autoincrement(tmp_path: Path) -> None:
    """0010 adds `memory_cases.rendering` and `memory_tenants.rendered_with`, 0011 `memory_cases.recency`,
    0012 `memory_tenants.rerender_for` and `rerender_after`; down and up again keeps the rows (at NULL: the
    indexer checks them once, each case's place is its id, no re-rendering under way)
    and AUTOINCREMENT (a batch copy of the table would drop it, and a deleted latest id would be handed out
    again)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    case = ("INSERT INTO memory_cases (tenant_id, exception_id, exception_type, source_system, status, entities, "
            "body, received_at, indexed_at) VALUES ('t1', :e, 'T', 's', 'OPEN', '{}', 'b', '2026-01-01', "
            "'2026-01-01')")
    try:
        await upgrade_engine(engine)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO tenants (tenant_id, name, created_at, settings) VALUES ('t1', 't', "
                                    "'2026-01-01', '{}')"))
            for e in ("E-1", "E-2", "E-3"):
                await conn.execute(text(case), {"e": e})
            await conn.execute(text("INSERT INTO memory_tenants (tenant_id, embedded_upto, updated_at, "
                                    "rendered_with) VALUES ('t1', 0, '2026-01-01', 'x')"))
        await downgrade_engine(engine, "0009")
        async with engine.begin() as conn:
            sql = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'memory_cases'"))).scalar()
            assert "AUTOINCREMENT" in sql and "rendering" not in sql and "recency" not in sql
            tenants_sql = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'memory_tenants'"))
                           ).scalar()
            assert "rendered_with" not in tenants_sql and "rerender_" not in tenants_sql
            await conn.execute(text("DELETE FROM memory_cases WHERE exception_id = 'E-3'"))
            await conn.execute(text(case), {"e": "E-3"})
            ids = (await conn.execute(text("SELECT id FROM memory_cases ORDER BY id"))).scalars().all()
            assert ids == [1, 2, 4]
        await upgrade_engine(engine)
        async with engine.connect() as conn:
            nulls = "SELECT count(*) FROM memory_cases WHERE rendering IS NULL AND recency IS NULL"
            assert (await conn.execute(text(nulls))).scalar() == 3
            walk = "SELECT rerender_for, rerender_after FROM memory_tenants"
            assert (await conn.execute(text(walk))).all() == [(None, None)]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_rendering_digests_go_and_come_back_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    columns = ("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
               "AND table_name IN ('memory_cases', 'memory_tenants') "
               "AND column_name IN ('rendering', 'rendered_with', 'recency', 'rerender_for', 'rerender_after')")
    try:
        await upgrade_engine(engine)
        await downgrade_engine(engine, "0009")
        async with engine.connect() as conn:
            assert (await conn.execute(text(columns))).scalars().all() == []
    finally:
        await upgrade_engine(engine)  # (the session's database: other tests use it next)
        async with engine.connect() as conn:
            assert sorted((await conn.execute(text(columns))).scalars().all()) == [
                "recency", "rendered_with", "rendering", "rerender_after", "rerender_for"]
        await engine.dispose()
