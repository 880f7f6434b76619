"""Tenants, their limits, API keys, KPIs, audit chain and failed authentications; plus `whoami`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from breakdesk.api import convert
from breakdesk.api.auth import Principal, create_api_key
from breakdesk.api.body import json_body, json_model
from breakdesk.api.deps import context, not_found, require
from breakdesk.api.limits import LIMITS_KEY, effective_limits
from breakdesk.api.problems import COMMON_PROBLEM_RESPONSES, problem_openapi
from breakdesk.api.rbac import PERMISSIONS, Role, allowed
from breakdesk.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    AuditPage,
    AuditVerification,
    AuthFailurePage,
    LimitsIn,
    LimitsOut,
    MetricsOut,
    QueryDateTime,
    QueueCounts,
    TenantCreate,
    TenantList,
    TenantOut,
    WhoAmI,
)
from breakdesk.api.settings import ApiSettings
from breakdesk.store import Tenant
from breakdesk.store.apikeys import AuthFailure

router = APIRouter(tags=["tenants"], responses=COMMON_PROBLEM_RESPONSES)

TenantPath = Annotated[str, Path(alias="tenantId", min_length=1, max_length=100)]
SMALL_BODY = 64 * 1024


def _tenant_out(tenant: Tenant, settings: ApiSettings) -> TenantOut:
    limits = effective_limits(settings, tenant)
    return TenantOut(
        tenant_id=tenant.tenant_id,
        name=tenant.name,
        created_at=tenant.created_at,
        limits=LimitsOut(
            requests_per_second=limits.requests_per_second,
            burst=limits.burst,
            max_body_bytes=limits.max_body_bytes,
            max_batch_items=limits.max_batch_items,
        ),
    )


def _limits_setting(limits: LimitsIn) -> dict[str, float | int] | None:
    raw = limits.model_dump(by_alias=True, exclude_none=True)
    return raw or None



@router.get("/v1/whoami", response_model=WhoAmI, summary="The calling credential")
async def whoami(principal: Annotated[Principal, Depends(require("self.read"))]) -> WhoAmI:
    return WhoAmI(
        kind=principal.kind,
        subject=principal.subject,
        name=principal.name,
        tenant_id=principal.tenant_id,
        role=principal.role.label,
        permissions=[p for p in PERMISSIONS if allowed(principal.role, p)],
    )


# ---------------------------------------------------------------------------------------------- tenants


@router.post(
    "/v1/tenants",
    status_code=201,
    response_model=TenantOut,
    summary="Create a tenant (platform admin)",
    responses={409: problem_openapi("The tenant already exists.")},
    openapi_extra=json_body(TenantCreate),
)
async def create_tenant(
    request: Request, principal: Annotated[Principal, Depends(require("tenants.manage"))]
) -> TenantOut:
    ctx = context(request)
    body = await json_model(request, TenantCreate, SMALL_BODY)
    settings = {}
    if body.limits is not None and (limits := _limits_setting(body.limits)) is not None:
        settings[LIMITS_KEY] = limits
    tenant = await ctx.store.create_tenant(body.tenant_id, body.name, settings, by=principal.actor)
    ctx.tenants.invalidate(tenant.tenant_id)
    return _tenant_out(tenant, ctx.settings)


@router.get("/v1/tenants", response_model=TenantList, summary="All tenants (platform admin)")
async def list_tenants(request: Request, principal: Annotated[Principal, Depends(require("tenants.manage"))]) -> TenantList:
    ctx = context(request)
    return TenantList(items=[_tenant_out(t, ctx.settings) for t in await ctx.store.list_tenants()])


@router.get("/v1/tenants/{tenantId}", response_model=TenantOut, summary="The tenant and its effective limits")
async def get_tenant(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("tenant.read"))]
) -> TenantOut:
    ctx = context(request)
    tenant = await ctx.store.get_tenant(tenant_id)
    if tenant is None:
        raise not_found("tenant")
    return _tenant_out(tenant, ctx.settings)


@router.put(
    "/v1/tenants/{tenantId}/limits",
    response_model=TenantOut,
    summary="Set the tenant's rate and size limits (platform admin); null restores a default",
    openapi_extra=json_body(LimitsIn),
)
async def set_limits(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("tenants.manage"))]
) -> TenantOut:
    ctx = context(request)
    body = await json_model(request, LimitsIn, SMALL_BODY)
    tenant = await ctx.store.update_tenant_settings(tenant_id, {LIMITS_KEY: _limits_setting(body)}, principal.actor)
    ctx.tenants.invalidate(tenant_id)
    return _tenant_out(tenant, ctx.settings)


@router.get("/v1/tenants/{tenantId}/metrics", response_model=MetricsOut, summary="KPIs computed from the store")
async def metrics(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("metrics.read"))],
    since: Annotated[QueryDateTime | None, Query(description="Exceptions received at or after (ISO 8601).")] = None,
    until: Annotated[QueryDateTime | None, Query(description="Exceptions received before (ISO 8601).")] = None,
) -> MetricsOut:
    ctx = context(request)
    m = await ctx.store.exception_metrics(tenant_id, since, until)
    queue = await ctx.store.queue_counts(tenant_id)
    return MetricsOut(
        since=since,
        until=until,
        total=m.total,
        auto_resolved=m.auto_resolved,
        auto_resolution_rate=m.auto_resolution_rate,
        resolved=m.resolved,
        mttr_seconds=m.mttr_seconds,
        triaged=m.triaged,
        mean_time_to_triage_seconds=m.mean_time_to_triage_seconds,
        overridden=m.overridden,
        override_rate=m.override_rate,
        recurring=m.recurring,
        recurrence_rate=m.recurrence_rate,
        recurrences=m.recurrences,
        approval_required=m.approval_required,
        by_status=m.by_status,
        by_actionability=m.by_actionability,
        by_severity=m.by_severity,
        by_type=m.by_type,
        queue=QueueCounts(pending=queue["PENDING"], done=queue["DONE"], rejected=queue["REJECTED"]),
    )


# --------------------------------------------------------------------------------------------- API keys


@router.post(
    "/v1/tenants/{tenantId}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key (the key is in this response only)",
    openapi_extra=json_body(ApiKeyCreate),
)
async def create_key(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("apikeys.manage"))]
) -> ApiKeyCreated:
    ctx = context(request)
    body = await json_model(request, ApiKeyCreate, SMALL_BODY)
    role = Role.parse(body.role)
    assert role is not None
    key, token = await create_api_key(ctx.store, tenant_id, role, body.name, principal.actor)
    return ApiKeyCreated(**convert.api_key(key).model_dump(), key=token)


@router.get("/v1/tenants/{tenantId}/api-keys", response_model=ApiKeyList, summary="The tenant's API keys (no secrets)")
async def list_keys(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("apikeys.manage"))]
) -> ApiKeyList:
    ctx = context(request)
    return ApiKeyList(items=[convert.api_key(k) for k in await ctx.store.list_api_keys(tenant_id)])


@router.delete(
    "/v1/tenants/{tenantId}/api-keys/{keyId}",
    response_model=ApiKeyOut,
    summary="Revoke an API key (takes effect at once here, within the key cache time elsewhere)",
)
async def revoke_key(
    request: Request,
    tenant_id: TenantPath,
    key_id: Annotated[str, Path(alias="keyId", min_length=1, max_length=32)],
    principal: Annotated[Principal, Depends(require("apikeys.manage"))],
) -> ApiKeyOut:
    ctx = context(request)
    key = await ctx.store.revoke_api_key(tenant_id, key_id, principal.actor)
    ctx.auth.forget(key_id)
    return convert.api_key(key)


# ---------------------------------------------------------------------------------------- audit, failures


@router.get("/v1/tenants/{tenantId}/audit", response_model=AuditPage, summary="The tenant's hash-chained audit log")
async def audit(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("audit.read"))],
    subject: Annotated[str | None, Query(max_length=300)] = None,
    after_seq: Annotated[int, Query(alias="afterSeq", ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    ctx = context(request)
    entries = await ctx.store.get_audit(tenant_id, subject, limit + 1, after_seq=after_seq)
    more = len(entries) > limit
    entries = entries[:limit]
    return AuditPage(
        items=[convert.audit_entry(e) for e in entries], next_after_seq=entries[-1].seq if more and entries else None
    )


@router.get(
    "/v1/tenants/{tenantId}/audit/verify", response_model=AuditVerification, summary="Recompute the audit hash chain"
)
async def verify_audit(
    request: Request, tenant_id: TenantPath, principal: Annotated[Principal, Depends(require("audit.read"))]
) -> AuditVerification:
    ctx = context(request)
    head_seq, head_hash = await ctx.store.audit_head(tenant_id)
    result = await ctx.store.verify_audit(tenant_id)
    return AuditVerification(
        ok=result.ok,
        checked=result.checked,
        first_broken_seq=result.first_broken_seq,
        reason=result.reason,
        head_seq=head_seq,
        head_hash=head_hash,
    )


@router.get(
    "/v1/tenants/{tenantId}/auth-failures",
    response_model=AuthFailurePage,
    summary="Failed authentications against this tenant (newest first)",
)
async def tenant_auth_failures(
    request: Request,
    tenant_id: TenantPath,
    principal: Annotated[Principal, Depends(require("audit.read"))],
    before_id: Annotated[int | None, Query(alias="beforeId", ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuthFailurePage:
    ctx = context(request)
    await ctx.failures.flush()
    rows = await ctx.store.list_auth_failures(tenant_id, limit=limit + 1, before_id=before_id)
    return _failure_page(rows, limit)


@router.get(
    "/v1/auth-failures",
    response_model=AuthFailurePage,
    tags=["platform"],
    summary="Failed authentications across all tenants (platform admin)",
)
async def all_auth_failures(
    request: Request,
    principal: Annotated[Principal, Depends(require("platform.audit"))],
    before_id: Annotated[int | None, Query(alias="beforeId", ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuthFailurePage:
    ctx = context(request)
    await ctx.failures.flush()
    rows = await ctx.store.list_auth_failures(None, limit=limit + 1, before_id=before_id, all_tenants=True)
    return _failure_page(rows, limit)


def _failure_page(rows: list[AuthFailure], limit: int) -> AuthFailurePage:
    more = len(rows) > limit
    rows = rows[:limit]
    return AuthFailurePage(items=[convert.auth_failure(r) for r in rows], next_before_id=rows[-1].id if more and rows else None)

