"""Canonical exception record and agent decision (camelCase on the wire, snake_case in Python).

Models are strict: unknown fields are rejected and values are not coerced across types, because an exception
desk that silently "fixes" its input cannot explain its decisions later.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from breakdesk.domain.timestamps import parse_timestamp


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class ResolutionStatus(StrEnum):
    """Lifecycle: RECEIVED → TRIAGED → (PENDING_APPROVAL) → IN_PROGRESS → RESOLVED | ESCALATED | FAILED; CLOSED by a person."""

    RECEIVED = "RECEIVED"
    TRIAGED = "TRIAGED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    IN_PROGRESS = "IN_PROGRESS"
    RESOLVED = "RESOLVED"
    ESCALATED = "ESCALATED"
    FAILED = "FAILED"
    CLOSED = "CLOSED"

    @property
    def is_open(self) -> bool:
        return self not in _TERMINAL


_TERMINAL = {ResolutionStatus.RESOLVED, ResolutionStatus.FAILED, ResolutionStatus.CLOSED}


class Actionability(StrEnum):
    ACTIONABLE_APPROVED_PROCESS = "ACTIONABLE_APPROVED_PROCESS"
    ACTIONABLE_NON_APPROVED_PROCESS = "ACTIONABLE_NON_APPROVED_PROCESS"
    NON_ACTIONABLE_INFO_ONLY = "NON_ACTIONABLE_INFO_ONLY"


UNCLASSIFIED = "UNCLASSIFIED"


class CanonicalModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


#: `Evidence.data` key marking a `message` the system filled in because the person acting wrote nothing
#: ("closed by a person"): shown in the timeline, but not their words (`memory.resolution` reads it).
DEFAULT_MESSAGE = "defaultMessage"


class Evidence(CanonicalModel):
    """One reason behind a decision: what was looked at (`kind`, `ref`) and what it showed (`message`)."""

    kind: str
    message: str
    ref: str | None = None
    data: dict[str, Any] | None = None


class AgentDecision(CanonicalModel):
    decision: str
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: tuple[Evidence, ...] = ()
    next_step: str

    @field_validator("confidence", mode="before")
    @classmethod
    def _int_confidence(cls, v: Any) -> Any:
        # 0 and 1 are valid confidences even when written as integers.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class AuditTrailEntry(CanonicalModel):
    at: datetime
    actor: str
    action: str
    detail: str = ""


class ExceptionRecord(CanonicalModel):
    """The canonical exception. `raw_payload` is kept verbatim: it is untrusted data, never instructions."""

    exception_id: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(min_length=1, max_length=100)
    source_system: str = Field(min_length=1, max_length=200)
    exception_type: str = Field(min_length=1, max_length=200)
    severity: Severity | None = None
    timestamp: datetime
    raw_payload: dict[str, Any] = Field(default_factory=dict)
    normalized_context: dict[str, Any] = Field(default_factory=dict)
    detected_rules: tuple[str, ...] = ()
    suggested_actions: tuple[str, ...] = ()
    resolution_status: ResolutionStatus = ResolutionStatus.RECEIVED
    audit_trail: tuple[AuditTrailEntry, ...] = ()

    @field_validator("timestamp", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> datetime:
        return parse_timestamp(v)

    @field_validator("severity", "resolution_status", mode="before")
    @classmethod
    def _enum_from_str(cls, v: Any, info: ValidationInfo) -> Any:
        # Strict mode would refuse the enum's own string value from Python dicts; JSON already accepts it.
        if isinstance(v, str):
            enum = Severity if info.field_name == "severity" else ResolutionStatus
            try:
                return enum(v.upper())
            except ValueError:
                allowed = ", ".join(m.value for m in enum)
                raise ValueError(f"must be one of {allowed}, got {v!r}") from None
        return v
