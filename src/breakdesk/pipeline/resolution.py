"""Resolution planning: the selected playbook becomes a concrete plan of steps.

A plan can never carry a tool the tenant may not run: such a step is kept as BLOCKED with `tool=None`, so the
executor has nothing to call. Arguments are rendered and validated against the tool's JSON Schema here; those
that depend on earlier step outputs (and `when` conditions that do) are decided at execution time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from breakdesk.domain.construct import decision, ev
from breakdesk.domain.models import Actionability
from breakdesk.packs.compiler import CompiledDomainPack, CompiledStep, CompiledTenantPolicy
from breakdesk.pipeline.types import Plan, PlanStep, PolicyResult, ResolutionResult
from breakdesk.rules.templates import RenderError


def validate_args(domain: CompiledDomainPack, tool: str, args: Any) -> list[str]:
    """JSON Schema errors of rendered arguments, as 'path: message' strings."""
    return domain.tools[tool].arg_errors(args)


@dataclass(frozen=True, slots=True)
class _StepFacts:
    """What planning a step derives from the packs alone (memoized per policy and step)."""

    step: CompiledStep
    description: str
    compensate: str | None
    tool_allowed: bool  # the tenant may run the step's tool (a SKIPPED step still names it then)
    blocked: str | None  # why the step's tool cannot run at all (BLOCKED), if it cannot
    effect: str | None


def _facts(step: CompiledStep, domain: CompiledDomainPack, tenant: CompiledTenantPolicy) -> _StepFacts:
    key = ("step", id(step))
    found = tenant.type_cache.get(key)
    if found is not None and found.step is step:
        return found
    spec = step.spec
    desc = spec.description or (f"call {spec.tool}" if spec.tool else "manual step")
    own = domain.tools.get(spec.tool) if spec.tool is not None else None
    comp = spec.compensate or (own.spec.compensation if own is not None else None)
    if comp is not None and (comp not in tenant.allowed_tools or comp in tenant.blocked_tools):
        comp = None  # a plan never names a tool the tenant may not run; a failure then escalates
    tool = spec.tool
    blocked: str | None = None
    effect: str | None = None
    if tool is not None:
        if tool not in domain.tools:
            blocked = f"tool {tool} is not defined by {domain.ref}"
        elif tool in tenant.blocked_tools:
            blocked = f"tool {tool} blocked by {tenant.blocked_tools[tool]}"
        elif tool not in tenant.allowed_tools:
            blocked = f"tool {tool} is not in tools.allow of {tenant.ref}"
        else:
            effect = domain.tools[tool].effect.value
    allowed = tool in tenant.allowed_tools and tool not in tenant.blocked_tools
    found = _StepFacts(step, desc, comp, allowed, blocked, effect)
    tenant.type_cache[key] = found
    return found


def _plan_step(
    step: CompiledStep,
    ctx: Any,
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
    policy: PolicyResult,
    data: dict[str, Any] | None = None,
) -> PlanStep:
    spec = step.spec
    facts = _facts(step, domain, tenant)
    desc, comp = facts.description, facts.compensate
    on_failure = spec.onFailure.value

    def made(
        status: str, *, tool: str | None, effect: str | None, args: dict[str, Any] | None, approval: bool, reason: str
    ) -> PlanStep:
        return PlanStep(step.index, step.id, desc, tool, effect, args, status, approval, reason, on_failure, comp)

    when_dep, args_dep = step.when_reads_steps, step.args_read_steps
    if step.when is not None and not when_dep:
        res = step.when.evaluate(ctx)
        if not res.matched:
            why = res.error or "condition is false"
            return made("SKIPPED", tool=spec.tool if facts.tool_allowed else None, effect=None, args=None,
                        approval=False, reason=f"when {step.when.source!r}: {why}")
    if spec.tool is None:
        reason = "performed by a person" + (" if its condition holds at execution" if when_dep else "")
        return made("MANUAL", tool=None, effect=None, args=None, approval=False, reason=reason)
    if facts.blocked is not None:
        return made("BLOCKED", tool=None, effect=None, args=None, approval=True, reason=facts.blocked)
    tool = spec.tool
    effect = facts.effect
    needs = spec.requiresApproval or policy.approval_required
    if args_dep:
        # Arguments mixing step outputs with exception data: the exception data is known now, so a missing
        # field there is an error now, not a surprise at execution.
        for expr in step.args.expressions:
            if "steps" not in expr.variables:
                _, err = expr.value_from(data, ctx)
                if err:
                    return made("INVALID_ARGS", tool=tool, effect=effect, args=None, approval=True, reason=f"${{{expr.source}}}: {err}")
        return made("DEFERRED_CONDITION" if when_dep else "PLANNED", tool=tool, effect=effect, args=None,
                    approval=needs, reason="arguments use earlier step outputs; rendered at execution")
    try:
        args = step.args.render(ctx, data)
    except RenderError as exc:
        if when_dep:  # the step may never run: its condition is decided at execution, with its arguments
            return made("DEFERRED_CONDITION", tool=tool, effect=effect, args=None, approval=needs,
                        reason=f"decided at execution; arguments not yet complete ({exc})")
        return made("INVALID_ARGS", tool=tool, effect=effect, args=None, approval=True, reason=str(exc))
    errors = validate_args(domain, tool, args)
    if errors:
        return made("INVALID_ARGS", tool=tool, effect=effect, args=args, approval=True, reason="; ".join(errors[:5]))
    status = "DEFERRED_CONDITION" if when_dep else "PLANNED"
    reason = "when depends on earlier step outputs; decided at execution" if when_dep else ""
    return made(status, tool=tool, effect=effect, args=args, approval=needs, reason=reason)


def _draft(domain: CompiledDomainPack, policy: PolicyResult) -> dict[str, Any] | None:
    """For actionable cases without an approved process: the structure of the best candidate, unapproved."""
    if not policy.candidate_playbooks:
        return None
    pb = domain.playbooks[policy.candidate_playbooks[0]]
    return {
        "id": f"{pb.id}-draft",
        "basedOn": pb.id,
        "approved": False,
        "steps": [
            {"stepId": s.id, "tool": s.tool, "description": s.spec.description or (s.tool or "manual step")}
            for s in pb.steps
        ],
    }


def plan_resolution(
    ctx: Any,
    domain: CompiledDomainPack,
    tenant: CompiledTenantPolicy,
    policy: PolicyResult,
    dry_run: bool,
    *,
    data: dict[str, Any] | None = None,
) -> ResolutionResult:
    """`data`: the plain values `ctx` was built from (see `Template.render`), when the caller has them."""
    if policy.playbook_id is None:
        draft = _draft(domain, policy) if policy.actionability == Actionability.ACTIONABLE_NON_APPROVED_PROCESS else None
        plan = Plan(None, (), dry_run, False, draft)
        notes = [ev("plan", message="no approved playbook: nothing to run")]
        if draft:
            notes.append(ev("plan", message=f"suggested draft {draft['id']} (approved: false)", ref=draft["id"]))
        return ResolutionResult(
            plan, decision("no plan", policy.decision.confidence, tuple(notes), policy.decision.next_step)
        )
    pb = domain.playbooks[policy.playbook_id]
    steps = tuple(_plan_step(s, ctx, domain, tenant, policy, data) for s in pb.steps)
    approval = policy.approval_required or any(s.requires_approval for s in steps)
    plan = Plan(pb.id, steps, dry_run, approval)
    evidence = [
        ev("plan-step", message=f"{s.step_id}: {s.status}" + (f" ({s.reason})" if s.reason else ""),
                 ref=s.tool)
        for s in steps
    ]
    if dry_run:
        evidence.append(ev("plan", message="dry run: the plan is recorded, no tool is called"))
    runnable = sum(1 for s in steps if s.status in ("PLANNED", "DEFERRED_CONDITION"))
    next_step = "await_approval" if approval else ("execute" if runnable else "manual")
    if policy.escalate:
        next_step = "escalate"
    made = decision(f"plan {pb.id}: {runnable} tool step(s), {len(steps) - runnable} other",
                    policy.decision.confidence, tuple(evidence), next_step)
    return ResolutionResult(plan, made)
