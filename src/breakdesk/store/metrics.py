"""Desk KPIs computed by SQL aggregates over the stored projections, never from in-process counters, so every
API process (and a restarted one) reports the same numbers for the same data.

Definitions (all over exceptions *received* in the optional window):
- auto-resolution rate: status RESOLVED without approval required / all exceptions;
- MTTR: mean of resolved_at - received_at over exceptions with a resolution time (resolved or closed);
- mean time to triage: mean of triaged_at - received_at over triaged exceptions;
- override rate: exceptions with at least one human severity override event / all exceptions;
- recurrence rate: exceptions that absorbed at least one recurrence / all exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from breakdesk.store._base import StoreBase
from breakdesk.store.tables import exception_events, exceptions, intake_queue

_X = exceptions.c
_E = exception_events.c

#: Event stage of a human severity override; a partial index covers exactly these events.
OVERRIDE_STAGE = "human.override"


@dataclass(frozen=True, slots=True)
class ExceptionMetrics:
    total: int
    auto_resolved: int
    resolved: int
    mttr_seconds: float | None
    triaged: int
    mean_time_to_triage_seconds: float | None
    overridden: int
    recurring: int
    recurrences: int
    approval_required: int
    by_status: dict[str, int] = field(default_factory=dict)
    by_actionability: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def _rate(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    @property
    def auto_resolution_rate(self) -> float:
        return self._rate(self.auto_resolved, self.total)

    @property
    def override_rate(self) -> float:
        return self._rate(self.overridden, self.total)

    @property
    def recurrence_rate(self) -> float:
        return self._rate(self.recurring, self.total)


class MetricsRepo(StoreBase):
    def _seconds_between(self, later: Any, earlier: Any) -> ColumnElement[Any]:
        if self._pg:
            return func.extract("epoch", later - earlier)
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0

    async def exception_metrics(
        self, tenant_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> ExceptionMetrics:
        """Counts, rates and mean durations over the tenant's exceptions received in [since, until)."""
        window: list[ColumnElement[bool]] = [_X.tenant_id == tenant_id]
        if since is not None:
            window.append(_X.received_at >= since)
        if until is not None:
            window.append(_X.received_at < until)
        one: ColumnElement[int] = literal_column("1")
        zero: ColumnElement[int] = literal_column("0")
        totals = select(
            func.count(),
            func.coalesce(
                func.sum(case(((_X.status == "RESOLVED") & (_X.approval_required.is_(False)), one), else_=zero)), 0
            ),
            func.count(_X.resolved_at),
            func.avg(cast(self._seconds_between(_X.resolved_at, _X.received_at), Float)),
            func.count(_X.triaged_at),
            func.avg(cast(self._seconds_between(_X.triaged_at, _X.received_at), Float)),
            func.coalesce(func.sum(case((_X.recurrence_count > 0, one), else_=zero)), 0),
            func.coalesce(func.sum(_X.recurrence_count), 0),
            func.coalesce(func.sum(case((_X.approval_required.is_(True), one), else_=zero)), 0),
        ).where(*window)
        overrides = select(func.count(func.distinct(_E.exception_id))).where(
            _E.tenant_id == tenant_id, _E.stage == literal_column(f"'{OVERRIDE_STAGE}'")
        )
        if since is not None or until is not None:
            overrides = overrides.where(_E.exception_id.in_(select(_X.exception_id).where(*window)))
        async with self._read() as conn:
            row = (await conn.execute(totals)).one()
            overridden = int((await conn.execute(overrides)).scalar_one() or 0)
            groups = {
                name: await _group(conn, column, window)
                for name, column in (
                    ("status", _X.status),
                    ("actionability", _X.actionability),
                    ("severity", _X.severity),
                    ("type", _X.exception_type),
                )
            }
        (total, auto, resolved, mttr, triaged, mttt, recurring, recurrences, approval) = row
        return ExceptionMetrics(
            total=int(total),
            auto_resolved=int(auto),
            resolved=int(resolved),
            mttr_seconds=float(mttr) if mttr is not None else None,
            triaged=int(triaged),
            mean_time_to_triage_seconds=float(mttt) if mttt is not None else None,
            overridden=overridden,
            recurring=int(recurring),
            recurrences=int(recurrences),
            approval_required=int(approval),
            by_status=groups["status"],
            by_actionability=groups["actionability"],
            by_severity=groups["severity"],
            by_type=groups["type"],
        )

    async def pending_intake(self, tenant_id: str | None) -> int:
        """Queue items waiting for the pipeline: one tenant's, or with None every tenant's (the platform-level
        Prometheus queue-depth gauge)."""
        stmt = select(func.count()).select_from(intake_queue).where(intake_queue.c.state == "PENDING")
        if tenant_id is not None:
            stmt = stmt.where(intake_queue.c.tenant_id == tenant_id)
        async with self._read() as conn:
            return int((await conn.execute(stmt)).scalar_one())


async def _group(conn: AsyncConnection, column: Any, window: list[ColumnElement[bool]]) -> dict[str, int]:
    stmt = select(column, func.count()).where(*window).group_by(column)
    rows = (await conn.execute(stmt)).all()
    # NULL (not decided yet, e.g. a failed stage) is reported as "NONE" so the counts still add up.
    return {("NONE" if key is None else str(key)): int(n) for key, n in rows}
