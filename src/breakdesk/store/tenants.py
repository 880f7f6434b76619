"""Tenants: the root of every other row. Creating one also starts its audit chain."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError

from breakdesk.audit.chain import GENESIS_HASH
from breakdesk.store._base import StoreBase, utcnow
from breakdesk.store.errors import Conflict, StoreError
from breakdesk.store.records import AuditRow, Tenant
from breakdesk.store.tables import TENANT, audit_heads, tenants


def _tenant(row: Row) -> Tenant:
    m = row._mapping
    return Tenant(
        tenant_id=m["tenant_id"], name=m["name"], created_at=m["created_at"], settings=m["settings"]
    )


#: What a tenant id may be, wherever it comes from (the API's paths and bodies, tenant policies' `tenantId`, the
#: CLI): it appears in URL paths, file names and log lines, so no space, slash or other punctuation.
TENANT_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{TENANT - 1}}}$"


def check_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise StoreError("tenant_id must be a non-empty string")
    if len(tenant_id) > TENANT:
        raise StoreError(f"tenant_id is longer than {TENANT} characters")
    if re.fullmatch(TENANT_ID_PATTERN, tenant_id) is None:
        raise StoreError(f"tenant_id {tenant_id!r} must start with a letter or digit and hold only letters, "
                         "digits, '_', '-' and '.'")
    return tenant_id


class TenantRepo(StoreBase):
    async def create_tenant(
        self,
        tenant_id: str,
        name: str | None = None,
        settings: dict[str, Any] | None = None,
        *,
        by: str = "system",
    ) -> Tenant:
        """Create a tenant and the genesis of its audit chain; Conflict if it already exists."""
        check_tenant_id(tenant_id)
        now = utcnow()
        tenant = Tenant(
            tenant_id=tenant_id, name=name or tenant_id, created_at=now, settings=dict(settings or {})
        )
        async with self._write() as conn:
            exists = (
                await conn.execute(select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id))
            ).first()
            if exists is not None:
                raise Conflict(f"tenant {tenant_id!r} already exists")
            try:
                await conn.execute(
                    insert(tenants).values(
                        tenant_id=tenant_id, name=tenant.name, created_at=now, settings=tenant.settings
                    )
                )
            except IntegrityError as exc:  # lost a race with a concurrent create (PostgreSQL)
                raise Conflict(f"tenant {tenant_id!r} already exists") from exc
            await conn.execute(insert(audit_heads).values(tenant_id=tenant_id, seq=0, hash=GENESIS_HASH))
            await self._append_audit(
                conn,
                tenant_id,
                (0, GENESIS_HASH),
                [AuditRow(by, "tenant.create", f"tenant:{tenant_id}", now, {"name": tenant.name})],
            )
        return tenant

    async def ensure_tenant(self, tenant_id: str, name: str | None = None, *, by: str = "system") -> Tenant:
        """Get the tenant, creating it if needed: for demos and file ingest that name tenants on the fly."""
        existing = await self.get_tenant(tenant_id)
        if existing is not None:
            return existing
        try:
            return await self.create_tenant(tenant_id, name, by=by)
        except Conflict:
            found = await self.get_tenant(tenant_id)
            if found is None:
                raise
            return found

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._read() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id))).first()
        return _tenant(row) if row is not None else None

    async def list_tenants(self) -> list[Tenant]:
        """All tenants (a platform-admin view; the only read that is not tenant-scoped)."""
        async with self._read() as conn:
            rows = (await conn.execute(select(tenants).order_by(tenants.c.tenant_id))).all()
        return [_tenant(r) for r in rows]
