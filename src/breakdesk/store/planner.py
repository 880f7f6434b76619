"""Planner statistics for the tables the pipeline grows quickly (PostgreSQL only).

Why: PostgreSQL plans from the statistics ANALYZE gathers. Autovacuum gathers them only after its naptime
(a minute by default) and never when it is off, as on the CI machine. Without them a table that grew from
empty to 20,000 exceptions is planned as if it held a few dozen rows: the pipeline's batch look-ups by primary
key became scans of the tenant's whole table (measured: 72-108 ms per 500 keys at 20,000 rows, growing with the
table), so throughput fell the longer a run went. The store therefore analyzes those tables itself once the
rows written since the last ANALYZE reach half of what the table held then (at least `min_rows`): a
logarithmic number of times as a table grows, a few tens of milliseconds each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy import Table, UniqueConstraint, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from breakdesk.store.tables import (
    audit_entries,
    exception_events,
    exceptions,
    fingerprints,
    idempotency_keys,
    intake_queue,
    memory_cases,
)

log = logging.getLogger(__name__)

#: Tables that grow with every processed exception.
GROWING_TABLES: tuple[Table, ...] = (
    exceptions, exception_events, audit_entries, idempotency_keys, fingerprints, intake_queue, memory_cases,
)


def analyze_statement(tables: Sequence[Table] = GROWING_TABLES) -> str:
    """One ANALYZE over the columns the tables' keys and indexes cover: what the planner estimates from.
    Leaving out the JSON documents (records, decisions, payloads) keeps it to tens of milliseconds instead
    of the ~600 ms a whole-row ANALYZE of 20,000 exceptions' tables measured."""
    parts = []
    for table in tables:
        cols = {c.name for c in table.primary_key.columns}
        for idx in table.indexes:
            cols.update(c.name for c in idx.columns)
        for cons in table.constraints:
            if isinstance(cons, UniqueConstraint):
                cols.update(c.name for c in cons.columns)
        ordered = [c.name for c in table.columns if c.name in cols]
        parts.append(f"{table.name} ({', '.join(ordered)})")
    return "ANALYZE " + ", ".join(parts)


def analyze_due(written: int, baseline: float, min_rows: int, growth: float) -> bool:
    """Whether `written` rows since the last ANALYZE, over a table that then held `baseline`, call for one."""
    return written >= max(min_rows, baseline * growth)


class PlannerStats:
    """Counts exceptions written through this store and runs ANALYZE when `analyze_due` says so."""

    def __init__(self, min_rows: int = 1_000, growth: float = 0.5) -> None:
        self.min_rows = min_rows
        self.growth = growth
        self.runs = 0
        self._baseline: float | None = None  # exceptions rows at the last ANALYZE; None until first read
        self._written = 0
        self._lock = asyncio.Lock()

    async def wrote(self, engine: AsyncEngine, rows: int) -> None:
        """Called after a committed write of `rows` exceptions. Never raises: the write has already
        committed, and a failed ANALYZE (say, a role that does not own the tables) only leaves plans as
        they were, so it is logged, not reported to the writer."""
        self._written += rows
        if self._baseline is not None and not analyze_due(self._written, self._baseline, self.min_rows, self.growth):
            return
        if self._lock.locked():  # another writer of this store is analyzing right now
            return
        async with self._lock:
            try:
                await self._analyze_if_due(engine)
            except Exception as exc:
                log.warning("ANALYZE of the pipeline tables failed (query plans may degrade): %s", exc)
                self._written = 0

    async def _analyze_if_due(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            if self._baseline is None:
                self._baseline = await _rows(conn)
                if not analyze_due(self._written, self._baseline, self.min_rows, self.growth):
                    return
            await conn.execute(text(analyze_statement()))
            self._baseline = await _rows(conn)
            await conn.commit()
        self._written = 0
        self.runs += 1


async def _rows(conn: AsyncConnection) -> float:
    """The planner's row estimate for `exceptions` (0 when never analyzed: PostgreSQL 14+ says -1)."""
    value = (await conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'exceptions'::regclass"))).scalar()
    return max(float(value or 0), 0.0)
