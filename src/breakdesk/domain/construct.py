"""Trusted constructors for the canonical models: the pipeline's hot path builds about twenty decisions and
evidence items per exception, and validating each again costs more than the stage logic that produced it.

Each constructor checks the values itself and builds the instance pydantic would build; anything it did not
check goes through the validating constructor and fails exactly as validation fails. Parameters are `Any` for
that reason: compiled (breakdesk.native), a narrower annotation would refuse a wrong type with a TypeError
before validation could explain it. A separate module from `models` because mypyc cannot compile pydantic
classes, and these functions are worth compiling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from breakdesk.domain.models import (
    DEFAULT_MESSAGE,
    AgentDecision,
    CanonicalModel,
    Evidence,
    ExceptionRecord,
    ResolutionStatus,
)

_new = object.__new__
_setattr = object.__setattr__
_EVIDENCE_SET = frozenset({"kind", "message", "ref"})
_EVIDENCE_DATA_SET = frozenset({"kind", "message", "ref", "data"})
_DECISION_SET = frozenset({"decision", "confidence", "evidence", "next_step"})


def _trusted(cls: type[CanonicalModel], values: dict[str, Any], fields_set: frozenset[str]) -> Any:
    """The instance pydantic would build from `values`, which the caller has just checked would pass
    validation unchanged."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _setattr(obj, "__pydantic_fields_set__", set(fields_set))
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


def ev(kind: Any, message: Any, ref: Any = None, data: Any = None) -> Evidence:
    """Shorthand the stages use to cite a reason."""
    if (
        type(kind) is str
        and type(message) is str
        and (ref is None or type(ref) is str)
        and (data is None or (type(data) is dict and all(type(k) is str for k in data)))
    ):
        return _trusted(Evidence, {"kind": kind, "message": message, "ref": ref, "data": data},
                        _EVIDENCE_SET if data is None else _EVIDENCE_DATA_SET)
    return Evidence(kind=kind, message=message, ref=ref, data=data)


def said_ev(kind: str, said: str | None, default: str, ref: str | None = None) -> Evidence:
    """What a person wrote with an action, as evidence; when they wrote nothing (or only spaces), `default`,
    marked (`DEFAULT_MESSAGE`) as text the system filled in, never read as their words (`memory.resolution`)."""
    if said and said.strip():
        return ev(kind, said, ref)
    return ev(kind, default, ref, {DEFAULT_MESSAGE: True})


def decision(decision: Any, confidence: Any, evidence: Any, next_step: Any) -> AgentDecision:
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
            return _trusted(AgentDecision, {"decision": decision, "confidence": confidence, "evidence": evidence,
                                            "next_step": next_step}, _DECISION_SET)
    return AgentDecision(decision=decision, confidence=confidence, evidence=evidence, next_step=next_step)


_RECORD_SET = frozenset(
    {"exception_id", "tenant_id", "source_system", "exception_type", "timestamp", "raw_payload", "normalized_context"}
)


def _all_str_keys(d: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in d)


def new_record(
    exception_id: Any,
    tenant_id: Any,
    source_system: Any,
    exception_type: Any,
    timestamp: Any,
    raw_payload: Any,
    normalized_context: Any,
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
