"""Reading and verifying a tenant's audit chain (entries are only ever written by the other repositories)."""

from __future__ import annotations

from sqlalchemy import select

from breakdesk.audit.chain import AuditEntry, ChainVerifier, VerifyResult
from breakdesk.store._base import StoreBase, audit_entry
from breakdesk.store.errors import NotFound
from breakdesk.store.tables import audit_entries, audit_heads

_A = audit_entries.c


class AuditRepo(StoreBase):
    async def get_audit(
        self, tenant_id: str, subject: str | None = None, limit: int = 100, *, after_seq: int = 0
    ) -> list[AuditEntry]:
        """Entries in chain order, optionally only those about `subject`; page with `after_seq`."""
        stmt = select(audit_entries).where(_A.tenant_id == tenant_id, _A.seq > after_seq)
        if subject is not None:
            stmt = stmt.where(_A.subject == subject)
        async with self._read() as conn:
            rows = (await conn.execute(stmt.order_by(_A.seq).limit(limit))).all()
        return [audit_entry(r) for r in rows]

    async def audit_head(self, tenant_id: str) -> tuple[int, str]:
        """(seq, hash) of the latest entry: publish it elsewhere to make truncation detectable too."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.tenant_id == tenant_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return int(row.seq), str(row.hash)

    async def verify_audit(self, tenant_id: str, *, chunk_size: int = 2000) -> VerifyResult:
        """Re-hash the whole chain in seq order, `chunk_size` entries at a time (memory stays bounded).

        Checks up to the head recorded when verification starts, so concurrent appends do not disturb it,
        and compares the end of the chain with that head, which catches entries cut off the end.
        """
        head_seq, head_hash = await self.audit_head(tenant_id)
        verifier = ChainVerifier(tenant_id=tenant_id)
        last = 0
        while last < head_seq:
            stmt = (
                select(audit_entries)
                .where(_A.tenant_id == tenant_id, _A.seq > last, _A.seq <= head_seq)
                .order_by(_A.seq)
                .limit(chunk_size)
            )
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
            if not rows:
                break
            for row in rows:
                if not verifier.feed(audit_entry(row)):
                    return verifier.finish()
            last = int(rows[-1].seq)
        return verifier.finish(head_seq, head_hash)
