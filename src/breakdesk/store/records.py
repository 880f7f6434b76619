"""Plain data carried in and out of the store.

Dataclasses rather than ORM objects: the pipeline builds thousands of these per second and the store turns
them straight into Core `executemany` parameter lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from breakdesk.audit.chain import AuditEntry

PackKind = Literal["domain", "tenant"]
PACK_KINDS: tuple[str, ...] = ("domain", "tenant")

QueueState = Literal["PENDING", "DONE", "REJECTED"]

#: Statuses after which an exception no longer absorbs recurrences of its fingerprint.
TERMINAL_STATUSES: frozenset[str] = frozenset({"RESOLVED", "FAILED", "CLOSED"})


@dataclass(slots=True, kw_only=True)
class ExceptionRow:
    """The queryable projection of one exception; `record` holds the full canonical ExceptionRecord dict."""

    tenant_id: str
    exception_id: str
    source_system: str
    exception_type: str
    status: str
    received_at: datetime
    record: dict[str, Any]
    severity: str | None = None
    actionability: str | None = None
    playbook_id: str | None = None
    approval_required: bool = False
    confidence: float | None = None
    priority: float = 0.0
    fingerprint: str | None = None
    idempotency_key: str | None = None
    source_id: str | None = None
    recurrence_count: int = 0
    assignee: str | None = None
    domain_pack: str | None = None
    tenant_policy: str | None = None
    triaged_at: datetime | None = None
    resolved_at: datetime | None = None
    updated_at: datetime | None = None
    summary: str = ""


@dataclass(slots=True)
class EventRow:
    """One stage outcome for an exception; the store assigns `seq`."""

    exception_id: str
    stage: str
    at: datetime
    decision: dict[str, Any] | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    #: The canonical JSON text of (decision, payload) when the producer already encoded them (the pipeline
    #: does, for the events digest of its audit entry); the store writes it instead of encoding again.
    #: Must be `canonical_json` of the two fields, `decision` None when it is None.
    encoded: tuple[str | None, str] | None = None


@dataclass(slots=True)
class AuditRow:
    """One audit fact; the store assigns seq, prev_hash and hash when it extends the tenant's chain."""

    actor: str
    action: str
    subject: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ExceptionWrite:
    """Everything the pipeline learned about one submitted exception, written atomically with its batch.

    - `is_new=True`: insert `row`, then its events.
    - `recurrence_of=<id>`: `row` is not inserted; the existing exception's recurrence_count is incremented
      and the events are appended to it (its idempotency key is still remembered, so a resubmission dedupes).
    - `is_new=False` without `recurrence_of`: the existing exception `row.exception_id` takes `row`'s projection
      (recurrence_count excepted) and the events are appended — used when re-processing.
    """

    row: ExceptionRow
    events: list[EventRow] = field(default_factory=list)
    audits: list[AuditRow] = field(default_factory=list)
    is_new: bool = True
    recurrence_of: str | None = None

    @property
    def target_id(self) -> str:
        """The exception whose event stream this write extends."""
        return self.recurrence_of or self.row.exception_id


class FingerprintStats(NamedTuple):
    """How often a fingerprint was seen (`occurrences`, not `count`, which tuples already define)."""

    occurrences: int
    first_seen: datetime
    last_seen: datetime
    last_exception_id: str


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    created_at: datetime
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PackVersion:
    id: int
    tenant_id: str
    kind: str
    name: str
    version: str
    content: dict[str, Any]
    content_hash: str
    published_at: datetime
    published_by: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class Activation:
    id: int
    tenant_id: str
    kind: str
    name: str
    version: str
    activated_at: datetime
    activated_by: str
    action: str


@dataclass(slots=True)
class IntakeItem:
    """A raw submission accepted by an interface but not yet processed."""

    payload: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: int
    idempotency_key: str | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    tenant_id: str
    received_at: datetime
    idempotency_key: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    error: str | None


__all__ = [
    "PACK_KINDS",
    "TERMINAL_STATUSES",
    "Activation",
    "AuditEntry",
    "AuditRow",
    "Enqueued",
    "EventRow",
    "ExceptionRow",
    "ExceptionWrite",
    "FingerprintStats",
    "IntakeItem",
    "PackKind",
    "PackVersion",
    "QueueItem",
    "QueueState",
    "Tenant",
]


def unaudited_change(exception_id: str, fields: Mapping[str, Any] | None, audits: Sequence[AuditRow]) -> str | None:
    """Why a write may not change these fields without more audit entries, or None. Every change of an
    exception's status or severity is in the tenant's chain, which the memory's indexer follows: a write
    that would change one silently is a bug, refused by every store path that changes exceptions."""
    if fields and ("status" in fields or "severity" in fields) and not any(
            a.subject == exception_id for a in audits):
        return f"exception {exception_id!r}: a status or severity change needs an audit entry"
    return None
