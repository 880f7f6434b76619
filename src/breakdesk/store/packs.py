"""Published pack versions (immutable) and their activation history (append-only).

The active pack of a tenant for a kind is simply its latest activation row, so "what was active when" is
always answerable, and a rollback is itself recorded rather than erasing anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from breakdesk.audit.chain import content_hash
from breakdesk.store._base import StoreBase, utcnow
from breakdesk.store.errors import Conflict, NotFound, StoreError
from breakdesk.store.records import PACK_KINDS, Activation, AuditRow, PackVersion
from breakdesk.store.tables import pack_activations, pack_versions


def _check_kind(kind: str) -> str:
    if kind not in PACK_KINDS:
        raise StoreError(f"pack kind must be one of {', '.join(PACK_KINDS)}, got {kind!r}")
    return kind


def _pack(row: Row) -> PackVersion:
    m = row._mapping
    return PackVersion(
        id=int(m["id"]),
        tenant_id=m["tenant_id"],
        kind=m["kind"],
        name=m["name"],
        version=m["version"],
        content=m["content"],
        content_hash=m["content_hash"],
        published_at=m["published_at"],
        published_by=m["published_by"],
    )


def _activation(row: Row) -> Activation:
    m = row._mapping
    return Activation(
        id=int(m["id"]),
        tenant_id=m["tenant_id"],
        kind=m["kind"],
        name=m["name"],
        version=m["version"],
        activated_at=m["activated_at"],
        activated_by=m["activated_by"],
        action=m["action"],
    )


def _subject(kind: str, name: str, version: str) -> str:
    return f"pack:{kind}:{name}@{version}"


class PackRepo(StoreBase):
    async def publish_pack(
        self, tenant_id: str, kind: str, name: str, version: str, content: dict[str, Any], by: str
    ) -> PackVersion:
        """Store a pack version. Re-publishing identical content returns the existing row; different content
        under the same name and version is a Conflict, because a version must always mean the same pack."""
        _check_kind(kind)
        digest = content_hash(content)
        now = utcnow()
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            existing = await self._pack_row(conn, tenant_id, kind, name, version)
            if existing is not None:
                if existing.content_hash == digest:
                    return existing
                raise Conflict(
                    f"{kind} pack {name}@{version} is already published for tenant {tenant_id!r} with different "
                    f"content (sha256 {existing.content_hash[:12]}…, new {digest[:12]}…); versions are immutable, "
                    "publish a new version instead"
                )
            try:
                result = await conn.execute(
                    insert(pack_versions)
                    .values(
                        tenant_id=tenant_id,
                        kind=kind,
                        name=name,
                        version=version,
                        content=content,
                        content_hash=digest,
                        published_at=now,
                        published_by=by,
                    )
                    .returning(pack_versions.c.id)
                )
            except IntegrityError as exc:
                raise Conflict(f"{kind} pack {name}@{version} was published concurrently; retry") from exc
            pack_id = int(result.scalar_one())
            await self._append_audit(
                conn,
                tenant_id,
                head,
                [AuditRow(by, "pack.publish", _subject(kind, name, version), now, {"content_hash": digest})],
            )
        return PackVersion(pack_id, tenant_id, kind, name, version, content, digest, now, by)

    async def get_pack(self, tenant_id: str, kind: str, name: str, version: str) -> PackVersion | None:
        async with self._read() as conn:
            return await self._pack_row(conn, tenant_id, kind, name, version)

    async def list_pack_versions(
        self, tenant_id: str, kind: str | None = None, name: str | None = None
    ) -> list[PackVersion]:
        """Published versions in publication order."""
        stmt = select(pack_versions).where(pack_versions.c.tenant_id == tenant_id)
        if kind is not None:
            stmt = stmt.where(pack_versions.c.kind == _check_kind(kind))
        if name is not None:
            stmt = stmt.where(pack_versions.c.name == name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt.order_by(pack_versions.c.id))).all()
        return [_pack(r) for r in rows]

    async def activate(self, tenant_id: str, kind: str, name: str, version: str, by: str) -> Activation:
        """Make a published version the active one. Activating the already active version changes nothing."""
        _check_kind(kind)
        now = utcnow()
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            if await self._pack_row(conn, tenant_id, kind, name, version) is None:
                raise NotFound(
                    f"{kind} pack {name}@{version} has not been published for tenant {tenant_id!r}"
                )
            history = await self._history(conn, tenant_id, kind)
            if history and (history[-1].name, history[-1].version) == (name, version):
                return history[-1]
            return await self._record_activation(
                conn, head, tenant_id, kind, name, version, by, "activate", now
            )

    @staticmethod
    def _rollback_stack(history: list[Activation]) -> list[tuple[str, str]]:
        """Rollbacks unwind like a stack: after activating v1, v2, v3, two rollbacks lead to v2 and then v1."""
        stack: list[tuple[str, str]] = []
        for act in history:
            if act.action == "rollback" and stack:
                stack.pop()
                if not stack or stack[-1] != (act.name, act.version):
                    stack.append((act.name, act.version))
            else:
                stack.append((act.name, act.version))
        return stack

    async def rollback_target(self, tenant_id: str, kind: str) -> tuple[str, str] | None:
        """(name, version) a rollback would activate, or None: lets callers check it before rolling back."""
        _check_kind(kind)
        async with self._read() as conn:
            stack = self._rollback_stack(await self._history(conn, tenant_id, kind))
        return stack[-2] if len(stack) >= 2 else None

    async def rollback(self, tenant_id: str, kind: str, by: str = "system") -> Activation:
        """Re-activate the version that was active before the current one."""
        _check_kind(kind)
        now = utcnow()
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            stack = self._rollback_stack(await self._history(conn, tenant_id, kind))
            if len(stack) < 2:
                raise NotFound(f"no earlier {kind} pack activation to roll back to for tenant {tenant_id!r}")
            name, version = stack[-2]
            return await self._record_activation(
                conn, head, tenant_id, kind, name, version, by, "rollback", now
            )

    async def active_pack(self, tenant_id: str, kind: str) -> PackVersion | None:
        """The pack version named by the latest activation, or None if nothing was ever activated."""
        _check_kind(kind)
        latest = _latest_activation(tenant_id, kind)
        stmt = select(pack_versions).join(
            latest, (pack_versions.c.name == latest.c.name) & (pack_versions.c.version == latest.c.version)
        )
        stmt = stmt.where(pack_versions.c.tenant_id == tenant_id, pack_versions.c.kind == kind)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return _pack(row) if row is not None else None

    async def active_pack_hashes(self, tenant_id: str) -> dict[str, str]:
        """kind -> content hash of the active pack, both kinds in one statement and without the content.

        The orchestrator asks before every batch whether the tenant's packs changed; reading the hashes
        alone keeps that check from parsing both packs' JSON each time."""
        parts = []
        for kind in PACK_KINDS:
            latest = _latest_activation(tenant_id, kind)
            parts.append(
                select(pack_versions.c.kind, pack_versions.c.content_hash)
                .join(latest, (pack_versions.c.name == latest.c.name) & (pack_versions.c.version == latest.c.version))
                .where(pack_versions.c.tenant_id == tenant_id, pack_versions.c.kind == kind)
            )
        async with self._read() as conn:
            rows = (await conn.execute(union_all(*parts))).all()
        return {kind: content_hash for kind, content_hash in rows}

    async def activation_history(self, tenant_id: str, kind: str | None = None) -> list[Activation]:
        """Every activation and rollback, oldest first."""
        stmt = select(pack_activations).where(pack_activations.c.tenant_id == tenant_id)
        if kind is not None:
            stmt = stmt.where(pack_activations.c.kind == _check_kind(kind))
        async with self._read() as conn:
            rows = (await conn.execute(stmt.order_by(pack_activations.c.id))).all()
        return [_activation(r) for r in rows]

    async def _pack_row(
        self, conn: AsyncConnection, tenant_id: str, kind: str, name: str, version: str
    ) -> PackVersion | None:
        stmt = select(pack_versions).where(
            pack_versions.c.tenant_id == tenant_id,
            pack_versions.c.kind == kind,
            pack_versions.c.name == name,
            pack_versions.c.version == version,
        )
        row = (await conn.execute(stmt)).first()
        return _pack(row) if row is not None else None

    async def _history(self, conn: AsyncConnection, tenant_id: str, kind: str) -> list[Activation]:
        stmt = (
            select(pack_activations)
            .where(pack_activations.c.tenant_id == tenant_id, pack_activations.c.kind == kind)
            .order_by(pack_activations.c.id)
        )
        return [_activation(r) for r in (await conn.execute(stmt)).all()]

    async def _record_activation(
        self,
        conn: AsyncConnection,
        head: tuple[int, str],
        tenant_id: str,
        kind: str,
        name: str,
        version: str,
        by: str,
        action: str,
        now: datetime,
    ) -> Activation:
        result = await conn.execute(
            insert(pack_activations)
            .values(
                tenant_id=tenant_id,
                kind=kind,
                name=name,
                version=version,
                activated_at=now,
                activated_by=by,
                action=action,
            )
            .returning(pack_activations.c.id)
        )
        act = Activation(int(result.scalar_one()), tenant_id, kind, name, version, now, by, action)
        await self._append_audit(
            conn,
            tenant_id,
            head,
            [AuditRow(by, f"pack.{action}", _subject(kind, name, version), now, {"kind": kind})],
        )
        return act


def _latest_activation(tenant_id: str, kind: str) -> Any:
    """(name, version) of the tenant's latest activation of `kind`, as a subquery to join pack_versions on."""
    return (
        select(pack_activations.c.name, pack_activations.c.version)
        .where(pack_activations.c.tenant_id == tenant_id, pack_activations.c.kind == kind)
        .order_by(pack_activations.c.id.desc())
        .limit(1)
        .subquery()
    )
