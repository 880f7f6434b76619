"""The one place where requests are authorized: `require(permission)`.

Each route declares its permission with `Depends(require("…"))`. The dependency, in this order:
1. authenticates (401, audited);
2. scopes to the path's tenant: a credential of another tenant gets the very same 404 as a tenant that does
   not exist, so nobody learns which tenants exist (platform admins reach every existing tenant);
3. applies the tenant's rate limit (429 with Retry-After);
4. checks the role against the permission matrix (403).
It runs before the body is read or validated, so nothing about a request is looked at before its caller is
known to be entitled to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from breakdesk.api.auth import Authenticator, FailureLog, Principal
from breakdesk.api.limits import RateLimiter, TenantCache, TenantLimits, effective_limits
from breakdesk.api.observe import ApiMetrics
from breakdesk.api.problems import ApiProblem
from breakdesk.api.rbac import PERMISSIONS, allowed, min_role
from breakdesk.api.settings import ApiSettings
from breakdesk.catalog import Catalog
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store, Tenant

#: Declared for OpenAPI (so clients and Schemathesis know the schemes); the headers are read by `Authenticator`.
API_KEY_SCHEME = APIKeyHeader(name="X-API-Key", auto_error=False, description="`bdk_<keyId>_<secret>`")
BEARER_SCHEME = HTTPBearer(auto_error=False, bearerFormat="JWT", description="HS256, RS256 or ES256 JWT")


@dataclass
class ApiContext:
    """Everything a request handler needs, built once per app in its lifespan."""

    settings: ApiSettings
    store: Store
    metrics: ApiMetrics
    auth: Authenticator
    failures: FailureLog
    tenants: TenantCache
    limiter: RateLimiter
    orchestrator: Orchestrator
    catalog: Catalog
    accept: Any = None  # breakdesk.api.intake.AcceptQueue: group commit of accepted submissions
    #: breakdesk.api.worker.Background: executor, execution and approval services, intake worker, scheduler
    background: Any = None
    inline_queue_ids: set[int] = field(default_factory=set)

    @property
    def worker(self) -> Any:
        """The intake worker (None when disabled)."""
        return self.background.worker

    @property
    def execution(self) -> Any:
        """The execution service (None: plans stay plans)."""
        return self.background.execution

    @property
    def approvals(self) -> Any:
        return self.background.approvals

    @property
    def executor(self) -> Any:
        """The tool executor (breaker states)."""
        return self.background.executor

    @property
    def runs(self) -> Any:
        """Executions resumed by approvals, run after the response."""
        return self.background.runs

    async def limits_for(self, tenant_id: str | None) -> TenantLimits:
        tenant = await self.tenants.get(tenant_id) if tenant_id is not None else None
        return effective_limits(self.settings, tenant)


def context(request: Request) -> ApiContext:
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise ApiProblem("service-unavailable", "the server is starting or stopping", headers={"Retry-After": "1"})
    assert isinstance(ctx, ApiContext)
    return ctx


def not_found(what: str = "resource") -> ApiProblem:
    return ApiProblem("not-found", f"no such {what}")


async def scope_to_tenant(ctx: ApiContext, principal: Principal, tenant_id: str) -> Tenant:
    """The tenant `principal` may act on, or the same 404 whether it is foreign or does not exist."""
    if not principal.can_access(tenant_id):
        raise not_found("tenant")
    tenant = await ctx.tenants.get(tenant_id)
    if tenant is None:
        raise not_found("tenant")
    return tenant


async def rate_limit(ctx: ApiContext, principal: Principal) -> None:
    """One bucket per tenant; platform admins share one bucket per credential."""
    limits = await ctx.limits_for(principal.tenant_id)
    key = f"tenant:{principal.tenant_id}" if principal.tenant_id is not None else f"platform:{principal.subject}"
    wait = ctx.limiter.take(key, limits.requests_per_second, limits.burst)
    if wait is not None:
        ctx.metrics.rate_limited.labels("tenant").inc()
        raise ApiProblem(
            "rate-limited",
            f"rate limit of {limits.requests_per_second:g} requests/s (burst {limits.burst}) exceeded",
            headers={"Retry-After": str(wait)},
        )


def authorize(principal: Principal, permission: str) -> None:
    if not allowed(principal.role, permission):
        raise ApiProblem(
            "forbidden",
            f"role {principal.role.label} lacks permission {permission} (needs {min_role(permission).label})",
        )


class Require:
    """The dependency behind `require(permission)`; `permission` is public so tests can audit every route."""

    def __init__(self, permission: str) -> None:
        if permission not in PERMISSIONS:
            raise KeyError(f"unknown permission {permission!r}")
        self.permission = permission

    async def __call__(
        self,
        request: Request,
        _api_key: str | None = Security(API_KEY_SCHEME),
        _bearer: Any = Security(BEARER_SCHEME),
    ) -> Principal:
        ctx = context(request)
        principal = await ctx.auth.authenticate(request)
        request.state.actor = principal.actor
        tenant_id = request.path_params.get("tenantId")
        if isinstance(tenant_id, str):
            await scope_to_tenant(ctx, principal, tenant_id)
            request.state.tenant = tenant_id
        elif principal.tenant_id is not None:
            request.state.tenant = principal.tenant_id
        await rate_limit(ctx, principal)
        authorize(principal, self.permission)
        return principal


_REQUIRES: dict[str, Require] = {}


def require(permission: str) -> Require:
    """The shared `Require` for a permission (one instance each, so FastAPI caches it per request)."""
    dep = _REQUIRES.get(permission)
    if dep is None:
        dep = _REQUIRES[permission] = Require(permission)
    return dep
