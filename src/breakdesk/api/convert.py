"""Store rows to wire models (the store speaks snake_case dicts and dataclasses, the API camelCase JSON)."""

from __future__ import annotations

from typing import Any

from breakdesk.api.schemas import (
    ActivationOut,
    ApiKeyOut,
    AuditEntryOut,
    AuthFailureOut,
    EventOut,
    EvidenceOut,
    ExceptionSummary,
    PackVersionOut,
)
from breakdesk.audit.chain import AuditEntry
from breakdesk.store import Activation, PackVersion
from breakdesk.store.apikeys import ApiKey, AuthFailure

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
