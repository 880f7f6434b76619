"""Feedback: the outcome of a pass through the pipeline and the facts the learning loop will use."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from breakdesk.domain.construct import decision, ev
from breakdesk.domain.models import Actionability, ResolutionStatus
from breakdesk.pipeline.types import Outcome, Plan, PolicyResult, RecurrenceInfo, TriageResult


def final_status(policy: PolicyResult, plan: Plan, escalate: bool, approval: bool) -> ResolutionStatus:
    if escalate:
        return ResolutionStatus.ESCALATED
    if policy.actionability == Actionability.NON_ACTIONABLE_INFO_ONLY:
        return ResolutionStatus.TRIAGED
    if approval:
        return ResolutionStatus.PENDING_APPROVAL
    return ResolutionStatus.IN_PROGRESS


def feedback(
    status: ResolutionStatus,
    received_at: datetime,
    triaged_at: datetime,
    resolved_at: datetime | None,
    tri: TriageResult,
    policy: PolicyResult,
    plan: Plan,
    recurrence: RecurrenceInfo | None,
    recurrence_threshold: int,
    fingerprint: str,
) -> Outcome:
    ttt = max(0.0, (triaged_at - received_at).total_seconds() * 1000)
    ttr = None if resolved_at is None else max(0.0, (resolved_at - received_at).total_seconds() * 1000)
    learning: list[dict[str, Any]] = []
    occurrences = (recurrence.count if recurrence else 0) + 1
    if occurrences >= recurrence_threshold:
        learning.append({"kind": "recurrence", "fingerprint": fingerprint, "occurrences": occurrences})
    if policy.actionability == Actionability.ACTIONABLE_NON_APPROVED_PROCESS and plan.draft:
        learning.append({"kind": "draft-playbook", "draft": plan.draft["id"], "basedOn": plan.draft["basedOn"]})
    if tri.severity_source == "pack-default":
        learning.append({"kind": "rule-gap", "message": "severity fell back to the pack default"})
    evidence = [ev("outcome", message=f"status {status.value}; time to triage {ttt:.1f} ms")]
    evidence.extend(ev("learning", message=str(item)) for item in learning)
    made = decision(f"status {status.value}", tri.confidence, tuple(evidence), _NEXT_STEP.get(status, "none"))
    return Outcome(status.value, ttt, ttr, False, tuple(learning), made)


_NEXT_STEP = {
    ResolutionStatus.ESCALATED: "human_review",
    ResolutionStatus.PENDING_APPROVAL: "await_approval",
    ResolutionStatus.IN_PROGRESS: "execute",
    ResolutionStatus.TRIAGED: "monitor",
}
