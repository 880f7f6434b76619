"""Approval requests: one row per request, its votes, edits and decision.

Every decision is a conditional update (`... WHERE status = 'PENDING'`) inside a write transaction that holds
the tenant's audit-head lock, so of any number of concurrent approve / reject / expire calls exactly one
changes a request, and the exception's status, its events and its audit entries change with it or not at all.
The rules (four-eyes, roles, N-of-M) live in `breakdesk.approvals`; this module only applies the change a
rule function computed from the locked row.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from breakdesk.audit.chain import utc_iso
from breakdesk.store._base import bulk_insert
from breakdesk.store.errors import Conflict, InvalidCursor, NotFound, StoreError
from breakdesk.store.exceptions import ExceptionRepo
from breakdesk.store.records import AuditRow, EventRow
from breakdesk.store.tables import approvals, exception_events, exceptions

_A = approvals.c
_X = exceptions.c

APPROVAL_STATUSES: tuple[str, ...] = ("PENDING", "APPROVED", "REJECTED", "EXPIRED")


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval request as stored. `approvers` holds every vote (actor, roles, at, comment, planDigest)."""

    tenant_id: str
    approval_id: str
    exception_id: str
    step_index: int | None
    step_id: str | None
    status: str
    plan: dict[str, Any]
    evidence: dict[str, Any]
    requested_by: str
    requested_at: datetime
    allowed_roles: tuple[str, ...]
    approvals_needed: int
    expires_at: datetime
    approvers: tuple[dict[str, Any], ...] = ()
    edits: dict[str, Any] | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None

    @property
    def scope(self) -> str:
        return "plan" if self.step_index is None else f"step:{self.step_index}"

    def as_dict(self) -> dict[str, Any]:
        """JSON view for the API and CLI (camelCase, ISO timestamps)."""
        return {
            "approvalId": self.approval_id,
            "tenantId": self.tenant_id,
            "exceptionId": self.exception_id,
            "stepIndex": self.step_index,
            "stepId": self.step_id,
            "scope": self.scope,
            "status": self.status,
            "plan": self.plan,
            "evidence": self.evidence,
            "requestedBy": self.requested_by,
            "requestedAt": utc_iso(self.requested_at),
            "allowedRoles": list(self.allowed_roles),
            "approvalsNeeded": self.approvals_needed,
            "approvers": list(self.approvers),
            "edits": self.edits,
            "expiresAt": utc_iso(self.expires_at),
            "decidedAt": utc_iso(self.decided_at) if self.decided_at else None,
            "decidedBy": self.decided_by,
            "comment": self.comment,
        }


@dataclass(slots=True)
class ApprovalChange:
    """What a rule function decided for one locked request; applied atomically by `change_approval`.

    `values` updates the approval row (status stays PENDING unless set); `exception_status` moves the exception
    from `from_status` (checked) to that status; events and audits are appended to the exception.
    """

    values: dict[str, Any]
    events: list[EventRow] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)
    exception_status: str | None = None
    from_status: str | None = None
    exception_fields: dict[str, Any] = field(default_factory=dict)


def approval_from_row(row: Row) -> Approval:
    m = row._mapping
    return Approval(
        tenant_id=m["tenant_id"],
        approval_id=m["approval_id"],
        exception_id=m["exception_id"],
        step_index=m["step_index"],
        step_id=m["step_id"],
        status=m["status"],
        plan=m["plan"],
        evidence=m["evidence"],
        requested_by=m["requested_by"],
        requested_at=m["requested_at"],
        allowed_roles=tuple(m["allowed_roles"] or ()),
        approvals_needed=int(m["approvals_needed"]),
        expires_at=m["expires_at"],
        approvers=tuple(m["approvers"] or ()),
        edits=m["edits"],
        decided_at=m["decided_at"],
        decided_by=m["decided_by"],
        comment=m["comment"],
    )


def _params(a: Approval) -> dict[str, Any]:
    return {
        "tenant_id": a.tenant_id,
        "approval_id": a.approval_id,
        "exception_id": a.exception_id,
        "step_index": a.step_index,
        "step_id": a.step_id,
        "scope": a.scope,
        "status": a.status,
        "plan": a.plan,
        "evidence": a.evidence,
        "requested_by": a.requested_by,
        "requested_at": a.requested_at,
        "allowed_roles": list(a.allowed_roles),
        "approvals_needed": a.approvals_needed,
        "approvers": list(a.approvers),
        "edits": a.edits,
        "expires_at": a.expires_at,
        "decided_at": a.decided_at,
        "decided_by": a.decided_by,
        "comment": a.comment,
    }


def approval_params(tenant_id: str, requests: Sequence[Approval]) -> list[dict[str, Any]]:
    """Insert parameters of requests, refusing any that belongs to another tenant."""
    for a in requests:
        if a.tenant_id != tenant_id:
            raise StoreError(f"approval {a.approval_id!r} belongs to tenant {a.tenant_id!r}, not {tenant_id!r}")
    return [_params(a) for a in requests]


async def insert_approvals(conn: AsyncConnection, tenant_id: str, requests: Sequence[Approval]) -> None:
    """Insert requests inside the caller's transaction (the pipeline's batch write, or an execution pause)."""
    await bulk_insert(conn, approvals, approval_params(tenant_id, requests))


def _encode_cursor(at: datetime, approval_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([utc_iso(at), approval_id])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, approval_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at.replace("Z", "+00:00")), str(approval_id)
    except (binascii.Error, ValueError, TypeError, AttributeError) as exc:
        raise InvalidCursor("the cursor is not valid; start again without one") from exc


async def append_exception_events(
    conn: AsyncConnection, tenant_id: str, exception_id: str, events: Sequence[EventRow], last_seq: int
) -> None:
    """Number and insert events after `last_seq` (which the caller read under the tenant lock)."""
    await bulk_insert(
        conn,
        exception_events,
        [
            {
                "tenant_id": tenant_id,
                "exception_id": exception_id,
                "seq": last_seq + i,
                "stage": ev.stage,
                "at": ev.at,
                "decision": ev.decision,
                "payload": ev.payload,
            }
            for i, ev in enumerate(events, 1)
        ],
    )


class ApprovalRepo(ExceptionRepo):
    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval | None:
        stmt = select(approvals).where(_A.tenant_id == tenant_id, _A.approval_id == approval_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return approval_from_row(row) if row is not None else None

    async def approvals_for_exception(self, tenant_id: str, exception_id: str) -> list[Approval]:
        """Every request of one exception, oldest first."""
        stmt = (
            select(approvals)
            .where(_A.tenant_id == tenant_id, _A.exception_id == exception_id)
            .order_by(_A.requested_at, _A.approval_id)
        )
        async with self._read() as conn:
            return [approval_from_row(r) for r in (await conn.execute(stmt)).all()]

    async def list_approvals(
        self,
        tenant_id: str,
        *,
        status: str | Sequence[str] | None = None,
        exception_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Approval], str | None]:
        """Newest first, keyset-paginated on (requested_at, approval_id); returns (page, next cursor)."""
        if not 1 <= limit <= 1000:
            raise StoreError("limit must be between 1 and 1000")
        stmt = select(approvals).where(_A.tenant_id == tenant_id)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            bad = sorted(set(wanted) - set(APPROVAL_STATUSES))
            if bad:
                raise StoreError(f"status must be one of {', '.join(APPROVAL_STATUSES)}, got {bad[0]!r}")
            stmt = stmt.where(_A.status.in_(wanted))
        if exception_id is not None:
            stmt = stmt.where(_A.exception_id == exception_id)
        if cursor is not None:
            at, after_id = _decode_cursor(cursor)
            stmt = stmt.where(or_(_A.requested_at < at, and_(_A.requested_at == at, _A.approval_id < after_id)))
        stmt = stmt.order_by(_A.requested_at.desc(), _A.approval_id.desc()).limit(limit + 1)
        async with self._read() as conn:
            rows = [approval_from_row(r) for r in (await conn.execute(stmt)).all()]
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, _encode_cursor(rows[-1].requested_at, rows[-1].approval_id)

    async def due_approvals(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(tenant, approval id) of PENDING requests whose TTL ran out by `now`, across tenants, oldest first."""
        stmt = (
            select(_A.tenant_id, _A.approval_id)
            .where(_A.status == "PENDING", _A.expires_at <= now)
            .order_by(_A.expires_at)
            .limit(limit)
        )
        async with self._read() as conn:
            return [(t, a) for t, a in (await conn.execute(stmt)).all()]

    async def change_approval(
        self,
        tenant_id: str,
        approval_id: str,
        decide: Callable[[Approval, Mapping[str, Any]], ApprovalChange],
    ) -> tuple[Approval, ApprovalChange]:
        """Lock, let `decide(request, exception row)` compute the change (it raises to refuse), apply it.

        The update is conditional on the request still being PENDING and the exception still being in
        `from_status`; both are guaranteed by the tenant lock, and re-checked by the WHERE clauses anyway.
        """
        async with self._write() as conn:
            head = await self._tenant_head(conn, tenant_id)
            row = (
                await conn.execute(
                    select(approvals).where(_A.tenant_id == tenant_id, _A.approval_id == approval_id)
                )
            ).first()
            if row is None:
                raise NotFound(f"approval {approval_id!r} does not exist for tenant {tenant_id!r}")
            current = approval_from_row(row)
            exc_row = (
                await conn.execute(
                    select(_X.status, _X.record, _X.exception_id).where(
                        _X.tenant_id == tenant_id, _X.exception_id == current.exception_id
                    )
                )
            ).first()
            if exc_row is None:
                raise NotFound(f"exception {current.exception_id!r} of approval {approval_id!r} does not exist")
            change = decide(current, dict(exc_row._mapping))
            result = await conn.execute(
                update(approvals)
                .where(_A.tenant_id == tenant_id, _A.approval_id == approval_id, _A.status == "PENDING")
                .values(**change.values)
            )
            if result.rowcount != 1:
                raise Conflict(f"approval {approval_id!r} was decided concurrently")
            fields = dict(change.exception_fields)
            if change.exception_status is not None:
                if exc_row.status != change.from_status:
                    raise Conflict(
                        f"exception {current.exception_id!r} is {exc_row.status}, not {change.from_status}; "
                        "nothing changed"
                    )
                fields["status"] = change.exception_status
            if fields:
                await self._apply_fields(conn, tenant_id, current.exception_id, fields)
            if change.events:
                seqs = await self._max_seqs(conn, tenant_id, {current.exception_id})
                await append_exception_events(
                    conn, tenant_id, current.exception_id, change.events, seqs.get(current.exception_id, 0)
                )
            await self._append_audit(conn, tenant_id, head, change.audits)
            updated = approval_from_row(
                (
                    await conn.execute(
                        select(approvals).where(_A.tenant_id == tenant_id, _A.approval_id == approval_id)
                    )
                ).one()
            )
        return updated, change
