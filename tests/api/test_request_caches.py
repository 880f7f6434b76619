"""The per-request caches under load (verified API keys, tenants): concurrent misses share one lookup (one
store read, one argon2 check), an entry in use is re-read in the background before it runs out so its
callers never wait, and revocation / tenant changes are still seen within the cache time (a fake clock
drives time, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from breakdesk.api import ApiSettings
from breakdesk.api.auth import Authenticator, FailureLog, Principal, create_api_key
from breakdesk.api.limits import TenantCache
from breakdesk.api.observe import ApiMetrics
from breakdesk.api.problems import ApiProblem
from breakdesk.api.rbac import Role
from breakdesk.store import Store

TENANT = "cache-tenant"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The real store, counting key reads (what the cache exists to save)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.key_reads = 0
        self.tenant_reads = 0

    async def get_api_key(self, key_id: str) -> Any:
        self.key_reads += 1
        return await self.store.get_api_key(key_id)

    async def get_tenant(self, tenant_id: str) -> Any:
        self.tenant_reads += 1
        return await self.store.get_tenant(tenant_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    await s.create_tenant(TENANT)
    try:
        yield s
    finally:
        await s.close()


def request(key: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/v1/whoami", "headers": [(b"x-api-key", key.encode())],
             "client": ("127.0.0.1", 5000), "path_params": {}, "query_string": b""}
    return Request(scope)


def authenticator(store: CountingStore, clock: Clock, ttl: float = 30.0) -> Authenticator:
    settings = ApiSettings(api_key_cache_seconds=ttl, auth_failure_rps=1000.0, auth_failure_burst=10_000,
                           log_level="warning")
    metrics = ApiMetrics()
    return Authenticator(store, settings, metrics, FailureLog(store, metrics), None, clock=clock)  # type: ignore[arg-type]


async def settle(auth: Authenticator) -> None:
    """Let the background refreshes and touches finish."""
    while auth._tasks:
        await asyncio.gather(*list(auth._tasks), return_exceptions=True)


async def test_concurrent_misses_share_one_lookup(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock)
    _, key = await create_api_key(store, TENANT, Role.OPERATOR, "k", "tests")
    principals = await asyncio.gather(*(auth.authenticate(request(key)) for _ in range(25)))
    assert {p.tenant_id for p in principals} == {TENANT} and counting.key_reads == 1
    await auth.authenticate(request(key))
    assert counting.key_reads == 1  # cached
    await settle(auth)


async def test_concurrent_wrong_secrets_each_fail_and_are_each_recorded(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock)
    api_key, _ = await create_api_key(store, TENANT, Role.OPERATOR, "k", "tests")
    forged = f"bdk_{api_key.key_id}_" + "F" * 43
    results = await asyncio.gather(*(auth.authenticate(request(forged)) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ApiProblem) and r.kind.status == 401 for r in results)
    assert counting.key_reads == 1 and len(auth.failures._pending) == 5
    await auth.failures.close()


async def test_a_busy_key_is_refreshed_in_the_background_and_never_waits(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock, ttl=30.0)
    _, key = await create_api_key(store, TENANT, Role.OPERATOR, "k", "tests")
    await auth.authenticate(request(key))
    for _ in range(40):  # 40 steps of 1 s: the entry would have expired at 30 s without the refreshes
        clock.now += 1.0
        p = await auth.authenticate(request(key))
        assert isinstance(p, Principal)
        await settle(auth)
    # one read at first use, then one refresh each time half the entry's time (15 s) had passed
    assert counting.key_reads == 1 + 40 // 15


async def test_revocation_elsewhere_is_seen_by_the_refresh_within_the_cache_time(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock, ttl=30.0)
    api_key, key = await create_api_key(store, TENANT, Role.VIEWER, "k", "tests")
    await auth.authenticate(request(key))
    await store.revoke_api_key(TENANT, api_key.key_id, "cli")  # another process revokes it
    clock.now += 16.0  # past half time: this request is still served (documented), and triggers a refresh
    assert (await auth.authenticate(request(key))).role == Role.VIEWER
    await settle(auth)
    with pytest.raises(ApiProblem) as refused:
        await auth.authenticate(request(key))
    assert refused.value.kind.status == 401
    await auth.failures.close()


async def test_without_traffic_an_entry_still_expires_after_the_cache_time(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock, ttl=30.0)
    api_key, key = await create_api_key(store, TENANT, Role.VIEWER, "k", "tests")
    await auth.authenticate(request(key))
    await store.revoke_api_key(TENANT, api_key.key_id, "cli")
    clock.now += 30.0  # no request in between: no refresh ran, the entry is simply out of time
    with pytest.raises(ApiProblem):
        await auth.authenticate(request(key))
    await auth.failures.close()


async def test_forgetting_a_key_while_its_refresh_runs_is_not_undone(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    auth = authenticator(counting, clock, ttl=30.0)
    api_key, key = await create_api_key(store, TENANT, Role.VIEWER, "k", "tests")
    await auth.authenticate(request(key))
    clock.now += 16.0
    await auth.authenticate(request(key))  # starts a refresh
    await store.revoke_api_key(TENANT, api_key.key_id, "api")
    auth.forget(api_key.key_id)  # as the revoking route does, while the refresh is in flight
    await settle(auth)
    with pytest.raises(ApiProblem):
        await auth.authenticate(request(key))
    await auth.failures.close()


# ------------------------------------------------------------------------------------------------ tenants


async def test_tenant_cache_shares_concurrent_misses_and_refreshes_ahead(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    cache = TenantCache(counting, 5.0, clock)  # type: ignore[arg-type]
    got = await asyncio.gather(*(cache.get(TENANT) for _ in range(30)))
    assert {t.tenant_id for t in got if t is not None} == {TENANT} and counting.tenant_reads == 1
    await store.update_tenant_settings(TENANT, {"limits": {"requestsPerSecond": 7}}, "tests")
    clock.now += 3.0  # past half time: served from the entry, refreshed behind it
    first = await cache.get(TENANT)
    assert first is not None and first.settings == {}
    while cache._reads:
        await asyncio.gather(*list(cache._reads.values()), return_exceptions=True)
    assert counting.tenant_reads == 2
    second = await cache.get(TENANT)
    assert second is not None and second.settings == {"limits": {"requestsPerSecond": 7}}
    assert counting.tenant_reads == 2


async def test_tenant_cache_expires_without_traffic_and_caches_misses(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    cache = TenantCache(counting, 5.0, clock)  # type: ignore[arg-type]
    assert await asyncio.gather(cache.get("nobody"), cache.get("nobody")) == [None, None]
    assert await cache.get("nobody") is None and counting.tenant_reads == 1
    await cache.get(TENANT)
    clock.now += 5.0
    await cache.get(TENANT)
    assert counting.tenant_reads == 3


async def test_invalidating_a_tenant_during_a_read_is_not_undone(store: Store) -> None:
    counting, clock = CountingStore(store), Clock()
    cache = TenantCache(counting, 5.0, clock)  # type: ignore[arg-type]
    read = asyncio.ensure_future(cache.get(TENANT))
    await asyncio.sleep(0)  # the read is in flight
    cache.invalidate(TENANT)
    assert (await read) is not None
    await cache.get(TENANT)
    assert counting.tenant_reads == 2  # the stale read was not stored
