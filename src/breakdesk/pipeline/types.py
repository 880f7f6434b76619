"""Plain data passed between stages. Frozen dataclasses: cheap to build, impossible to mutate by accident."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from breakdesk.domain.models import Actionability, AgentDecision, ExceptionRecord, Severity


@dataclass(frozen=True, slots=True)
class Submission:
    """One raw exception as received (file line, API item, broker message). Untrusted."""

    data: Any  # intake checks that it is an object: a typed field would refuse it before intake could explain why
    received_at: datetime
    line: int | None = None  # input line number, for error reports
    queue_id: int | None = None  # intake-queue item it came from: completed with its writes, dedupe fallback


@dataclass(frozen=True, slots=True)
class RecurrenceInfo:
    """What the store knows about a fingerprint before this occurrence."""

    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    last_exception_id: str | None
    last_resolution: str | None = None


class SimilarCase(NamedTuple):
    """One similar case as triage evidence. A tuple: the hot path builds k of them per exception, and a
    frozen dataclass's initialiser costs several times more."""

    exception_id: str
    score: float
    summary: str
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class IntakeResult:
    record: ExceptionRecord
    decision: AgentDecision
    type_source: str  # "explicit" | "detected" | "unclassified"
    type_confidence: float
    fingerprint: str
    idempotency_key: str | None
    source_id: str | None


@dataclass(frozen=True, slots=True)
class TriageResult:
    severity: Severity
    severity_source: str  # "rule" | "override" | "type-default" | "pack-default"
    matched_rules: tuple[str, ...]
    priority: int
    confidence: float
    root_cause_hint: str
    summary: str
    decision: AgentDecision


@dataclass(frozen=True, slots=True)
class PolicyResult:
    actionability: Actionability
    playbook_id: str | None
    candidate_playbooks: tuple[str, ...]
    approval_required: bool
    approval_reasons: tuple[str, ...]
    approvers: tuple[str, ...]
    approvals_needed: int
    blocked_tools: tuple[tuple[str, str], ...]  # (tool, rule that blocked it)
    escalate: bool
    routes: tuple[str, ...]
    decision: AgentDecision


@dataclass(frozen=True, slots=True)
class PlanStep:
    index: int
    step_id: str
    description: str
    tool: str | None  # None for manual or blocked steps: a plan can never carry a forbidden tool
    effect: str | None
    args: dict[str, Any] | None
    status: str  # PLANNED | SKIPPED | DEFERRED_CONDITION | MANUAL | BLOCKED | INVALID_ARGS
    requires_approval: bool
    reason: str = ""
    on_failure: str = "escalate"
    compensate: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    playbook_id: str | None
    steps: tuple[PlanStep, ...]
    dry_run: bool
    approval_required: bool
    draft: dict[str, Any] | None = None  # suggested playbook for non-approved processes (approved: false)

    def as_dict(self) -> dict[str, Any]:
        return {
            "playbookId": self.playbook_id,
            "dryRun": self.dry_run,
            "approvalRequired": self.approval_required,
            "steps": [
                {
                    "index": s.index,
                    "stepId": s.step_id,
                    "description": s.description,
                    "tool": s.tool,
                    "effect": s.effect,
                    "args": s.args,
                    "status": s.status,
                    "requiresApproval": s.requires_approval,
                    "reason": s.reason,
                    "onFailure": s.on_failure,
                    "compensate": s.compensate,
                }
                for s in self.steps
            ],
            "draft": self.draft,
        }


@dataclass(frozen=True, slots=True)
class ResolutionResult:
    plan: Plan
    decision: AgentDecision


@dataclass(frozen=True, slots=True)
class SupervisorResult:
    require_approval: bool
    escalate: bool
    reasons: tuple[str, ...]
    decision: AgentDecision


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    time_to_triage_ms: float
    time_to_resolution_ms: float | None
    human_override: bool
    learning: tuple[dict[str, Any], ...]
    decision: AgentDecision


@dataclass(slots=True)
class StageEvent:
    stage: str
    decision: AgentDecision | None
    payload: dict[str, Any] = field(default_factory=dict)
