"""Building approval requests (pure): what a person is asked to approve, by whom, until when.

A request covers either the whole plan of an exception (the policy decided that a person must approve before
any tool runs) or one step (a step marked `requiresApproval` whose arguments were only known at execution, so
the plan approval could not show them). It carries the plan as the approver sees it, the evidence (why an
approval is needed, severity, confidence, outputs gathered so far), the requester, the roles that may decide,
how many distinct approvers are needed and when it expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from breakdesk import envvars
from breakdesk.domain.ids import new_exception_id
from breakdesk.packs.schema import TenantPolicy
from breakdesk.store.approvals import Approval

DEFAULT_TTL = timedelta(hours=24)


def default_ttl(environ: Mapping[str, str] | None = None) -> timedelta:
    """The approval TTL of tenants whose policy sets none: $BREAKDESK_APPROVAL_TTL_MINUTES when set, else 24
    hours (a bad value raises: `breakdesk.envvars`)."""
    minutes = envvars.approval_ttl_minutes(environ)
    return DEFAULT_TTL if minutes is None else timedelta(minutes=minutes)


def tenant_ttl(policy: TenantPolicy | None) -> timedelta:
    """The TTL of a request created now for this tenant: its policy's `approvals.ttlMinutes` when set, else
    the process default. Read at creation, so a policy change affects new requests, never pending ones."""
    minutes = policy.approvals.ttlMinutes if policy is not None else None
    return timedelta(minutes=minutes) if minutes else default_ttl()


def new_approval_id(now: datetime) -> str:
    """'AP-' + a ULID: time-ordered and unguessable, like exception ids."""
    return "AP-" + new_exception_id(int(now.timestamp() * 1000)).removeprefix("EX-")


def plan_request(
    *,
    tenant_id: str,
    exception_id: str,
    plan: dict[str, Any],
    evidence: dict[str, Any],
    requested_by: str,
    roles: Sequence[str],
    needed: int,
    now: datetime,
    ttl: timedelta | None = None,
) -> Approval:
    return Approval(
        tenant_id=tenant_id,
        approval_id=new_approval_id(now),
        exception_id=exception_id,
        step_index=None,
        step_id=None,
        status="PENDING",
        plan=plan,
        evidence=evidence,
        requested_by=requested_by,
        requested_at=now,
        allowed_roles=tuple(roles) or ("approver",),
        approvals_needed=max(1, int(needed)),
        expires_at=now + (ttl or default_ttl()),
    )


def step_request(
    *,
    tenant_id: str,
    exception_id: str,
    step_index: int,
    step_id: str,
    plan: dict[str, Any],
    evidence: dict[str, Any],
    requested_by: str,
    roles: Sequence[str],
    needed: int,
    now: datetime,
    ttl: timedelta | None = None,
) -> Approval:
    base = plan_request(
        tenant_id=tenant_id, exception_id=exception_id, plan=plan, evidence=evidence, requested_by=requested_by,
        roles=roles, needed=needed, now=now, ttl=ttl,
    )
    return replace(base, step_index=step_index, step_id=step_id)


def request_for_decision(
    decided: Any, tenant_id: str, requested_by: str, now: datetime, ttl: timedelta | None = None
) -> Approval:
    """The plan approval request of an exception the pipeline left PENDING_APPROVAL (a `stages.Decided`);
    `ttl` is the tenant's (`tenant_ttl`), else the process default applies."""
    pol, tri, plan = decided.policy, decided.triage, decided.plan
    record = decided.intake.record
    reasons = list(pol.approval_reasons) if pol else []
    evidence = {
        "reasons": reasons or ["the supervisor asked for a human check"],
        "exceptionType": record.exception_type,
        "severity": tri.severity.value if tri else None,
        "confidence": tri.confidence if tri else None,
        "summary": tri.summary if tri else "",
        "playbookId": pol.playbook_id if pol else None,
    }
    return plan_request(
        tenant_id=tenant_id,
        exception_id=record.exception_id,
        plan=plan.as_dict() if plan is not None else {},
        evidence=evidence,
        requested_by=requested_by,
        roles=list(pol.approvers) if pol else ["approver"],
        needed=pol.approvals_needed if pol else 1,
        now=now,
        ttl=ttl,
    )
