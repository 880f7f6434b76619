"""Planner statistics: the store analyzes the tables the pipeline grows, on PostgreSQL, as they grow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from store_builders import make_write

from breakdesk.store import Store
from breakdesk.store.planner import analyze_due, analyze_statement
from breakdesk.store.tables import exceptions


def test_due_after_min_rows_then_after_half_the_table_again() -> None:
    assert not analyze_due(999, 0, 1_000, 0.5)
    assert analyze_due(1_000, 0, 1_000, 0.5)
    assert not analyze_due(4_999, 10_000, 1_000, 0.5)  # a 10k table waits for 5k more rows
    assert analyze_due(5_000, 10_000, 1_000, 0.5)


def test_statement_covers_key_and_index_columns_not_documents() -> None:
    stmt = analyze_statement((exceptions,))
    cols = stmt.removeprefix("ANALYZE exceptions (").removesuffix(")").split(", ")
    assert {"tenant_id", "exception_id", "fingerprint", "idempotency_key", "status", "received_at"} <= set(cols)
    assert "record" not in cols and "summary" not in cols


@pytest.mark.postgres
async def test_store_analyzes_once_enough_exceptions_were_written(pg_url: str) -> None:
    store = await Store.open(pg_url)
    try:
        planner = store._planner
        assert planner is not None
        planner.min_rows, planner.growth = 5, 1_000.0  # due after 5 rows, then only after a far larger table
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        await store.create_tenant(tenant, "planner")
        before = datetime.now(UTC)
        await store.write_batch(tenant, [make_write(tenant, f"P-{i}", i) for i in range(3)])
        assert planner.runs == 0
        await store.write_batch(tenant, [make_write(tenant, f"P-{i}", i) for i in range(3, 6)])
        assert planner.runs == 1
        async with store.engine.connect() as conn:
            analyzed = (await conn.execute(text(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'exceptions'"
            ))).scalar()
        assert analyzed is not None and analyzed >= before
        await store.write_batch(tenant, [make_write(tenant, f"P-{i}", i) for i in range(6, 12)])
        assert planner.runs == 1  # 6 more rows are below 1,000 times the table's rows
    finally:
        await store.close()


async def test_sqlite_store_has_no_planner_task(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/p.db")
    try:
        assert store._planner is None  # SQLite plans without statistics unless ANALYZE was ever run
    finally:
        await store.close()
