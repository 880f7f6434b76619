"""The FastAPI application factory.

`create_app(settings)` checks the configuration at once (a JWT setup without a usable key raises `ConfigError`
before any port is bound); the lifespan opens the store, wires the tool executor, execution and approval
services, starts the intake worker and the approval/resume scheduler and, on shutdown, lets the worker finish
its batch and running executions settle (bounded), and flushes the failed-authentication buffer. Logging is configured by the process
entry point (`breakdesk serve` calls `observe.configure_logging`), not here: an app factory must not rewire
process-wide logging under its host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter

from breakdesk.api.auth import Authenticator, FailureLog, JwtVerifier
from breakdesk.api.deps import ApiContext, Require
from breakdesk.api.intake import AcceptQueue
from breakdesk.api.limits import RateLimiter, TenantCache
from breakdesk.api.observe import ApiMetrics, ObserveMiddleware, get_logger
from breakdesk.api.problems import EXCEPTION_HANDLERS, Problem
from breakdesk.api.rbac import min_role
from breakdesk.api.routes import approvals, exceptions, executions, packs, similar, system, tenants
from breakdesk.api.schemas import (
    ActionRequest,
    ApiKeyCreate,
    ApproveRequest,
    LimitsIn,
    RejectRequest,
    RunRequest,
    Submission,
    TenantCreate,
)
from breakdesk.api.settings import ApiSettings
from breakdesk.api.worker import Background
from breakdesk.catalog import Catalog
from breakdesk.heap import tune_for_throughput
from breakdesk.memory.service import Memory
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store

#: Request bodies read by the handlers themselves (see api/body.py), described in the OpenAPI components.
BODY_SCHEMAS: dict[str, Any] = {
    "Submission": Submission,
    "ActionRequest": ActionRequest,
    "TenantCreate": TenantCreate,
    "LimitsIn": LimitsIn,
    "ApiKeyCreate": ApiKeyCreate,
    "RunRequest": RunRequest,
    "ApproveRequest": ApproveRequest,
    "RejectRequest": RejectRequest,
    "Problem": Problem,
}


def _version() -> str:
    try:
        return version("breakdesk")
    except PackageNotFoundError:
        return "0.0.0"


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of the app, with the full path (included routers resolved)."""
    return [c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def route_permission(route: APIRoute) -> str | None:
    """The permission a route requires (None: public), found on its dependency tree."""
    for dep in route.dependant.dependencies:
        if isinstance(dep.call, Require):
            return dep.call.permission
    return None


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, tp in BODY_SCHEMAS.items():
        body = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        for def_name, definition in body.pop("$defs", {}).items():
            components.setdefault(def_name, definition)
        components[name] = body
    for route in api_routes(app):
        permission = route_permission(route)
        if permission is None:
            continue
        for method in route.methods or ():
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is not None:
                op["x-permission"] = permission
                op["x-min-role"] = min_role(permission).label
    app.openapi_schema = schema
    return schema


async def open_store(settings: ApiSettings) -> Store:
    """The store with a connection pool sized for a server: SQLAlchemy's default (5 + 10 overflow) closes and
    reopens connections under concurrent requests, which costs far more than the queries themselves."""
    return await Store.open(
        settings.database_url,
        migrate=settings.auto_migrate,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )


def create_app(settings: ApiSettings | None = None, store: Store | None = None) -> FastAPI:
    """Build the app. With `store`, the caller owns it (tests); otherwise the lifespan opens and closes one."""
    settings = settings if settings is not None else ApiSettings.from_env()
    jwt_verifier = JwtVerifier(settings) if settings.jwt_active else None
    metrics = ApiMetrics()
    log = get_logger("breakdesk.api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        s = store if store is not None else await open_store(settings)
        failures = FailureLog(s, metrics)
        orchestrator = Orchestrator(s)
        ctx = ApiContext(
            settings=settings,
            store=s,
            metrics=metrics,
            auth=Authenticator(s, settings, metrics, failures, jwt_verifier),
            failures=failures,
            tenants=TenantCache(s, settings.tenant_cache_seconds),
            limiter=RateLimiter(),
            orchestrator=orchestrator,
            catalog=Catalog(s),
        )
        ctx.accept = AcceptQueue(s)
        background = ctx.background = Background(s, orchestrator, settings, metrics, ctx.inline_queue_ids)
        background.start()
        app.state.ctx = ctx
        if own_store:  # a server process; a caller that passes its store (tests, embedding) owns its heap
            tune_for_throughput()
        log.info("api.started", database=s.dialect, worker=settings.worker_enabled, jwt=jwt_verifier is not None)
        try:
            yield
        finally:
            app.state.ctx = None
            await ctx.accept.close()
            await background.stop()
            await failures.close()
            await ctx.auth.close()
            if own_store:
                Memory.close_shared(s)  # (the worker's search process, if it started one)
                await s.close()
            log.info("api.stopped")

    app = FastAPI(
        title="Breakdesk API",
        version=_version(),
        description=(
            "Multi-tenant exception desk. Authenticate with `X-API-Key: bdk_…` or `Authorization: Bearer <JWT>`. "
            "Every error is `application/problem+json` (RFC 9457) with a stable `type`. Each operation's "
            "`x-permission` names the permission it needs (see docs/security.md)."
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = None
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.include_router(system.router)
    app.include_router(tenants.router)
    app.include_router(exceptions.router)
    app.include_router(packs.router)
    app.include_router(approvals.router)
    app.include_router(executions.router)
    app.include_router(similar.router)
    app.add_middleware(
        ObserveMiddleware,
        metrics=metrics,
        max_request_bytes=settings.max_request_bytes,
        access_log=settings.access_log,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def routes_markdown(app: FastAPI) -> str:
    """Every authenticated route with its permission and lowest role, for docs/security.md."""
    rows = []
    for route in sorted(api_routes(app), key=lambda r: (r.path, sorted(r.methods or ()))):
        permission = route_permission(route)
        if permission is None:
            continue
        for method in sorted(route.methods or ()):
            rows.append(f"| `{method} {route.path}` | `{permission}` | {min_role(permission).label} |")
    return "\n".join(["| route | permission | lowest role |", "|---|---|---|", *rows])
