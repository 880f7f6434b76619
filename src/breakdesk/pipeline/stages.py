"""All decision stages after intake, as one pure function: same inputs, same decisions, every time.

A stage that raises does not stop the batch: the exception is marked ESCALATED with the error as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from breakdesk.domain.construct import ev
from breakdesk.domain.models import AgentDecision, ResolutionStatus
from breakdesk.packs.compiler import CompiledDomainPack, CompiledTenantPolicy
from breakdesk.pipeline.context import condition_context, fields_read
from breakdesk.pipeline.feedback import feedback, final_status
from breakdesk.pipeline.policy import decide_policy
from breakdesk.pipeline.resolution import plan_resolution
from breakdesk.pipeline.supervisor import check_plan, check_policy
from breakdesk.pipeline.triage import triage
from breakdesk.pipeline.types import (
    IntakeResult,
    Outcome,
    Plan,
    PolicyResult,
    RecurrenceInfo,
    SimilarCase,
    StageEvent,
    TriageResult,
)
from breakdesk.rules.cel import Condition


def _phase_conditions(
    domain: CompiledDomainPack, tenant: CompiledTenantPolicy, etype: str, phase: str
) -> list[Condition]:
    conds: list[Condition] = []
    if phase == "triage":
        conds.extend(rule.condition for rule in domain.severity_rules(etype))
        conds.extend(ov.condition for ov in tenant.overrides_for_type.get(etype, ()) if ov.condition is not None)
    else:
        for pb in domain.playbooks_for(etype):
            if pb.condition is not None:
                conds.append(pb.condition)
            for step in pb.steps:
                if step.when is not None:
                    conds.append(step.when)
                conds.extend(step.args.expressions)
        conds.extend(r.condition for r in tenant.approval_rules if r.condition is not None)
        conds.extend(r.condition for r in tenant.routes if r.condition is not None)
    return conds


def needed_vars(domain: CompiledDomainPack, tenant: CompiledTenantPolicy, etype: str, phase: str) -> frozenset[str]:
    """Variables the conditions of one phase can read for one exception type (memoized per compiled policy)."""
    key = (etype, phase)
    cached = tenant.var_cache.get(key)
    if cached is not None:
        return cached
    names: set[str] = set()
    for cond in _phase_conditions(domain, tenant, etype, phase):
        names |= cond.variables
    result = frozenset(names)
    tenant.var_cache[key] = result
    return result


def needed_fields(
    domain: CompiledDomainPack, tenant: CompiledTenantPolicy, etype: str
) -> dict[str, frozenset[str] | None]:
    """For the map variables, which top-level keys any condition of the type reads (None: possibly all).

    Converting maps into CEL values is the main cost of a context, so a context carries only the keys that
    can be read. Sound: a key set is used only when every mention of the map is a `.field` access."""
    cache_key = (etype, "fields")
    cached = tenant.field_cache.get(cache_key)
    if cached is not None:
        return cached
    conds = _phase_conditions(domain, tenant, etype, "triage") + _phase_conditions(domain, tenant, etype, "policy")
    out: dict[str, frozenset[str] | None] = {}
    for root in ("normalizedContext", "rawPayload"):
        keys: set[str] = set()
        exact = True
        for cond in conds:
            if root not in cond.variables:
                continue
            found = fields_read(cond.source, root)
            if found is None:
                exact = False
                break
            keys |= found
        out[root] = frozenset(keys) if exact else None
    tenant.field_cache[cache_key] = out
    return out


_PLAIN_ROOTS = ("normalizedContext", "rawPayload")
#: Never converted into the context: decided during the pass (severity, confidence; a resolver serves them), or
#: not read before execution (`steps`: conditions and arguments that read it are decided at execution).
_RESOLVED = frozenset({"severity", "confidence", "steps"})


@dataclass(frozen=True, slots=True)
class TypePlan:
    """What one pass over an exception of one type needs from its packs, derived once per (policy, type).

    The CEL context carries `variables`; of the maps, only the `fields` keys conditions read, plus the keys
    in `lookups` (read only by `${root.key}` arguments, answered from the plain data) when their value is
    not a plain scalar."""

    domain: CompiledDomainPack = field(repr=False, compare=False)
    variables: frozenset[str] = frozenset()
    fields: dict[str, frozenset[str] | None] = field(default_factory=dict)
    lookups: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Values decided during the pass (severity, confidence) that policy-time conditions read: served by a
    #: resolver, installed only when some condition needs one (it is consulted on every variable read).
    decided: frozenset[str] = frozenset()


def _plan_time_reads(
    domain: CompiledDomainPack, tenant: CompiledTenantPolicy, etype: str
) -> tuple[list[Condition], list[Condition]]:
    """(conditions CEL evaluates during a pass, `root.key` argument reads served from plain data).

    What reads `steps` is decided at execution, over the execution's own context, so it is not here."""
    conds = _phase_conditions(domain, tenant, etype, "triage")
    reads: list[Condition] = []
    for pb in domain.playbooks_for(etype):
        if pb.condition is not None:
            conds.append(pb.condition)
        for step in pb.steps:
            if step.when is not None and not step.when_reads_steps:
                conds.append(step.when)
            for expr in step.args.expressions:
                if "steps" in expr.variables:
                    continue
                (reads if expr.field is not None and expr.field[0] in _PLAIN_ROOTS else conds).append(expr)
    conds.extend(r.condition for r in tenant.approval_rules if r.condition is not None)
    conds.extend(r.condition for r in tenant.routes if r.condition is not None)
    return conds, reads


def type_plan(domain: CompiledDomainPack, tenant: CompiledTenantPolicy, etype: str) -> TypePlan:
    """The memoized `TypePlan` of `etype` under this policy and domain."""
    plan = tenant.type_cache.get(etype)
    if plan is not None and plan.domain is domain:
        return plan
    conds, reads = _plan_time_reads(domain, tenant, etype)
    names: set[str] = set()
    for cond in conds:
        names |= cond.variables
    fields: dict[str, frozenset[str] | None] = {}
    for root in _PLAIN_ROOTS:
        if root not in names:
            continue
        keys: set[str] = set()
        exact = True
        for cond in conds:
            if root in cond.variables:
                found = fields_read(cond.source, root)
                if found is None:
                    exact = False
                    break
                keys |= found
        fields[root] = frozenset(keys) if exact else None
    lookups: dict[str, frozenset[str]] = {}
    for root in _PLAIN_ROOTS:
        if root in fields and fields[root] is None:
            continue  # the whole map is converted anyway
        keys_read = {e.field[1] for e in reads if e.field is not None and e.field[0] == root}
        keys_read -= fields.get(root) or frozenset()
        if keys_read:
            lookups[root] = frozenset(keys_read)
    plan = TypePlan(domain, frozenset(names - _RESOLVED), fields, lookups,
                    frozenset(names & {"severity", "confidence"}))
    tenant.type_cache[etype] = plan
    return plan


@dataclass(init=False, slots=True)
class Decided:
    """Everything the pipeline decided for one exception, plus the events to persist in order.

    Its own `__init__`: compiled (breakdesk.native), a dataclass's generated one would stay interpreted."""

    intake: IntakeResult
    status: ResolutionStatus
    events: list[StageEvent] = field(default_factory=list)
    triage: TriageResult | None = None
    policy: PolicyResult | None = None
    plan: Plan | None = None
    outcome: Outcome | None = None
    approval_required: bool = False
    escalated: bool = False
    error: str | None = None

    def __init__(self, intake: IntakeResult, status: ResolutionStatus) -> None:
        self.intake = intake
        self.status = status
        self.events = []
        self.triage = None
        self.policy = None
        self.plan = None
        self.outcome = None
        self.approval_required = False
        self.escalated = False
        self.error = None


def decide(
    ir: IntakeResult,
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
    *,
    received_at: datetime,
    now: datetime,
    recurrence: RecurrenceInfo | None = None,
    similar: tuple[SimilarCase, ...] = (),
    dry_run: bool = True,
) -> Decided:
    out = Decided(intake=ir, status=ResolutionStatus.RECEIVED)
    out.events.append(StageEvent("intake", ir.decision, {"fingerprint": ir.fingerprint, "typeSource": ir.type_source}))
    stage = "triage"
    try:
        record = ir.record
        recurrences = recurrence.count if recurrence else 0
        # One CEL context serves triage, policy and planning: converting the record into CEL values is the
        # dominant cost, so it happens once, for the variables and map keys conditions of this type read.
        # Values decided along the way (severity, confidence) are served by a resolver, which does not
        # invalidate the converted variables.
        tp = type_plan(domain, tenant, record.exception_type)
        ctx = condition_context(record, tp.variables, tp.fields, tp.lookups, recurrence=recurrences)
        data = {"normalizedContext": record.normalized_context, "rawPayload": record.raw_payload}
        tri = triage(ir, ctx, domain, tenant, recurrence, similar)
        out.triage = tri
        out.events.append(StageEvent("triage", tri.decision, {"severity": tri.severity.value,
                                                               "priority": tri.priority,
                                                               "matchedRules": list(tri.matched_rules)}))
        stage = "policy"
        if tp.decided:
            ctx.set_variable_resolver({"severity": tri.severity.value, "confidence": tri.confidence}.get)
        pctx = ctx
        pol = decide_policy(ir, tri, pctx, domain, tenant)
        out.policy = pol
        out.events.append(StageEvent("policy", pol.decision, {"actionability": pol.actionability.value,
                                                               "playbookId": pol.playbook_id,
                                                               "approvalRequired": pol.approval_required,
                                                               "blockedTools": [list(b) for b in pol.blocked_tools],
                                                               "approvers": list(pol.approvers),
                                                               "approvalsNeeded": pol.approvals_needed,
                                                               "routes": list(pol.routes)}))
        stage = "supervisor"
        sup1 = check_policy(ir, tri, pol, tenant)
        out.events.append(StageEvent("supervisor", sup1.decision, {"after": "policy"}))
        stage = "resolution"
        res = plan_resolution(pctx, domain, tenant, pol, dry_run, data=data)
        out.plan = res.plan
        out.events.append(StageEvent("resolution", res.decision, {"plan": res.plan.as_dict()}))
        stage = "supervisor"
        sup2 = check_plan(res.plan, pol, domain, tenant, tri.confidence)
        out.events.append(StageEvent("supervisor", sup2.decision, {"after": "resolution"}))
        approval = pol.approval_required or res.plan.approval_required or sup1.require_approval or sup2.require_approval
        escalate = pol.escalate or sup1.escalate or sup2.escalate
        status = final_status(pol, res.plan, escalate, approval)
        stage = "feedback"
        fb = feedback(status, received_at, now, None, tri, pol, res.plan, recurrence,
                      domain.spec.intake.recurrenceThreshold, ir.fingerprint)
        out.outcome = fb
        out.events.append(StageEvent("feedback", fb.decision, {"status": status.value,
                                                                "timeToTriageMs": fb.time_to_triage_ms,
                                                                "learning": list(fb.learning)}))
        out.status = status
        out.approval_required = approval and pol.playbook_id is not None
        out.escalated = escalate
    except Exception as exc:  # a failing stage escalates this exception; the batch goes on
        out.error = f"{stage} failed: {type(exc).__name__}: {exc}"[:500]
        out.status = ResolutionStatus.ESCALATED
        out.escalated = True
        out.events.append(StageEvent(stage, AgentDecision(
            decision=f"{stage} failed",
            confidence=0.0,
            evidence=(ev("error", message=out.error),),
            next_step="escalate",
        ), {"error": out.error}))
    return out
