"""Store fixtures: an open store on each database, and fresh tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from breakdesk.store import Store


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def new_tenant_id() -> Callable[[], str]:
    """Unique tenant ids: tests on the shared PostgreSQL database never see each other's rows."""
    return lambda: f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def tenant(store: Store, new_tenant_id: Callable[[], str]) -> str:
    tenant_id = new_tenant_id()
    await store.create_tenant(tenant_id, "Tenant A")
    return tenant_id
