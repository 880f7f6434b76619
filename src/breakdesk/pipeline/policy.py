"""Policy: is there an approved process, which playbook, and must a human approve before it acts?

Every reason for requiring approval is kept as evidence, so "why did this wait?" always has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from breakdesk.domain.construct import decision, ev
from breakdesk.domain.models import UNCLASSIFIED, Actionability, Evidence, Severity
from breakdesk.packs.compiler import (
    CompiledApprovalRule,
    CompiledDomainPack,
    CompiledPlaybook,
    CompiledRoute,
    CompiledTenantPolicy,
)
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


def lineage_of(domain: CompiledDomainPack, etype: str) -> frozenset[str]:
    """The type and its ancestors (memoized per pack)."""
    key = ("lineage", etype)
    found = domain.type_cache.get(key)
    if found is None:
        found = domain.type_cache[key] = frozenset({etype, *domain.ancestors.get(etype, ())})
    return found


def _static_routes(
    tenant: CompiledTenantPolicy, etype: str, lineage: frozenset[str], severity: Severity
) -> tuple[CompiledRoute, ...]:
    """Routes whose type and severity filters admit (type, severity); only their conditions vary per exception."""
    key = ("routes", etype, severity)
    found = tenant.type_cache.get(key)
    if found is None:
        found = tenant.type_cache[key] = tuple(
            r
            for r in tenant.routes
            if (not r.spec.exceptionTypes or lineage.intersection(r.spec.exceptionTypes))
            and (not r.spec.severities or severity in r.spec.severities)
        )
    return found


def _routes(
    ctx: Any, lineage: frozenset[str], severity: Severity, tenant: CompiledTenantPolicy, etype: str
) -> list[str]:
    groups: list[str] = []
    for r in _static_routes(tenant, etype, lineage, severity):
        if r.condition is not None and not r.condition.evaluate(ctx).matched:
            continue
        if r.spec.group not in groups:
            groups.append(r.spec.group)
    return groups


@dataclass(frozen=True, slots=True)
class _Gate:
    """The approval decision's parts fixed by (type, playbook, severity) under one policy."""

    rules: tuple[CompiledApprovalRule, ...]  # pass the severity, type and tool-effect filters; require approval
    reasons: tuple[str, ...]  # guardrail reasons, in the order they are reported after the rules'
    blocked: tuple[tuple[str, str], ...]


def _gate(
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
    etype: str,
    lineage: frozenset[str],
    selected: CompiledPlaybook,
    severity: Severity,
) -> _Gate:
    key = ("gate", etype, selected.id, severity)
    found = tenant.type_cache.get(key)
    if found is not None:
        return found
    effects = {domain.tools[t].effect.value for t in selected.tools if t in domain.tools}
    rules = []
    for rule in tenant.approval_rules:
        s = rule.spec
        if s.severities and severity not in s.severities:
            continue
        if s.exceptionTypes and not lineage.intersection(s.exceptionTypes):
            continue
        if s.toolEffects and not effects & {e.value for e in s.toolEffects}:
            continue
        if not s.requireApproval:
            continue  # its condition would decide nothing
        rules.append(rule)
    reasons: list[str] = []
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
    found = _Gate(tuple(rules), tuple(reasons), tuple(blocked))
    tenant.type_cache[key] = found
    return found


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
    lineage = lineage_of(domain, etype)
    routes = _routes(ctx, lineage, severity, tenant, etype)
    if routes:
        evidence.append(ev("routing", f"route to {', '.join(routes)}"))

    if etype == UNCLASSIFIED:
        evidence.append(ev("policy", "unclassified exceptions have no process: escalate"))
        return _result(Actionability.NON_ACTIONABLE_INFO_ONLY, None, (), False, [], ["approver"], 1, [], True,
                       routes, evidence, tri.confidence, "escalate")

    candidates: list[CompiledPlaybook] = []
    for pb in domain.playbooks_for(etype):
        if pb.condition is not None:
            res = pb.condition.evaluate(ctx)
            if not res.matched:
                why = f": {res.error}" if res.error else ""
                evidence.append(ev("playbook", f"{pb.id} condition not met{why}", pb.id))
                continue
        candidates.append(pb)
    selected: CompiledPlaybook | None = None
    for pb in candidates:
        if pb.id in tenant.blocked_playbooks:
            evidence.append(ev("playbook", f"{pb.id} blocked by tenant guardrails", pb.id))
        elif pb.id not in tenant.approved_playbooks:
            evidence.append(ev("playbook", f"{pb.id} matches but is not approved", pb.id))
        else:
            selected = pb
            evidence.append(ev("playbook", f"selected {pb.id} (priority {pb.priority})", pb.id))
            break
    cand_ids = tuple(p.id for p in candidates)
    if not candidates:
        evidence.append(ev("policy", f"no playbook handles {etype}: information only"))
        return _result(Actionability.NON_ACTIONABLE_INFO_ONLY, None, cand_ids, False, [], ["approver"], 1, [],
                       False, routes, evidence, tri.confidence, "monitor")
    if selected is None:
        evidence.append(ev("policy", "no approved playbook: a person must handle it"))
        return _result(Actionability.ACTIONABLE_NON_APPROVED_PROCESS, None, cand_ids, False, [], ["approver"], 1, [],
                       True, routes, evidence, tri.confidence, "escalate")

    gate = _gate(domain, tenant, etype, lineage, selected, severity)
    reasons: list[str] = []
    approvers: list[str] = []
    needed = 1
    for rule in gate.rules:
        s = rule.spec
        if s.confidenceBelow is not None and not tri.confidence < s.confidenceBelow:
            continue
        if rule.condition is not None and not rule.condition.evaluate(ctx).matched:
            continue
        reasons.append(f"approval rule {rule.id}")
        approvers.extend(r for r in s.approverRoles if r not in approvers)
        needed = max(needed, s.approvalsNeeded)
    reasons.extend(gate.reasons)
    escalate = False
    if tenant.escalate_below is not None and tri.confidence < tenant.escalate_below:
        escalate = True
        reasons.append(f"confidence {tri.confidence:.2f} below escalateIfConfidenceBelow {tenant.escalate_below}")
    for r in reasons:
        evidence.append(ev("approval", r))
    required = bool(reasons)
    next_step = "escalate" if escalate else ("await_approval" if required else "plan")
    return _result(Actionability.ACTIONABLE_APPROVED_PROCESS, selected.id, cand_ids, required, reasons,
                   approvers or ["approver"], needed, list(gate.blocked), escalate, routes, evidence, tri.confidence,
                   next_step)


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
    made = decision(label, confidence, tuple(evidence), next_step)
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
        decision=made,
    )
