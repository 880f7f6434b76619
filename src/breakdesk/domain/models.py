"""Canonical exception record and agent decision (camelCase on the wire, snake_case in Python).

Models are strict: unknown fields are rejected and values are not coerced across types, because an exception
desk that silently "fixes" its input cannot explain its decisions later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel


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


def parse_timestamp(value: Any) -> datetime:
    """Parse ISO-8601 (with `Z`), epoch seconds/milliseconds, or a datetime; always return an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise ValueError("timestamp must be an ISO-8601 string or epoch number, not a boolean")
    elif isinstance(value, int | float):
        try:
            secs = value / 1000.0 if abs(value) > 1e11 else float(value)
            return datetime.fromtimestamp(secs, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch timestamp out of range: {str(value)[:40]}") from exc
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("timestamp is empty")
        if text.isdigit():
            if len(text) > 20:
                raise ValueError(f"epoch timestamp out of range: {text[:40]}")
            return parse_timestamp(int(text))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    else:
        raise ValueError(f"timestamp must be a string or number, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


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


_new = object.__new__
_setattr = object.__setattr__
_EVIDENCE_SET = frozenset({"kind", "message", "ref"})
_DECISION_SET = frozenset({"decision", "confidence", "evidence", "next_step"})


def _trusted(cls: type[CanonicalModel], values: dict[str, Any], fields_set: frozenset[str]) -> Any:
    """The instance pydantic would build from `values`, for values the caller has just checked would pass
    validation unchanged: the pipeline builds ~20 decisions and evidence items per exception, and validating
    each again costs more than the stage logic that produced it. Callers fall back to the validating
    constructor for anything they did not check, so invalid input still fails exactly as before."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _setattr(obj, "__pydantic_fields_set__", set(fields_set))
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


def ev(kind: str, message: str, ref: str | None = None) -> Evidence:
    """Shorthand the stages use to cite a reason."""
    if type(kind) is str and type(message) is str and (ref is None or type(ref) is str):
        obj = _new(Evidence)
        _setattr(obj, "__dict__", {"kind": kind, "message": message, "ref": ref, "data": None})
        _setattr(obj, "__pydantic_fields_set__", set(_EVIDENCE_SET))
        _setattr(obj, "__pydantic_extra__", None)
        _setattr(obj, "__pydantic_private__", None)
        return obj
    return Evidence(kind=kind, message=message, ref=ref)


def decision(decision: str, confidence: float, evidence: tuple[Evidence, ...], next_step: str) -> AgentDecision:
    """`AgentDecision(...)` for the pipeline's hot path: same object, validated only where a check is needed."""
    if type(confidence) is int:
        confidence = float(confidence)
    if (
        type(decision) is str
        and type(next_step) is str
        and type(confidence) is float
        and 0.0 <= confidence <= 1.0
        and type(evidence) is tuple
    ):
        for e in evidence:
            if type(e) is not Evidence:
                break
        else:
            obj = _new(AgentDecision)
            _setattr(obj, "__dict__", {"decision": decision, "confidence": confidence, "evidence": evidence,
                                       "next_step": next_step})
            _setattr(obj, "__pydantic_fields_set__", set(_DECISION_SET))
            _setattr(obj, "__pydantic_extra__", None)
            _setattr(obj, "__pydantic_private__", None)
            return obj
    return AgentDecision(decision=decision, confidence=confidence, evidence=evidence, next_step=next_step)


_RECORD_SET = frozenset(
    {"exception_id", "tenant_id", "source_system", "exception_type", "timestamp", "raw_payload", "normalized_context"}
)


def _all_str_keys(d: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in d)


def new_record(
    exception_id: str,
    tenant_id: str,
    source_system: str,
    exception_type: str,
    timestamp: datetime,
    raw_payload: dict[str, Any],
    normalized_context: dict[str, Any],
) -> ExceptionRecord:
    """`ExceptionRecord(...)` for a freshly received exception, as intake builds it once per submission:
    values that already satisfy the model (lengths, UTC timestamp, string keys) are taken as they are;
    anything else goes through full validation and fails as it always did."""
    if (
        type(exception_id) is str
        and 0 < len(exception_id) <= 200
        and type(tenant_id) is str
        and 0 < len(tenant_id) <= 100
        and type(source_system) is str
        and 0 < len(source_system) <= 200
        and type(exception_type) is str
        and 0 < len(exception_type) <= 200
        and type(timestamp) is datetime
        and timestamp.tzinfo is UTC
        and type(raw_payload) is dict
        and type(normalized_context) is dict
        and _all_str_keys(raw_payload)
        and _all_str_keys(normalized_context)
    ):
        values = {
            "exception_id": exception_id,
            "tenant_id": tenant_id,
            "source_system": source_system,
            "exception_type": exception_type,
            "severity": None,
            "timestamp": timestamp,
            "raw_payload": dict(raw_payload),  # validation copies the mapping; so does this
            "normalized_context": dict(normalized_context),
            "detected_rules": (),
            "suggested_actions": (),
            "resolution_status": ResolutionStatus.RECEIVED,
            "audit_trail": (),
        }
        return _trusted(ExceptionRecord, values, _RECORD_SET)
    return ExceptionRecord(
        exception_id=exception_id,
        tenant_id=tenant_id,
        source_system=source_system,
        exception_type=exception_type,
        timestamp=timestamp,
        raw_payload=raw_payload,
        normalized_context=normalized_context,
    )
