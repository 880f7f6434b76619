"""Policy: is there an approved process, which playbook, and must a human approve before it acts?

Every reason for requiring approval is kept as evidence, so "why did this wait?" always has an answer.
"""

from __future__ import annotations

from typing import Any

from breakdesk.domain.models import UNCLASSIFIED, Actionability, AgentDecision, Evidence, Severity, ev
from breakdesk.packs.compiler import CompiledDomainPack, CompiledPlaybook, CompiledTenantPolicy
from breakdesk.pipeline.types import IntakeResult, PolicyResult, TriageResult


def blocked_tools(playbook: CompiledPlaybook, tenant: CompiledTenantPolicy) -> list[tuple[str, str]]:
    """Tools of a playbook the tenant may not run, each with the rule that blocks it (in step order)."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for step in playbook.steps:
        tool = step.tool
        if tool is None or tool in seen:
            continue
        seen.add(tool)
        if tool in tenant.blocked_tools:
            out.append((tool, tenant.blocked_tools[tool]))
        elif tool not in tenant.allowed_tools:
            out.append((tool, f"not in tools.allow of {tenant.ref}"))
    return out


def _routes(ctx: Any, lineage: frozenset[str], severity: Severity, tenant: CompiledTenantPolicy) -> list[str]:
    groups: list[str] = []
    for r in tenant.routes:
        s = r.spec
        if s.exceptionTypes and not lineage.intersection(s.exceptionTypes):
            continue
        if s.severities and severity not in s.severities:
            continue
        if r.condition is not None and not r.condition.evaluate(ctx).matched:
            continue
        if s.group not in groups:
            groups.append(s.group)
    return groups


def decide_policy(
    intake_result: IntakeResult,
    tri: TriageResult,
    ctx: Any,
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
) -> PolicyResult:
    record = intake_result.record
    etype = record.exception_type
    severity = tri.severity
    evidence: list[Evidence] = []
    # Rules naming a parent type cover its children, as playbooks do.
    lineage = frozenset({etype, *domain.ancestors.get(etype, ())})
    routes = _routes(ctx, lineage, severity, tenant)
    if routes:
        evidence.append(ev("routing", message=f"route to {', '.join(routes)}"))

    if etype == UNCLASSIFIED:
        evidence.append(ev("policy", message="unclassified exceptions have no process: escalate"))
        return _result(Actionability.NON_ACTIONABLE_INFO_ONLY, None, (), False, [], ["approver"], 1, [], True,
                       routes, evidence, tri.confidence, "escalate")

    candidates: list[CompiledPlaybook] = []
    for pb in domain.playbooks_for(etype):
        if pb.condition is not None:
            res = pb.condition.evaluate(ctx)
            if not res.matched:
                why = f": {res.error}" if res.error else ""
                evidence.append(ev("playbook", message=f"{pb.id} condition not met{why}", ref=pb.id))
                continue
        candidates.append(pb)
    selected: CompiledPlaybook | None = None
    for pb in candidates:
        if pb.id in tenant.blocked_playbooks:
            evidence.append(ev("playbook", message=f"{pb.id} blocked by tenant guardrails", ref=pb.id))
        elif pb.id not in tenant.approved_playbooks:
            evidence.append(ev("playbook", message=f"{pb.id} matches but is not approved", ref=pb.id))
        else:
            selected = pb
            evidence.append(
                ev("playbook", message=f"selected {pb.id} (priority {pb.priority})", ref=pb.id)
            )
            break
    cand_ids = tuple(p.id for p in candidates)
    if not candidates:
        evidence.append(ev("policy", message=f"no playbook handles {etype}: information only"))
        return _result(Actionability.NON_ACTIONABLE_INFO_ONLY, None, cand_ids, False, [], ["approver"], 1, [],
                       False, routes, evidence, tri.confidence, "monitor")
    if selected is None:
        evidence.append(ev("policy", message="no approved playbook: a person must handle it"))
        return _result(Actionability.ACTIONABLE_NON_APPROVED_PROCESS, None, cand_ids, False, [], ["approver"], 1, [],
                       True, routes, evidence, tri.confidence, "escalate")

    reasons: list[str] = []
    approvers: list[str] = []
    needed = 1
    effects = {domain.tools[t].effect.value for t in selected.tools if t in domain.tools}
    for rule in tenant.approval_rules:
        s = rule.spec
        if s.severities and severity not in s.severities:
            continue
        if s.exceptionTypes and not lineage.intersection(s.exceptionTypes):
            continue
        if s.toolEffects and not effects & {e.value for e in s.toolEffects}:
            continue
        if s.confidenceBelow is not None and not tri.confidence < s.confidenceBelow:
            continue
        if rule.condition is not None and not rule.condition.evaluate(ctx).matched:
            continue
        if not s.requireApproval:
            continue
        reasons.append(f"approval rule {rule.id}")
        approvers.extend(r for r in s.approverRoles if r not in approvers)
        needed = max(needed, s.approvalsNeeded)
    if severity in tenant.no_auto_action:
        reasons.append(f"guardrail noAutoActionIfSeverityIn includes {severity}")
    if severity == Severity.CRITICAL and not tenant.allow_auto_critical:
        reasons.append("CRITICAL never auto-executes (allowAutoActionOnCritical is false)")
    gated = lineage & tenant.require_approval_types
    if gated:
        reasons.append(f"guardrail requireApprovalForTypes includes {', '.join(sorted(gated))}")
    manual_gate = [s.id for s in selected.steps if s.spec.requiresApproval]
    if manual_gate:
        reasons.append(f"step(s) {', '.join(manual_gate)} always need approval")
    blocked = blocked_tools(selected, tenant)
    for tool, why in blocked:
        reasons.append(f"tool {tool} blocked: {why}")
    escalate = False
    if tenant.escalate_below is not None and tri.confidence < tenant.escalate_below:
        escalate = True
        reasons.append(f"confidence {tri.confidence:.2f} below escalateIfConfidenceBelow {tenant.escalate_below}")
    for r in reasons:
        evidence.append(ev("approval", message=r))
    required = bool(reasons)
    next_step = "escalate" if escalate else ("await_approval" if required else "plan")
    return _result(Actionability.ACTIONABLE_APPROVED_PROCESS, selected.id, cand_ids, required, reasons,
                   approvers or ["approver"], needed, blocked, escalate, routes, evidence, tri.confidence, next_step)


def _result(
    actionability: Actionability,
    playbook: str | None,
    candidates: tuple[str, ...],
    required: bool,
    reasons: list[str],
    approvers: list[str],
    needed: int,
    blocked: list[tuple[str, str]],
    escalate: bool,
    routes: list[str],
    evidence: list[Evidence],
    confidence: float,
    next_step: str,
) -> PolicyResult:
    label = f"{actionability.value}" + (f" via {playbook}" if playbook else "")
    if required:
        label += ", approval required"
    decision = AgentDecision(decision=label, confidence=confidence, evidence=tuple(evidence), next_step=next_step)
    return PolicyResult(
        actionability=actionability,
        playbook_id=playbook,
        candidate_playbooks=candidates,
        approval_required=required,
        approval_reasons=tuple(reasons),
        approvers=tuple(approvers),
        approvals_needed=needed,
        blocked_tools=tuple(blocked),
        escalate=escalate,
        routes=tuple(routes),
        decision=decision,
    )
