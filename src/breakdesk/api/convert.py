"""Store rows to wire models (the store speaks snake_case dicts and dataclasses, the API camelCase JSON)."""

from __future__ import annotations

from typing import Any

from breakdesk.api.schemas import (
    ActivationOut,
    ApiKeyOut,
    ApprovalOut,
    AuditEntryOut,
    AuthFailureOut,
    EventOut,
    EvidenceOut,
    ExceptionSummary,
    ExecutionOutcomeOut,
    PackVersionOut,
    StepOutcomeOut,
    VoteOut,
)
from breakdesk.audit.chain import AuditEntry
from breakdesk.pipeline.execution import ExecutionOutcome
from breakdesk.store import Activation, PackVersion
from breakdesk.store.apikeys import ApiKey, AuthFailure
from breakdesk.store.approvals import Approval

_SUMMARY_FIELDS = tuple(ExceptionSummary.model_fields)


def summary(row: dict[str, Any]) -> ExceptionSummary:
    return ExceptionSummary.model_validate({name: row.get(name) for name in _SUMMARY_FIELDS})


def event(row: dict[str, Any]) -> EventOut:
    return EventOut(
        seq=int(row["seq"]), stage=row["stage"], at=row["at"], decision=row.get("decision"), payload=row.get("payload") or {}
    )


def evidence(events: list[dict[str, Any]]) -> list[EvidenceOut]:
    """Every decision's evidence in timeline order: why each stage decided what it did."""
    out: list[EvidenceOut] = []
    for e in events:
        decision = e.get("decision") or {}
        for item in decision.get("evidence") or ():
            if not isinstance(item, dict):
                continue
            out.append(
                EvidenceOut(
                    seq=int(e["seq"]),
                    stage=str(e["stage"]),
                    kind=str(item.get("kind", "")),
                    message=str(item.get("message", "")),
                    ref=item.get("ref") if isinstance(item.get("ref"), str) else None,
                )
            )
    return out


def audit_entry(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=entry.seq,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        subject=entry.subject,
        detail=dict(entry.detail),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )


def api_key(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        key_id=key.key_id,
        tenant_id=key.tenant_id,
        role=key.role,
        name=key.name,
        created_at=key.created_at,
        created_by=key.created_by,
        revoked_at=key.revoked_at,
        revoked_by=key.revoked_by,
        last_used_at=key.last_used_at,
    )


def auth_failure(f: AuthFailure) -> AuthFailureOut:
    return AuthFailureOut(
        id=f.id, at=f.at, tenant_id=f.tenant_id, credential=f.credential, reason=f.reason, method=f.method,
        path=f.path, client=f.client,
    )


def pack_version(pv: PackVersion, active: bool) -> PackVersionOut:
    return PackVersionOut(
        kind=pv.kind,
        name=pv.name,
        version=pv.version,
        content_hash=pv.content_hash,
        published_at=pv.published_at,
        published_by=pv.published_by,
        active=active,
    )


def activation(a: Activation) -> ActivationOut:
    return ActivationOut(
        kind=a.kind, name=a.name, version=a.version, action=a.action, activated_at=a.activated_at,
        activated_by=a.activated_by,
    )


def approval(a: Approval) -> ApprovalOut:
    return ApprovalOut(
        approval_id=a.approval_id,
        exception_id=a.exception_id,
        scope=a.scope,
        step_index=a.step_index,
        step_id=a.step_id,
        status=a.status,
        plan=a.plan,
        evidence=a.evidence,
        requested_by=a.requested_by,
        requested_at=a.requested_at,
        allowed_roles=list(a.allowed_roles),
        approvals_needed=a.approvals_needed,
        expires_at=a.expires_at,
        votes=[VoteOut.model_validate(v) for v in a.approvers],
        edits=a.edits,
        decided_at=a.decided_at,
        decided_by=a.decided_by,
        comment=a.comment,
    )


def outcome(o: ExecutionOutcome) -> ExecutionOutcomeOut:
    return ExecutionOutcomeOut(
        status=o.status,
        executed=o.executed,
        reason=o.reason,
        steps=[StepOutcomeOut(index=s.index, step_id=s.step_id, tool=s.tool, status=s.status, reason=s.reason,
                              attempts=s.attempts) for s in o.steps],
    )
