"""Health, readiness, Prometheus metrics and the what-if run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from breakdesk.api.auth import Principal
from breakdesk.api.body import json_body, json_model
from breakdesk.api.deps import context, scope_to_tenant
from breakdesk.api.deps import require as require_permission
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES, ApiProblem, problem_openapi
from breakdesk.api.schemas import Health, Ready, RunRequest, RunResult
from breakdesk.api.whatif import what_if

router = APIRouter()

RUN_BODY_LIMIT = 5 * 1024 * 1024


@router.get("/healthz", response_model=Health, tags=["system"], summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    tags=["system"],
    summary="Readiness: database reachable, migrations current, worker running",
    responses={503: {"model": Ready, "description": "Not ready."}},
)
async def readyz(request: Request, response: Response) -> Ready:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        response.status_code = 503
        return Ready(status="not-ready", database="unreachable-or-outdated", worker="stopped")
    db_ok = await ctx.store.migrations_current()
    worker = "disabled" if ctx.worker is None else "running" if ctx.worker.running else "stopped"
    ready = db_ok and worker != "stopped"
    if not ready:
        response.status_code = 503
    return Ready(
        status="ready" if ready else "not-ready",
        database="ok" if db_ok else "unreachable-or-outdated",
        worker=worker,
    )


@router.get(
    "/metrics",
    tags=["system"],
    summary="Prometheus metrics of this process (no tenant data)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Metrics."},
        404: problem_openapi("Metrics are disabled on this server."),
    },
)
async def prometheus(request: Request) -> Response:
    ctx = context(request)
    if not ctx.settings.metrics_enabled:
        raise ApiProblem("not-found", "metrics are disabled on this server (BREAKDESK_METRICS_ENABLED=false)")
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/v1/run",
    response_model=RunResult,
    tags=["run"],
    summary="What-if: decide exceptions with named, published pack versions; writes and activates nothing",
    description=(
        "Packs are referenced by name and version as published for the tenant — never by file or path. "
        "Each item is decided on its own (recurrence counts come from the store)."
    ),
    responses=COMMON_PROBLEM_RESPONSES,
    openapi_extra=json_body(RunRequest),
)
async def run(request: Request, principal: Annotated[Principal, Depends(require_permission("run.what-if"))]) -> RunResult:
    ctx = context(request)
    body = await json_model(request, RunRequest, RUN_BODY_LIMIT)
    tenant_id = body.tenant_id or principal.tenant_id
    if tenant_id is None:
        raise ApiProblem(
            "validation-error",
            "a platform credential must name the tenant",
            errors=[{"in": "body", "path": "$.tenantId", "message": "required for platform credentials"}],
        )
    await scope_to_tenant(ctx, principal, tenant_id)
    domain_ref, policy_ref, items = await what_if(
        ctx.store, tenant_id, body.domain_pack.name, body.domain_pack.version, body.tenant_policy.version, body.exceptions
    )
    return RunResult(tenant_id=tenant_id, domain_pack=domain_ref, tenant_policy=policy_ref, items=items)
