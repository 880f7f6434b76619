"""Wire models of the HTTP API: camelCase JSON, strict requests (unknown fields are errors), typed responses.

Responses are typed so the OpenAPI document is a real contract (Schemathesis checks every response against
it); requests forbid unknown fields so a typo is a 422 rather than a silently ignored option.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from breakdesk.domain.models import Severity
from breakdesk.domain.timestamps import parse_timestamp
from breakdesk.store.tenants import TENANT_ID_PATTERN

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_8601_only(value: Any) -> Any:
    """Query timestamps must be ISO 8601: pydantic would also read '0.5' as an epoch, which no one means."""
    if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
        raise ValueError("expected an ISO 8601 date-time such as 2025-03-01T12:00:00Z")
    return value


#: A date-time query parameter: ISO 8601 only; without a zone it is taken as UTC (as at intake).
QueryDateTime = Annotated[datetime, BeforeValidator(_iso_8601_only), AfterValidator(parse_timestamp)]

TenantId = Annotated[str, Field(pattern=TENANT_ID_PATTERN, description="Letters, digits, '_', '-', '.'.")]


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ----------------------------------------------------------------------------------------------- common


class Health(Wire):
    status: str


class Ready(Wire):
    status: Literal["ready", "not-ready"]
    database: Literal["ok", "unreachable-or-outdated"]
    worker: Literal["running", "stopped", "disabled"]


class WhoAmI(Wire):
    kind: str
    subject: str
    name: str
    tenant_id: str | None
    role: str
    permissions: list[str]


# ------------------------------------------------------------------------------------------- exceptions


class ExceptionSummary(Wire):
    exception_id: str
    tenant_id: str
    source_system: str
    exception_type: str
    severity: str | None
    status: str
    actionability: str | None
    playbook_id: str | None
    approval_required: bool
    confidence: float | None
    priority: float
    fingerprint: str | None
    idempotency_key: str | None
    source_id: str | None
    recurrence_count: int
    assignee: str | None
    domain_pack: str | None
    tenant_policy: str | None
    received_at: datetime
    triaged_at: datetime | None
    resolved_at: datetime | None
    updated_at: datetime
    summary: str


class ExceptionPage(Wire):
    items: list[ExceptionSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class EventOut(Wire):
    seq: int
    stage: str
    at: datetime
    decision: dict[str, Any] | None
    payload: dict[str, Any]


class EventPage(Wire):
    items: list[EventOut]
    next_after_seq: int | None


class EvidenceOut(Wire):
    seq: int
    stage: str
    kind: str
    message: str
    ref: str | None = None


class AuditEntryOut(Wire):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class ExceptionDetail(Wire):
    exception: ExceptionSummary
    record: dict[str, Any]
    timeline: list[EventOut]
    evidence: list[EvidenceOut]
    audit: list[AuditEntryOut]
    events_truncated: bool
    audit_truncated: bool


class AcceptedItem(Wire):
    index: int
    queue_id: int
    duplicate: bool = Field(description="True when this item's idempotency key was already accepted.")
    status_url: str


class Accepted(Wire):
    accepted: int
    duplicates: int
    items: list[AcceptedItem]


class DecisionItem(Wire):
    index: int
    queue_id: int
    outcome: Literal["processed", "recurrence", "duplicate", "rejected"]
    exception_id: str | None = None
    exception_type: str | None = None
    severity: str | None = None
    status: str | None = None
    actionability: str | None = None
    playbook_id: str | None = None
    approval_required: bool | None = None
    reason: str | None = None


class Decisions(Wire):
    processed: int
    recurrences: int
    duplicates: int
    rejected: int
    items: list[DecisionItem]


class IntakeStatus(Wire):
    queue_id: int
    state: Literal["PENDING", "DONE", "REJECTED"]
    attempts: int
    received_at: datetime
    error: str | None
    exception_id: str | None = Field(None, description="The exception this submission became (when DONE).")


class AssignAction(Wire):
    action: Literal["assign"]
    assignee: str | None = Field(min_length=1, max_length=200, description="null unassigns.")
    comment: str | None = Field(None, max_length=5000)


class CommentAction(Wire):
    action: Literal["comment"]
    text: str = Field(min_length=1, max_length=5000)


class CloseAction(Wire):
    action: Literal["close"]
    reason: str = Field("", max_length=2000)
    resolution: str | None = Field(None, max_length=2000, description="What was done about it.")


class ReopenAction(Wire):
    action: Literal["reopen"]
    reason: str = Field("", max_length=2000)


class OverrideSeverityAction(Wire):
    action: Literal["override_severity"]
    severity: Severity
    reason: str = Field(min_length=1, max_length=2000, description="Why: this becomes a learning signal.")


ActionRequest = Annotated[
    AssignAction | CommentAction | CloseAction | ReopenAction | OverrideSeverityAction,
    Field(discriminator="action"),
]


class ActionResult(Wire):
    exception: ExceptionSummary
    event: EventOut


# -------------------------------------------------------------------------------------- tenants & keys


class LimitsOut(Wire):
    requests_per_second: float
    burst: int
    max_body_bytes: int
    max_batch_items: int


class LimitsIn(Wire):
    """A tenant's own limits; null (or absent) means the server default."""

    requests_per_second: float | None = Field(None, gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=10_000_000)
    max_body_bytes: int | None = Field(None, ge=1024, le=1024 * 1024 * 1024)
    max_batch_items: int | None = Field(None, ge=1, le=100_000)


class TenantCreate(Wire):
    tenant_id: TenantId
    name: str | None = Field(None, min_length=1, max_length=200)
    limits: LimitsIn | None = None


class TenantOut(Wire):
    tenant_id: str
    name: str
    created_at: datetime
    limits: LimitsOut


class TenantList(Wire):
    items: list[TenantOut]


class ApiKeyCreate(Wire):
    role: Literal["viewer", "operator", "approver", "admin"]
    name: str = Field(min_length=1, max_length=200)


class ApiKeyOut(Wire):
    key_id: str
    tenant_id: str | None
    role: str
    name: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown once: only a hash is stored.")


class ApiKeyList(Wire):
    items: list[ApiKeyOut]


class AuthFailureOut(Wire):
    id: int
    at: datetime
    tenant_id: str | None
    credential: str = Field(description="api-key:<keyId>, jwt:<sub>, none, … — never a secret.")
    reason: str
    method: str
    path: str
    client: str


class AuthFailurePage(Wire):
    items: list[AuthFailureOut]
    next_before_id: int | None


class AuditPage(Wire):
    items: list[AuditEntryOut]
    next_after_seq: int | None


class AuditVerification(Wire):
    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str | None
    head_seq: int
    head_hash: str


# ------------------------------------------------------------------------------------------------ packs


class PackVersionOut(Wire):
    kind: Literal["domain", "tenant"]
    name: str
    version: str
    content_hash: str
    published_at: datetime
    published_by: str
    active: bool


class ActivePacks(Wire):
    domain: str | None
    tenant: str | None


class PackList(Wire):
    items: list[PackVersionOut]
    active: ActivePacks


class PackContent(Wire):
    pack: PackVersionOut
    content: dict[str, Any]


class ActivationOut(Wire):
    kind: str
    name: str
    version: str
    action: str
    activated_at: datetime
    activated_by: str


class ActivationList(Wire):
    items: list[ActivationOut]


class PublishResult(Wire):
    pack: PackVersionOut
    created: bool = Field(description="False when this exact content was already published (idempotent).")
    activated: ActivationOut | None


class PackValidation(Wire):
    """A valid pack (an invalid one is a 422 `pack-invalid` problem listing every error)."""

    valid: Literal[True] = True
    kind: Literal["domain", "tenant"]
    name: str
    version: str


class PackDiff(Wire):
    kind: str
    name: str
    from_version: str
    to_version: str
    changes: dict[str, Any]


class PackCaseOut(Wire):
    suite: str
    name: str
    passed: bool
    failures: list[str]
    actual: dict[str, Any]


class PackTestReport(Wire):
    passed: int
    failed: int
    results: list[PackCaseOut]


# ---------------------------------------------------------------------------------------------- metrics


class QueueCounts(Wire):
    pending: int
    done: int
    rejected: int


class MetricsOut(Wire):
    since: datetime | None
    until: datetime | None
    total: int
    auto_resolved: int
    auto_resolution_rate: float
    resolved: int
    mttr_seconds: float | None
    triaged: int
    mean_time_to_triage_seconds: float | None
    overridden: int
    override_rate: float
    recurring: int
    recurrence_rate: float
    recurrences: int
    approval_required: int
    by_status: dict[str, int]
    by_actionability: dict[str, int]
    by_severity: dict[str, int]
    by_type: dict[str, int]
    queue: QueueCounts


# -------------------------------------------------------------------------------------------------- run


class DomainPackRef(Wire):
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=100)


class PolicyRef(Wire):
    version: str = Field(min_length=1, max_length=100)


class RunRequest(Wire):
    """A what-if: named, published pack versions (never files or paths), nothing written or activated."""

    tenant_id: TenantId | None = Field(None, description="Defaults to the credential's tenant.")
    domain_pack: DomainPackRef
    tenant_policy: PolicyRef
    exceptions: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class StepDecision(Wire):
    stage: str
    decision: dict[str, Any] | None


class RunItem(Wire):
    index: int
    outcome: Literal["decided", "rejected"]
    exception_type: str | None = None
    severity: str | None = None
    status: str | None = None
    actionability: str | None = None
    playbook_id: str | None = None
    approval_required: bool | None = None
    fingerprint: str | None = None
    reason: str | None = None
    timeline: list[StepDecision] = Field(default_factory=list)


class RunResult(Wire):
    tenant_id: str
    domain_pack: str
    tenant_policy: str
    items: list[RunItem]


# ------------------------------------------------------------------------------------ approvals, execution


class VoteOut(Wire):
    actor: str
    roles: list[str]
    at: str
    comment: str
    decision: Literal["approve", "reject"]
    plan_digest: str | None = Field(None, description="The plan (with edits) the vote was cast on.")
    edits: dict[str, Any] | None = None


class ApprovalOut(Wire):
    approval_id: str
    exception_id: str
    scope: str = Field(description="`plan` (the whole plan) or `step:<index>` (one step).")
    step_index: int | None
    step_id: str | None
    status: Literal["PENDING", "APPROVED", "REJECTED", "EXPIRED"]
    plan: dict[str, Any]
    evidence: dict[str, Any]
    requested_by: str
    requested_at: datetime
    allowed_roles: list[str]
    approvals_needed: int
    expires_at: datetime
    votes: list[VoteOut]
    edits: dict[str, Any] | None
    decided_at: datetime | None
    decided_by: str | None
    comment: str | None


class ApprovalPage(Wire):
    items: list[ApprovalOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ApproveRequest(Wire):
    comment: str = Field("", max_length=5000)
    edits: dict[str, dict[str, Any]] | None = Field(
        None, description="Step id → replacement arguments (validated against the tool's schema); the approved "
        "plan runs with them and the change is recorded as a learning fact."
    )


class RejectRequest(Wire):
    comment: str = Field(min_length=1, max_length=5000, description="Why (required; recorded for learning).")
    close: bool = Field(False, description="Close the exception instead of escalating it to a person.")


class StepOutcomeOut(Wire):
    index: int
    step_id: str
    tool: str | None
    status: str
    reason: str
    attempts: int


class ExecutionOutcomeOut(Wire):
    status: str = Field(description="The exception's status after the run.")
    executed: bool = Field(description="False when nothing ran (paused, in flight elsewhere, nothing to do).")
    reason: str
    steps: list[StepOutcomeOut]


class ApprovalDecisionOut(Wire):
    outcome: Literal["approved", "vote-recorded", "rejected"]
    approval: ApprovalOut
    execution: ExecutionOutcomeOut | None = Field(
        description="The resumed run when approved with `?wait=true`; null otherwise (handed to the background "
        "executor, a vote recorded, a rejection, or execution disabled)."
    )
    execution_scheduled: bool = Field(description="True when the approval resumed the plan in the background.")


class ExecutionRecordOut(Wire):
    step_index: int
    step_id: str
    phase: str
    attempt: int
    tool: str | None
    status: str
    final: bool
    idempotency_key: str | None
    args: Any = None
    output: Any = None
    status_code: int | None
    latency_ms: float | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class ExecutionJournal(Wire):
    exception_id: str
    status: str
    items: list[ExecutionRecordOut]


class BreakerOut(Wire):
    tool: str
    state: Literal["closed", "half-open", "open"]
    failures: int
    opened_at: float | None = Field(description="Epoch seconds when the breaker opened.")
    retry_after_seconds: float | None = Field(description="Seconds until a trial call is let through.")


class BreakerList(Wire):
    items: list[BreakerOut] = Field(description="Breakers that have seen a call; other tools are closed.")


# -------------------------------------------------------------------------------------------- similar cases


class SimilarCaseOut(Wire):
    exception_id: str
    score: float
    why: str = Field(description="Why it is similar: shared entities, type, matched terms.")
    exception_type: str
    status: str
    severity: str | None
    resolution: str | None = Field(description="How it was resolved, when it was.")
    lexical: float
    semantic: float | None
    matched_terms: list[str]
    shared_entities: list[str]


class SimilarCases(Wire):
    exception_id: str
    model: str | None = Field(description="Embedding model of the vector side; null when lexical only.")
    vector_source: str
    indexed_cases: int
    query_embedding_ms: float
    search_ms: float
    items: list[SimilarCaseOut]


class MemoryStatusOut(Wire):
    """How far the similar-case memory's background indexer has got with the tenant (all 0 and false once it
    has caught up)."""

    cases: int = Field(description="Exceptions indexed as cases.")
    behind: int = Field(description="Entries of the tenant's audit chain the indexer has yet to look at (each "
                                    "change to an exception is one).")
    embedder: str | None = Field(description="The tenant policy's embedder; null for lexical and structured only.")
    to_embed: int = Field(description="Cases without a vector of that embedder yet.")
    rerender_pending: bool = Field(
        description="The active domain pack renders some cases differently and they are not all checked yet.")
    to_rerender: int = Field(description="Cases the re-rendering walk has yet to read (0 when none is pending; "
                                         "the rows it re-rendered count until it reads them again).")


# ------------------------------------------------------------------------------- submission (docs only)


class ExceptionIn(BaseModel):
    """One exception as an integrator sends it. Envelope fields are optional; the payload is `rawPayload`,
    or else every field that is not an envelope field. Other fields are allowed (they form the payload)."""

    model_config = ConfigDict(extra="allow")

    exceptionId: str | None = Field(None, min_length=1, max_length=200, description="Your id (dedupes too).")
    tenantId: str | None = Field(None, description="If given, must equal the tenant in the path.")
    sourceSystem: str | None = Field(None, max_length=200)
    exceptionType: str | None = Field(None, max_length=200)
    timestamp: str | float | None = Field(None, description="ISO 8601 or epoch seconds/milliseconds.")
    rawPayload: dict[str, Any] | None = None
    idempotencyKey: str | None = Field(None, min_length=1, max_length=200, description="Dedupes across requests.")
    sourceId: str | None = Field(None, max_length=200)


class SubmissionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ExceptionIn] = Field(min_length=1)


Submission = ExceptionIn | list[ExceptionIn] | SubmissionBatch
