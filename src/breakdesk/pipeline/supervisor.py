"""Supervisor: deterministic second look after Policy and after Resolution.

It can only make an outcome *more* conservative (require approval, escalate) — never less — so a bug in an
earlier stage or a clever payload cannot turn a guarded case into an automatic one.
"""

from __future__ import annotations

from breakdesk.domain.construct import decision, ev
from breakdesk.domain.models import UNCLASSIFIED, Actionability, Severity
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy
from breakdesk.pipeline.types import IntakeResult, Plan, PolicyResult, SupervisorResult, TriageResult

#: Confidence below which nothing runs unattended, when the tenant sets no threshold of its own.
DEFAULT_MIN_CONFIDENCE = 0.5


def _result(reasons: list[str], approval: bool, escalate: bool, confidence: float, after: str) -> SupervisorResult:
    if reasons:
        verdict = "escalate" if escalate else "require approval"
        made = decision(f"supervisor after {after}: {verdict}", confidence,
                        tuple([ev("supervisor", r) for r in reasons]), "escalate" if escalate else "await_approval")
    else:
        made = decision(f"supervisor after {after}: ok", confidence, (), "continue")
    return SupervisorResult(approval, escalate, tuple(reasons), made)


def check_policy(
    intake: IntakeResult, tri: TriageResult, policy: PolicyResult, tenant: CompiledTenantPolicy
) -> SupervisorResult:
    reasons: list[str] = []
    approval = escalate = False
    chain = min(intake.decision.confidence, tri.confidence, policy.decision.confidence)
    threshold = tenant.escalate_below if tenant.escalate_below is not None else DEFAULT_MIN_CONFIDENCE
    acting = policy.actionability == Actionability.ACTIONABLE_APPROVED_PROCESS
    if acting and chain < threshold and not policy.approval_required:
        approval = True
        reasons.append(f"confidence chain {chain:.2f} below {threshold}: a person must approve")
    if tri.severity == Severity.CRITICAL and policy.actionability == Actionability.NON_ACTIONABLE_INFO_ONLY:
        escalate = True
        reasons.append("CRITICAL severity but no process: information-only is not acceptable")
    if acting and tri.severity == Severity.CRITICAL and not policy.approval_required and not tenant.allow_auto_critical:
        approval = True
        reasons.append("CRITICAL with automatic action: approval required")
    if intake.record.exception_type == UNCLASSIFIED and policy.playbook_id is not None:
        escalate = True
        reasons.append("an unclassified exception cannot run a playbook")
    return _result(reasons, approval, escalate, chain, "policy")


def check_plan(
    plan: Plan, policy: PolicyResult, domain: CompiledDomainPack, tenant: CompiledTenantPolicy, confidence: float
) -> SupervisorResult:
    reasons: list[str] = []
    approval = escalate = False
    pb = domain.playbooks.get(plan.playbook_id) if plan.playbook_id is not None else None
    allowed_in_playbook = pb.tools if pb is not None else frozenset()
    for s in plan.steps:
        if s.tool is None:
            continue
        if s.tool not in allowed_in_playbook:
            escalate = True
            reasons.append(f"step {s.step_id} calls {s.tool}, which is not in the approved playbook")
        if s.tool not in tenant.allowed_tools or s.tool in tenant.blocked_tools:
            escalate = True
            reasons.append(f"step {s.step_id} calls {s.tool}, which the tenant does not allow")
    invalid = [s.step_id for s in plan.steps if s.status == "INVALID_ARGS"]
    if invalid:
        escalate = True
        reasons.append(f"step(s) {', '.join(invalid)} have invalid arguments: the plan cannot run as is")
    if plan.playbook_id is not None and plan.playbook_id != policy.playbook_id:
        escalate = True
        reasons.append("plan playbook differs from the policy decision")
    return _result(reasons, approval, escalate, confidence, "resolution")
