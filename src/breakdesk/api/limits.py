"""Per-tenant limits: token-bucket rate limits and body/batch sizes, with per-tenant overrides.

Buckets live in process memory (one server process = one set of buckets); the limits themselves are
tenant settings (`tenants.settings["limits"]`), cached for a few seconds so a change applies everywhere
shortly without a database read per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from breakdesk.api.settings import ApiSettings
from breakdesk.store import Store, Tenant

LIMITS_KEY = "limits"


class LimitOverrides(BaseModel):
    """A tenant's own limits; an absent (null) field falls back to the server default."""

    model_config = ConfigDict(extra="forbid")

    requestsPerSecond: float | None = Field(None, gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=10_000_000)
    maxBodyBytes: int | None = Field(None, ge=1024, le=1024 * 1024 * 1024)
    maxBatchItems: int | None = Field(None, ge=1, le=100_000)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    requests_per_second: float
    burst: int
    max_body_bytes: int
    max_batch_items: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "requestsPerSecond": self.requests_per_second,
            "burst": self.burst,
            "maxBodyBytes": self.max_body_bytes,
            "maxBatchItems": self.max_batch_items,
        }


def effective_limits(settings: ApiSettings, tenant: Tenant | None) -> TenantLimits:
    """Server defaults overlaid with the tenant's overrides; a body limit never exceeds the server's cap."""
    raw = (tenant.settings or {}).get(LIMITS_KEY) if tenant is not None else None
    own = LimitOverrides.model_validate(raw) if isinstance(raw, dict) else LimitOverrides()
    return TenantLimits(
        requests_per_second=own.requestsPerSecond or settings.rate_limit_rps,
        burst=own.burst or settings.rate_limit_burst,
        max_body_bytes=min(own.maxBodyBytes or settings.max_body_bytes, settings.max_request_bytes),
        max_batch_items=own.maxBatchItems or settings.max_batch_items,
    )


class TokenBucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float, rate: float, burst: int) -> float | None:
        """Take one token; None when granted, else seconds until one is available."""
        if rate != self.rate or burst != self.burst:  # limits changed: keep the level, apply the new shape
            self.rate, self.burst = rate, burst
            self.tokens = min(self.tokens, float(burst))
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate

    def available(self, now: float) -> float:
        return min(float(self.burst), self.tokens + (now - self.updated) * self.rate)


class RateLimiter:
    """Token buckets by key, bounded in number (least recently used keys are forgotten first)."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max = max_keys
        self._clock = clock

    def _bucket(self, key: str, rate: float, burst: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str, rate: float, burst: int) -> int | None:
        """None when allowed, else the whole seconds to wait (for Retry-After, at least 1)."""
        now = self._clock()
        wait = self._bucket(key, rate, burst, now).take(now, rate, burst)
        return None if wait is None else max(1, math.ceil(wait))

    def exhausted(self, key: str, rate: float, burst: int) -> int | None:
        """Like `take` without taking: seconds to wait when no token is left, else None."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        left = bucket.available(now)
        return None if left >= 1.0 else max(1, math.ceil((1.0 - left) / rate))


class TenantCache:
    """Tenants by id, cached for `ttl` seconds (misses too, so made-up ids do not each cost a query).

    Every request reads its tenant, so an expiry must not send all concurrent requests to the database at
    once: concurrent misses of one tenant share one read, and an entry in use is re-read in the background
    once half its time is up (the entry in hand is still within `ttl`, so staleness stays bounded by it).
    """

    def __init__(self, store: Store, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Tenant | None]] = OrderedDict()
        self._reads: dict[str, asyncio.Task[Tenant | None]] = {}

    async def get(self, tenant_id: str) -> Tenant | None:
        now = self._clock()
        hit = self._items.get(tenant_id)
        if hit is not None and hit[0] > now:
            if hit[0] - now < self._ttl / 2 and tenant_id not in self._reads:
                self._read(tenant_id)  # refresh ahead; this request goes on with the entry in hand
            return hit[1]
        read = self._reads.get(tenant_id) or self._read(tenant_id)
        return await asyncio.shield(read)  # a caller that goes away does not cancel the others' read

    def _read(self, tenant_id: str) -> asyncio.Task[Tenant | None]:
        task = asyncio.get_running_loop().create_task(self._fetch(tenant_id, self._clock()))
        self._reads[tenant_id] = task
        task.add_done_callback(lambda t: self._done(tenant_id, t))
        return task

    async def _fetch(self, tenant_id: str, read_at: float) -> Tenant | None:
        tenant = await self._store.get_tenant(tenant_id)
        if self._reads.get(tenant_id) is asyncio.current_task():  # not invalidated while reading
            self._items[tenant_id] = (read_at + self._ttl, tenant)
            self._items.move_to_end(tenant_id)
            if len(self._items) > 10_000:
                self._items.popitem(last=False)
        return tenant

    def _done(self, tenant_id: str, task: asyncio.Task[Tenant | None]) -> None:
        if self._reads.get(tenant_id) is task:
            del self._reads[tenant_id]
        if not task.cancelled():
            task.exception()  # a failed read is reported to its waiters; a refresh's failure is dropped

    def invalidate(self, tenant_id: str) -> None:
        """Forget the tenant now (its settings changed in this process); a read in flight is not stored."""
        self._items.pop(tenant_id, None)
        self._reads.pop(tenant_id, None)
