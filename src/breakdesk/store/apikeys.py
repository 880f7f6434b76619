"""What the HTTP API keeps about its callers: API keys, failed authentications, replayable responses of
requests sent with an `Idempotency-Key`, and each tenant's settings (where its limits live).

API keys are looked up by key id before the tenant is known, so `get_api_key` is, with `claim` and
`list_tenants`, one of the few reads that is not tenant-scoped. Only argon2 hashes of key secrets are
stored; nothing here ever sees a secret in the clear except `create_api_key`'s caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from breakdesk.store._base import StoreBase, utcnow
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.records import AuditRow, Tenant
from breakdesk.store.tables import ROLE, api_idempotency, api_keys, auth_failures, tenants

_K = api_keys.c
_AF = auth_failures.c
_AI = api_idempotency.c

PLATFORM_ROLE = "platform-admin"
TENANT_ROLES: tuple[str, ...] = ("viewer", "operator", "approver", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (never its secret): who it belongs to, what it may do, whether it still works."""

    key_id: str
    tenant_id: str | None
    role: str
    name: str
    secret_hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """One rejected credential. `credential` names it (`api-key:<id>`, `jwt:<sub>`, `none`), never its secret."""

    at: datetime
    tenant_id: str | None
    credential: str
    reason: str
    method: str
    path: str
    client: str
    id: int = 0


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response given to the first request with an idempotency key, replayed to every retry of it."""

    tenant_id: str
    idempotency_key: str
    request_hash: str
    status_code: int
    body: Any
    created_at: datetime


def _key(row: Row) -> ApiKey:
    m = row._mapping
    return ApiKey(
        key_id=m["key_id"],
        tenant_id=m["tenant_id"],
        role=m["role"],
        name=m["name"],
        secret_hash=m["secret_hash"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        revoked_at=m["revoked_at"],
        revoked_by=m["revoked_by"],
        last_used_at=m["last_used_at"],
    )


def _failure(row: Row) -> AuthFailure:
    m = row._mapping
    return AuthFailure(
        id=int(m["id"]),
        at=m["at"],
        tenant_id=m["tenant_id"],
        credential=m["credential"],
        reason=m["reason"],
        method=m["method"],
        path=m["path"],
        client=m["client"],
    )


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


class ApiAccessRepo(StoreBase):
    # ------------------------------------------------------------------ API keys

    async def create_api_key(
        self, tenant_id: str | None, key_id: str, secret_hash: str, role: str, name: str, by: str
    ) -> ApiKey:
        """Store a new key (the caller hashed its secret). Tenant keys are recorded in the tenant's audit chain."""
        if tenant_id is None and role != PLATFORM_ROLE:
            raise StoreError(f"a key without a tenant must have role {PLATFORM_ROLE!r}")
        if tenant_id is not None and role not in TENANT_ROLES:
            raise StoreError(f"a tenant key's role must be one of {', '.join(TENANT_ROLES)}, got {role!r}")
        if len(role) > ROLE:
            raise StoreError("role is too long")
        now = utcnow()
        key = ApiKey(key_id, tenant_id, role, _clip(name, 200), secret_hash, now, _clip(by, 200), None, None, None)
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id) if tenant_id is not None else None
            try:
                await conn.execute(
                    insert(api_keys).values(
                        key_id=key.key_id,
                        tenant_id=key.tenant_id,
                        role=key.role,
                        name=key.name,
                        secret_hash=key.secret_hash,
                        created_at=now,
                        created_by=key.created_by,
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"API key id {key_id!r} already exists") from exc
            if tenant_id is not None and head is not None:
                await self._append_audit(
                    conn,
                    tenant_id,
                    head,
                    [AuditRow(key.created_by, "apikey.create", f"apikey:{key_id}", now, {"role": role, "name": key.name})],
                )
        return key

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, whatever its tenant: authentication learns the tenant from it."""
        async with self._read() as conn:
            row = (await conn.execute(select(api_keys).where(_K.key_id == key_id))).first()
        return _key(row) if row is not None else None

    async def list_api_keys(self, tenant_id: str | None) -> list[ApiKey]:
        """A tenant's keys, or with None the platform keys, oldest first (revoked ones included)."""
        cond = _K.tenant_id.is_(None) if tenant_id is None else _K.tenant_id == tenant_id
        async with self._read() as conn:
            rows = (await conn.execute(select(api_keys).where(cond).order_by(_K.created_at, _K.key_id))).all()
        return [_key(r) for r in rows]

    async def revoke_api_key(self, tenant_id: str | None, key_id: str, by: str) -> ApiKey:
        """Revoke one of the tenant's keys (None: a platform key). Revoking twice keeps the first revocation."""
        cond = _K.tenant_id.is_(None) if tenant_id is None else _K.tenant_id == tenant_id
        now = utcnow()
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id) if tenant_id is not None else None
            row = (await conn.execute(select(api_keys).where(cond, _K.key_id == key_id))).first()
            if row is None:
                owner = f"tenant {tenant_id!r}" if tenant_id is not None else "the platform"
                raise NotFound(f"no API key {key_id!r} for {owner}")
            key = _key(row)
            if key.revoked:
                return key
            await conn.execute(
                update(api_keys).where(_K.key_id == key_id).values(revoked_at=now, revoked_by=_clip(by, 200))
            )
            if tenant_id is not None and head is not None:
                await self._append_audit(
                    conn,
                    tenant_id,
                    head,
                    [AuditRow(_clip(by, 200), "apikey.revoke", f"apikey:{key_id}", now, {"role": key.role})],
                )
        return ApiKey(
            key.key_id, key.tenant_id, key.role, key.name, key.secret_hash, key.created_at, key.created_by,
            now, _clip(by, 200), key.last_used_at,
        )

    async def touch_api_key(self, tenant_id: str | None, key_id: str, at: datetime) -> None:
        """Record that a key was used (callers throttle this: it is a write)."""
        cond = _K.tenant_id.is_(None) if tenant_id is None else _K.tenant_id == tenant_id
        async with self._write() as conn:
            await conn.execute(
                update(api_keys)
                .where(cond, _K.key_id == key_id, (_K.last_used_at.is_(None)) | (_K.last_used_at < at))
                .values(last_used_at=at)
            )

    # ------------------------------------------------------------------ failed authentication

    async def record_auth_failures(self, tenant_id: str | None, failures: list[AuthFailure]) -> None:
        """Append failed authentications attributed to one tenant, or to none (the API buffers them)."""
        if not failures:
            return
        async with self._write() as conn:
            await conn.execute(
                insert(auth_failures),
                [
                    {
                        "tenant_id": tenant_id,
                        "at": f.at,
                        "credential": _clip(f.credential, 120),
                        "reason": _clip(f.reason, 200),
                        "method": _clip(f.method, 16),
                        "path": _clip(f.path, 300),
                        "client": _clip(f.client, 100),
                    }
                    for f in failures
                ],
            )

    async def list_auth_failures(
        self, tenant_id: str | None, *, limit: int = 100, before_id: int | None = None, all_tenants: bool = False
    ) -> list[AuthFailure]:
        """Newest first. `tenant_id=None` lists failures attributed to no tenant, unless `all_tenants`."""
        stmt = select(auth_failures)
        if not all_tenants:
            stmt = stmt.where(_AF.tenant_id.is_(None) if tenant_id is None else _AF.tenant_id == tenant_id)
        if before_id is not None:
            stmt = stmt.where(_AF.id < before_id)
        async with self._read() as conn:
            rows = (await conn.execute(stmt.order_by(_AF.id.desc()).limit(limit))).all()
        return [_failure(r) for r in rows]

    # ------------------------------------------------------------------ idempotent requests

    async def get_stored_response(self, tenant_id: str, idempotency_key: str) -> StoredResponse | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(api_idempotency).where(_AI.tenant_id == tenant_id, _AI.idempotency_key == idempotency_key)
                )
            ).first()
        if row is None:
            return None
        m = row._mapping
        return StoredResponse(
            m["tenant_id"], m["idempotency_key"], m["request_hash"], int(m["status_code"]), m["response"], m["created_at"]
        )

    async def store_response(
        self, tenant_id: str, idempotency_key: str, request_hash: str, status_code: int, body: Any
    ) -> StoredResponse:
        """Remember the response to a keyed request; when a concurrent request stored one first, return that."""
        now = utcnow()
        try:
            async with self._write() as conn:
                await conn.execute(
                    insert(api_idempotency).values(
                        tenant_id=tenant_id,
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                        status_code=status_code,
                        response=body,
                        created_at=now,
                    )
                )
        except Conflict:
            existing = await self.get_stored_response(tenant_id, idempotency_key)
            if existing is None:
                raise
            return existing
        return StoredResponse(tenant_id, idempotency_key, request_hash, status_code, body, now)

    # ------------------------------------------------------------------ tenant settings

    async def update_tenant_settings(self, tenant_id: str, changes: dict[str, Any], by: str) -> Tenant:
        """Merge `changes` into the tenant's settings (a None value removes a key), recorded in its audit chain."""
        now = utcnow()
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            row = (await conn.execute(select(tenants).where(tenants.c.tenant_id == tenant_id))).one()
            settings = dict(row._mapping["settings"] or {})
            for key, value in changes.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            await conn.execute(
                update(tenants).where(and_(tenants.c.tenant_id == tenant_id)).values(settings=settings)
            )
            await self._append_audit(
                conn, tenant_id, head, [AuditRow(_clip(by, 200), "tenant.settings", f"tenant:{tenant_id}", now, changes)]
            )
        m = row._mapping
        return Tenant(tenant_id=tenant_id, name=m["name"], created_at=m["created_at"], settings=settings)
