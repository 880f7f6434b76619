"""API test fixtures: the real app (create_app) over a real store on SQLite and PostgreSQL, driven in-process
through httpx's ASGI transport; tenants, packs and credentials are created through the real code paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from breakdesk.api import ApiSettings, create_app
from breakdesk.api.auth import create_api_key
from breakdesk.api.deps import ApiContext
from breakdesk.api.rbac import TENANT_ROLES, Role
from breakdesk.api.worker import IntakeWorker
from breakdesk.catalog import Catalog
from breakdesk.store import Store

DATA = Path(__file__).resolve().parent.parent / "data" / "packs"


def mini_domain() -> dict[str, Any]:
    data = yaml.safe_load((DATA / "mini-domain.yaml").read_text())
    assert isinstance(data, dict)
    return data


def mini_policy(tenant_id: str) -> dict[str, Any]:
    data = yaml.safe_load((DATA / "mini-tenant.yaml").read_text())
    assert isinstance(data, dict)
    data["tenantId"] = tenant_id
    return data


def break_item(order: str, amount: float = 50, **extra: Any) -> dict[str, Any]:
    """An exception the mini pack classifies as BREAK, fingerprinted by its order id."""
    return {"exceptionType": "BREAK", "sourceSystem": "ledger", "rawPayload": {"orderId": order, "amount": amount}, **extra}


async def mini_tenant(store: Store, prefix: str) -> tuple[str, str]:
    """A fresh tenant with the mini packs active and an operator key: (tenant id, key), for live-server tests."""
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await store.create_tenant(tenant_id)
    cat = Catalog(store)
    await cat.publish(tenant_id, mini_domain(), "d.yaml", "tests", activate=True)
    await cat.publish(tenant_id, mini_policy(tenant_id), "p.yaml", "tests", activate=True)
    _, key = await create_api_key(store, tenant_id, Role.OPERATOR, "intake", "tests")
    return tenant_id, key


def api_settings(**overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "access_log": False,
        "worker_enabled": False,
        # Plans stay plans unless a test runs tools against its own tool server (tests/api/test_approvals_api.py):
        # the mini pack's tool URLs point nowhere.
        "execution_enabled": False,
        "auth_failure_burst": 10_000,
        "auth_failure_rps": 1000.0,
        "rate_limit_rps": 10_000.0,
        "rate_limit_burst": 10_000,
        "log_level": "warning",
    }
    values.update(overrides)
    return ApiSettings(**values)


@dataclass
class Tenant:
    tenant_id: str
    keys: dict[str, str] = field(default_factory=dict)  # role label -> full API key

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    store: Store
    platform_key: str

    @property
    def ctx(self) -> ApiContext:
        ctx = self.app.state.ctx
        assert isinstance(ctx, ApiContext)
        return ctx

    @property
    def platform(self) -> dict[str, str]:
        return {"X-API-Key": self.platform_key}

    async def tenant(self, *, packs: bool = True, roles: tuple[Role, ...] = TENANT_ROLES) -> Tenant:
        """A fresh tenant with one key per role and (optionally) the mini packs active."""
        tenant_id = f"t-{uuid.uuid4().hex[:12]}"
        await self.store.create_tenant(tenant_id, "Test tenant")
        t = Tenant(tenant_id)
        for role in roles:
            _, token = await create_api_key(self.store, tenant_id, role, f"{role.label} key", "tests")
            t.keys[role.label] = token
        if packs:
            cat = Catalog(self.store)
            await cat.publish(tenant_id, mini_domain(), "mini-domain.yaml", "tests", activate=True)
            await cat.publish(tenant_id, mini_policy(tenant_id), "mini-tenant.yaml", "tests", activate=True)
        return t

    async def drain(self) -> int:
        """Run the intake worker until the queue is empty (tests that do not start the background worker)."""
        worker = IntakeWorker(self.store, self.ctx.orchestrator, self.ctx.settings, self.ctx.metrics)
        return await worker.drain()


async def open_api(url: str, settings: ApiSettings) -> AsyncIterator[Api]:
    store = await Store.open(url)
    try:
        _, platform_key = await create_api_key(store, None, Role.PLATFORM_ADMIN, "platform", "tests")
        app = create_app(settings, store)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
                yield Api(app, client, store, platform_key)
    finally:
        await store.close()


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async for a in open_api(db_url, api_settings()):
        yield a


def _api_factory(url: str) -> Callable[..., Any]:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Api]:
        gen = open_api(url, api_settings(**overrides))
        a = await gen.__anext__()
        try:
            yield a
        finally:
            await gen.aclose()

    return factory


@pytest.fixture
def make_api(db_url: str) -> Callable[..., Any]:
    """An API with custom settings: `async with make_api(rate_limit_rps=1) as api: …`."""
    return _api_factory(db_url)


@pytest.fixture
def make_own_api(own_db_url: str) -> Callable[..., Any]:
    """`make_api` over a database of its own (`own_db_url`)."""
    return _api_factory(own_db_url)


AsyncFactory = Callable[..., Awaitable[Any]]
