"""Plain data passed between stages: immutable, cheap to build, and still dataclasses (repr, ==, `replace`).

Each class is a dataclass with `Final` fields and its own `__init__`. Compiled by mypyc (breakdesk.native) that
is a native class: built in about 20 ns, against about 400 ns for a frozen dataclass, whose generated
`__init__` stays interpreted; assigning a field raises AttributeError. Run from source, mypy enforces `Final`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from breakdesk.domain.models import Actionability, AgentDecision, ExceptionRecord, Severity


@dataclass(init=False, unsafe_hash=True, slots=True)
class Submission:
    """One raw exception as received (file line, API item, broker message). Untrusted."""

    data: Final[Any]  # intake checks it is an object: a narrower type would refuse it before intake can say why
    received_at: Final[datetime]
    line: Final[int | None]  # input line number, for error reports
    queue_id: Final[int | None]  # intake-queue item it came from: completed with its writes, dedupe fallback

    def __init__(self, data: Any, received_at: datetime, line: int | None = None, queue_id: int | None = None) -> None:
        self.data = data
        self.received_at = received_at
        self.line = line
        self.queue_id = queue_id


@dataclass(init=False, unsafe_hash=True, slots=True)
class RecurrenceInfo:
    """What the store knows about a fingerprint before this occurrence."""

    count: Final[int]
    first_seen: Final[datetime | None]
    last_seen: Final[datetime | None]
    last_exception_id: Final[str | None]
    last_resolution: Final[str | None]

    def __init__(
        self,
        count: int,
        first_seen: datetime | None,
        last_seen: datetime | None,
        last_exception_id: str | None,
        last_resolution: str | None = None,
    ) -> None:
        self.count = count
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.last_exception_id = last_exception_id
        self.last_resolution = last_resolution


class SimilarCase(NamedTuple):
    """One similar case as triage evidence. A tuple: the hot path builds k of them per exception, and a
    frozen dataclass's initialiser costs several times more."""

    exception_id: str
    score: float
    summary: str
    resolution: str | None = None


@dataclass(init=False, unsafe_hash=True, slots=True)
class IntakeResult:
    record: Final[ExceptionRecord]
    decision: Final[AgentDecision]
    type_source: Final[str]  # "explicit" | "detected" | "unclassified"
    type_confidence: Final[float]
    fingerprint: Final[str]
    idempotency_key: Final[str | None]
    source_id: Final[str | None]

    def __init__(
        self,
        record: ExceptionRecord,
        decision: AgentDecision,
        type_source: str,
        type_confidence: float,
        fingerprint: str,
        idempotency_key: str | None,
        source_id: str | None,
    ) -> None:
        self.record = record
        self.decision = decision
        self.type_source = type_source
        self.type_confidence = type_confidence
        self.fingerprint = fingerprint
        self.idempotency_key = idempotency_key
        self.source_id = source_id


@dataclass(init=False, unsafe_hash=True, slots=True)
class TriageResult:
    severity: Final[Severity]
    severity_source: Final[str]  # "rule" | "override" | "type-default" | "pack-default"
    matched_rules: Final[tuple[str, ...]]
    priority: Final[int]
    confidence: Final[float]
    root_cause_hint: Final[str]
    summary: Final[str]
    decision: Final[AgentDecision]

    def __init__(
        self,
        severity: Severity,
        severity_source: str,
        matched_rules: tuple[str, ...],
        priority: int,
        confidence: float,
        root_cause_hint: str,
        summary: str,
        decision: AgentDecision,
    ) -> None:
        self.severity = severity
        self.severity_source = severity_source
        self.matched_rules = matched_rules
        self.priority = priority
        self.confidence = confidence
        self.root_cause_hint = root_cause_hint
        self.summary = summary
        self.decision = decision


@dataclass(init=False, unsafe_hash=True, slots=True)
class PolicyResult:
    actionability: Final[Actionability]
    playbook_id: Final[str | None]
    candidate_playbooks: Final[tuple[str, ...]]
    approval_required: Final[bool]
    approval_reasons: Final[tuple[str, ...]]
    approvers: Final[tuple[str, ...]]
    approvals_needed: Final[int]
    blocked_tools: Final[tuple[tuple[str, str], ...]]  # (tool, rule that blocked it)
    escalate: Final[bool]
    routes: Final[tuple[str, ...]]
    decision: Final[AgentDecision]

    def __init__(
        self,
        actionability: Actionability,
        playbook_id: str | None,
        candidate_playbooks: tuple[str, ...],
        approval_required: bool,
        approval_reasons: tuple[str, ...],
        approvers: tuple[str, ...],
        approvals_needed: int,
        blocked_tools: tuple[tuple[str, str], ...],
        escalate: bool,
        routes: tuple[str, ...],
        decision: AgentDecision,
    ) -> None:
        self.actionability = actionability
        self.playbook_id = playbook_id
        self.candidate_playbooks = candidate_playbooks
        self.approval_required = approval_required
        self.approval_reasons = approval_reasons
        self.approvers = approvers
        self.approvals_needed = approvals_needed
        self.blocked_tools = blocked_tools
        self.escalate = escalate
        self.routes = routes
        self.decision = decision


@dataclass(init=False, unsafe_hash=True, slots=True)
class PlanStep:
    index: Final[int]
    step_id: Final[str]
    description: Final[str]
    tool: Final[str | None]  # None for manual or blocked steps: a plan can never carry a forbidden tool
    effect: Final[str | None]
    args: Final[dict[str, Any] | None]
    status: Final[str]  # PLANNED | SKIPPED | DEFERRED_CONDITION | MANUAL | BLOCKED | INVALID_ARGS
    requires_approval: Final[bool]
    reason: Final[str]
    on_failure: Final[str]
    compensate: Final[str | None]

    def __init__(
        self,
        index: int,
        step_id: str,
        description: str,
        tool: str | None,
        effect: str | None,
        args: dict[str, Any] | None,
        status: str,
        requires_approval: bool,
        reason: str = "",
        on_failure: str = "escalate",
        compensate: str | None = None,
    ) -> None:
        self.index = index
        self.step_id = step_id
        self.description = description
        self.tool = tool
        self.effect = effect
        self.args = args
        self.status = status
        self.requires_approval = requires_approval
        self.reason = reason
        self.on_failure = on_failure
        self.compensate = compensate


@dataclass(init=False, unsafe_hash=True, slots=True)
class Plan:
    playbook_id: Final[str | None]
    steps: Final[tuple[PlanStep, ...]]
    dry_run: Final[bool]
    approval_required: Final[bool]
    draft: Final[dict[str, Any] | None]  # suggested playbook for non-approved processes (approved: false)

    def __init__(
        self,
        playbook_id: str | None,
        steps: tuple[PlanStep, ...],
        dry_run: bool,
        approval_required: bool,
        draft: dict[str, Any] | None = None,
    ) -> None:
        self.playbook_id = playbook_id
        self.steps = steps
        self.dry_run = dry_run
        self.approval_required = approval_required
        self.draft = draft

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


@dataclass(init=False, unsafe_hash=True, slots=True)
class ResolutionResult:
    plan: Final[Plan]
    decision: Final[AgentDecision]

    def __init__(self, plan: Plan, decision: AgentDecision) -> None:
        self.plan = plan
        self.decision = decision


@dataclass(init=False, unsafe_hash=True, slots=True)
class SupervisorResult:
    require_approval: Final[bool]
    escalate: Final[bool]
    reasons: Final[tuple[str, ...]]
    decision: Final[AgentDecision]

    def __init__(self, require_approval: bool, escalate: bool, reasons: tuple[str, ...], decision: AgentDecision) -> None:
        self.require_approval = require_approval
        self.escalate = escalate
        self.reasons = reasons
        self.decision = decision


@dataclass(init=False, unsafe_hash=True, slots=True)
class Outcome:
    status: Final[str]
    time_to_triage_ms: Final[float]
    time_to_resolution_ms: Final[float | None]
    human_override: Final[bool]
    learning: Final[tuple[dict[str, Any], ...]]
    decision: Final[AgentDecision]

    def __init__(
        self,
        status: str,
        time_to_triage_ms: float,
        time_to_resolution_ms: float | None,
        human_override: bool,
        learning: tuple[dict[str, Any], ...],
        decision: AgentDecision,
    ) -> None:
        self.status = status
        self.time_to_triage_ms = time_to_triage_ms
        self.time_to_resolution_ms = time_to_resolution_ms
        self.human_override = human_override
        self.learning = learning
        self.decision = decision


@dataclass(init=False, slots=True)
class StageEvent:
    stage: str
    decision: AgentDecision | None
    payload: dict[str, Any] = field(default_factory=dict)

    def __init__(self, stage: str, decision: AgentDecision | None, payload: dict[str, Any] | None = None) -> None:
        self.stage = stage
        self.decision = decision
        self.payload = {} if payload is None else payload
