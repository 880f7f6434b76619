"""Execution state: an exception's tool-call journal and the tenant's circuit breakers.

The journal is the durable record execution resumes from (one row per step attempt and compensation), so
an operator sees exactly what was sent, what came back and why a step stopped; arguments are stored
redacted. Breakers are per tenant + tool and live in this process (each worker has its own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from breakdesk.api.auth import Principal
from breakdesk.api.deps import context, not_found, require
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES
from breakdesk.api.schemas import BreakerList, BreakerOut, ExecutionJournal, ExecutionRecordOut

router = APIRouter(prefix="/v1/tenants/{tenantId}", tags=["execution"], responses=COMMON_PROBLEM_RESPONSES)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
ExceptionPath = Annotated[str, Path(alias="exceptionId", min_length=1, max_length=200)]


@router.get(
    "/exceptions/{exceptionId}/executions",
    response_model=ExecutionJournal,
    summary="The exception's tool-call journal: every step attempt, compensation and its outcome",
)
async def get_executions(
    request: Request,
    tenant_id: TenantPath,
    exception_id: ExceptionPath,
    principal: Annotated[Principal, Depends(require("exceptions.read"))],
) -> ExecutionJournal:
    ctx = context(request)
    row = await ctx.store.get_exception(tenant_id, exception_id)
    if row is None:
        raise not_found("exception")
    records = await ctx.store.execution_records(tenant_id, exception_id)
    return ExecutionJournal(
        exception_id=exception_id,
        status=row["status"],
        items=[
            ExecutionRecordOut(
                step_index=r.step_index, step_id=r.step_id, phase=r.phase, attempt=r.attempt, tool=r.tool,
                status=r.status, final=r.final, idempotency_key=r.idempotency_key, args=r.args, output=r.output,
                status_code=r.status_code, latency_ms=r.latency_ms, error=r.error, started_at=r.started_at,
                finished_at=r.finished_at,
            )
            for r in records
        ],
    )


@router.get("/tools/breakers", response_model=BreakerList, summary="Circuit breakers of the tenant's tools")
async def get_breakers(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("tools.read"))],
) -> BreakerList:
    ctx = context(request)
    states = ctx.executor.breaker_states(tenant_id)
    return BreakerList(
        items=[
            BreakerOut(tool=s.tool, state=s.state, failures=s.failures, opened_at=s.opened_at,
                       retry_after_seconds=s.retry_after_s)
            for s in sorted(states.values(), key=lambda s: s.tool)
        ]
    )
