"""The worker's maintenance loop: expire approvals whose TTL ran out, resume runs nobody is driving.

Time comes from an injected clock and each `tick` does one pass, so tests drive it with a fake clock and no
sleeps; `run` repeats ticks until its stop event is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from breakdesk.approvals.service import ApprovalService
from breakdesk.pipeline.execution import ExecutionOutcome, ExecutionService
from breakdesk.pipeline.orchestrator import NoActivePacks
from breakdesk.store.approvals import Approval

log = structlog.get_logger("breakdesk.scheduler")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickReport:
    expired: list[Approval] = field(default_factory=list)
    resumed: list[ExecutionOutcome] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        store: Any,
        approvals: ApprovalService,
        execution: ExecutionService | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
        stalled_after: timedelta = timedelta(minutes=2),
        interval: float = 15.0,
        tenants: Collection[str] | None = None,
    ) -> None:
        """`tenants` limits the loop to some tenants (a worker per shard); None means every tenant."""
        self.store = store
        self.approvals = approvals
        self.execution = execution
        self.clock = clock
        self.stalled_after = stalled_after
        self.interval = interval
        self.tenants = None if tenants is None else frozenset(tenants)

    async def tick(self) -> TickReport:
        """One pass: expire due approvals (all tenants), then resume stalled executions per tenant."""
        now = self.clock()
        report = TickReport(expired=await self.approvals.expire_due(now, tenants=self.tenants))
        if self.execution is not None:
            for tenant in await self.store.list_tenants():
                if self.tenants is not None and tenant.tenant_id not in self.tenants:
                    continue
                try:
                    packs = await self.execution.packs_for(tenant.tenant_id)
                except NoActivePacks:
                    continue
                if packs.tenant.spec.dryRun:
                    continue  # nothing of a dryRun tenant is ever executed
                ids = await self.store.stalled_executions(tenant.tenant_id, now - self.stalled_after)
                if ids:
                    report.resumed.extend(await self.execution.run_many(tenant.tenant_id, ids))
        if report.expired or report.resumed:
            log.info("scheduler.tick", expired=len(report.expired), resumed=len(report.resumed))
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; a failing tick is logged, not fatal."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the loop must outlive a database hiccup
                log.warning("scheduler.tick_failed", error=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                continue
