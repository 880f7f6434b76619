"""Canonical models shared by every layer. Depends on nothing else in Breakdesk."""

from breakdesk.domain.models import (
    Actionability,
    AgentDecision,
    AuditTrailEntry,
    Evidence,
    ExceptionRecord,
    ResolutionStatus,
    Severity,
)

__all__ = [
    "Actionability",
    "AgentDecision",
    "AuditTrailEntry",
    "Evidence",
    "ExceptionRecord",
    "ResolutionStatus",
    "Severity",
]
