"""SQLAlchemy Core tables. Migrations 0001-0006 create exactly this schema (a test compares the two).

Every table carries `tenant_id` and every index but the intake queue's cross-tenant claim index leads
with it, so each tenant's data is a contiguous index range and a query that forgot the tenant filter
would also be a slow one. The API's credential tables are the deliberate exception: an API key is looked
up by its own id before anyone knows the tenant, and platform keys and some failed logins have no tenant.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, REAL

from breakdesk.store.types import BigId, Document, ExactJSON, UTCDateTime

#: Unnamed primary keys get the same names the migration gives them.
metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s"})

TENANT = 100
EXC_ID = 200
KEY = 300

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(TENANT), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settings", Document, nullable=False),
)

pack_versions = Table(
    "pack_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_pack_versions_tenant"),
        nullable=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("content", Document, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    Column("published_by", String(200), nullable=False),
    UniqueConstraint(
        "tenant_id", "kind", "name", "version", name="uq_pack_versions_tenant_kind_name_version"
    ),
    CheckConstraint("kind IN ('domain', 'tenant')", name="ck_pack_versions_kind"),
)

pack_activations = Table(
    "pack_activations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("activated_at", UTCDateTime, nullable=False),
    Column("activated_by", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    ForeignKeyConstraint(
        ["tenant_id", "kind", "name", "version"],
        ["pack_versions.tenant_id", "pack_versions.kind", "pack_versions.name", "pack_versions.version"],
        name="fk_pack_activations_version",
    ),
    CheckConstraint("action IN ('activate', 'rollback')", name="ck_pack_activations_action"),
    Index("ix_pack_activations_tenant_kind_id", "tenant_id", "kind", "id"),
)

exceptions = Table(
    "exceptions",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_exceptions_tenant"),
        nullable=False,
    ),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("source_system", String(200), nullable=False),
    Column("exception_type", String(200), nullable=False),
    Column("severity", String(16)),
    Column("status", String(32), nullable=False),
    Column("actionability", String(64)),
    Column("playbook_id", String(200)),
    Column("approval_required", Boolean, nullable=False),
    Column("confidence", Float),
    Column("priority", Float, nullable=False),
    Column("fingerprint", String(128)),
    Column("idempotency_key", String(KEY)),
    Column("source_id", String(KEY)),
    Column("recurrence_count", Integer, nullable=False),
    Column("assignee", String(200)),
    Column("domain_pack", String(320)),
    Column("tenant_policy", String(220)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("triaged_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("record", Document, nullable=False),
    Column("summary", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "exception_id", name="pk_exceptions"),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_exceptions_tenant_idempotency_key"),
    Index("ix_exceptions_tenant_status_received", "tenant_id", "status", "received_at"),
    Index("ix_exceptions_tenant_fingerprint", "tenant_id", "fingerprint"),
    # 0002: every list filter is paired with the list's sort key and its exception_id tie-break, so a
    # filtered, sorted page is one index range scan that stops after `limit` rows.
    Index("ix_exceptions_tenant_received_id", "tenant_id", "received_at", "exception_id"),
    Index("ix_exceptions_tenant_type_received", "tenant_id", "exception_type", "received_at", "exception_id"),
    Index("ix_exceptions_tenant_severity_received", "tenant_id", "severity", "received_at", "exception_id"),
    Index("ix_exceptions_tenant_source_received", "tenant_id", "source_system", "received_at", "exception_id"),
    Index("ix_exceptions_tenant_updated", "tenant_id", "updated_at", "exception_id"),
    Index("ix_exceptions_tenant_priority", "tenant_id", "priority", "exception_id"),
)

exception_events = Table(
    "exception_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("stage", String(50), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("decision", Document),
    Column("payload", Document, nullable=False),
    UniqueConstraint("tenant_id", "exception_id", "seq", name="uq_exception_events_tenant_exception_seq"),
    # 0002: human severity overrides, for the override-rate KPI; partial, so pipeline events cost nothing.
    Index(
        "ix_exception_events_tenant_override",
        "tenant_id",
        "exception_id",
        sqlite_where=text("stage = 'human.override'"),
        postgresql_where=text("stage = 'human.override'"),
    ),
    # No foreign key to `exceptions`: the store only appends events to an exception it has just inserted or
    # found in the same transaction. On PostgreSQL the per-row RI check against this fast-growing parent
    # can keep a sequential-scan plan cached from when the table was empty (measured: 10x slower batches).
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_audit_heads_tenant"),
        primary_key=True,
    ),
    Column("seq", BigId, nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("audit_heads.tenant_id", name="fk_audit_entries_head"),
        nullable=False,
    ),
    Column("seq", BigId, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(KEY), nullable=False),
    Column("detail", ExactJSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("tenant_id", "seq", name="pk_audit_entries"),
    Index("ix_audit_entries_tenant_subject_seq", "tenant_id", "subject", "seq"),
)

fingerprints = Table(
    "fingerprints",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_fingerprints_tenant"),
        nullable=False,
    ),
    Column("fingerprint", String(128), nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("open_exception_id", String(EXC_ID)),
    Column("last_exception_id", String(EXC_ID), nullable=False),
    PrimaryKeyConstraint("tenant_id", "fingerprint", name="pk_fingerprints"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_idempotency_keys_tenant"),
        nullable=False,
    ),
    Column("idempotency_key", String(KEY), nullable=False),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "idempotency_key", name="pk_idempotency_keys"),
)

intake_queue = Table(
    "intake_queue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_intake_queue_tenant"),
        nullable=False,
    ),
    Column("received_at", UTCDateTime, nullable=False),
    Column("idempotency_key", String(KEY)),
    Column("payload", Document, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("lease_until", UTCDateTime),
    Column("processed_at", UTCDateTime),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_intake_queue_tenant_idempotency_key"),
    CheckConstraint("state IN ('PENDING', 'DONE', 'REJECTED')", name="ck_intake_queue_state"),
    Index("ix_intake_queue_state_id", "state", "id"),
    Index("ix_intake_queue_tenant_state", "tenant_id", "state"),
)

# ---------------------------------------------------------------------------------------- 0002: the HTTP API

ROLE = 32

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    # NULL only for platform-admin keys, which belong to no tenant.
    Column("tenant_id", String(TENANT), ForeignKey("tenants.tenant_id", name="fk_api_keys_tenant")),
    Column("role", String(ROLE), nullable=False),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(200)),
    Column("last_used_at", UTCDateTime),
    CheckConstraint(
        "role IN ('viewer', 'operator', 'approver', 'admin', 'platform-admin')", name="ck_api_keys_role"
    ),
    CheckConstraint("(tenant_id IS NULL) = (role = 'platform-admin')", name="ck_api_keys_platform"),
    Index("ix_api_keys_tenant_created", "tenant_id", "created_at"),
)

auth_failures = Table(
    "auth_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # The tenant the credential belongs to or the request targeted; NULL when neither is known. No foreign
    # key: recording a failure must never fail, whatever tenant id a caller made up.
    Column("tenant_id", String(TENANT)),
    Column("at", UTCDateTime, nullable=False),
    Column("credential", String(120), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", String(KEY), nullable=False),
    Column("client", String(100), nullable=False),
    Index("ix_auth_failures_tenant_id", "tenant_id", "id"),
)

api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_api_idempotency_tenant"),
        nullable=False,
    ),
    Column("idempotency_key", String(KEY), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Document, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "idempotency_key", name="pk_api_idempotency"),
)

# ------------------------------------------------------------------- 0003: approvals and tool executions

APPROVAL_ID = 40

approvals = Table(
    "approvals",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_approvals_tenant"),
        nullable=False,
    ),
    Column("approval_id", String(APPROVAL_ID), nullable=False),
    Column("exception_id", String(EXC_ID), nullable=False),
    # NULL: the request covers the whole plan; otherwise the one step that pauses for a person.
    Column("step_index", Integer),
    Column("step_id", String(200)),
    # "plan" or "step:<index>": at most one PENDING request per scope (partial unique index below).
    Column("scope", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("plan", Document, nullable=False),
    Column("evidence", Document, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("allowed_roles", Document, nullable=False),
    Column("approvals_needed", Integer, nullable=False),
    Column("approvers", Document, nullable=False),
    Column("edits", Document),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Column("decided_by", String(200)),
    Column("comment", Text),
    PrimaryKeyConstraint("tenant_id", "approval_id", name="pk_approvals"),
    CheckConstraint(
        "status IN ('PENDING', 'APPROVED', 'REJECTED', 'EXPIRED')", name="ck_approvals_status"
    ),
    Index("ix_approvals_tenant_status_requested", "tenant_id", "status", "requested_at"),
    Index("ix_approvals_tenant_exception", "tenant_id", "exception_id"),
    # Cross-tenant, like the intake queue's claim index: the TTL scheduler scans every tenant's due requests.
    Index("ix_approvals_status_expires", "status", "expires_at"),
    Index(
        "ux_approvals_pending_scope",
        "tenant_id",
        "exception_id",
        "scope",
        unique=True,
        sqlite_where=text("status = 'PENDING'"),
        postgresql_where=text("status = 'PENDING'"),
    ),
)

executions = Table(
    "executions",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_executions_tenant"),
        nullable=False,
    ),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("step_index", Integer, nullable=False),
    # "step" (the playbook step itself) or "compensate" (its compensation tool).
    Column("phase", String(16), nullable=False),
    # 0: the step's decision without a call (SKIPPED, MANUAL, NEEDS_APPROVAL, refused); 1..n: HTTP attempts.
    Column("attempt", Integer, nullable=False),
    Column("step_id", String(200), nullable=False),
    Column("tool", String(200)),
    Column("status", String(16), nullable=False),
    # The row that settles the step (its last attempt, or its decision): resume skips settled steps.
    Column("final", Boolean, nullable=False),
    Column("idempotency_key", String(KEY)),
    Column("args", Document),
    Column("output", Document),
    Column("status_code", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # STARTED rows only: after this instant a runner that has not settled the attempt is presumed dead.
    Column("deadline", UTCDateTime),
    PrimaryKeyConstraint("tenant_id", "exception_id", "step_index", "phase", "attempt", name="pk_executions"),
    CheckConstraint(
        "status IN ('STARTED', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'MANUAL', 'NEEDS_APPROVAL', 'UNKNOWN')",
        name="ck_executions_status",
    ),
    CheckConstraint("phase IN ('step', 'compensate')", name="ck_executions_phase"),
    Index("ix_executions_tenant_started", "tenant_id", "started_at"),
)

# ---------------------------------------------------------------------------- 0004: similar-case memory

#: Embeddings: little-endian float32 bytes on SQLite; real[] on PostgreSQL, which pgvector casts to `vector`.
Embedding = LargeBinary().with_variant(ARRAY(REAL), "postgresql")

#: The predicate of `memory_cases`' partial index on fingerprints (and of the query that uses it).
RESOLVED_CASE = text("resolution IS NOT NULL")

memory_cases = Table(
    "memory_cases",
    metadata,
    # Replacing a case (new status, resolution) deletes and re-inserts it: ids only grow, so every process
    # follows the index by reading `id > last seen`.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_memory_cases_tenant"),
        nullable=False,
    ),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("exception_type", String(200), nullable=False),
    Column("source_system", String(200), nullable=False),
    Column("severity", String(16)),
    Column("status", String(32), nullable=False),
    Column("domain", String(200)),
    Column("fingerprint", String(128)),
    # Key entity ids ("orderId": "ORD-1"): structured boosts and the "why similar" explanation.
    Column("entities", Document, nullable=False),
    # The text rendering: type description, salient payload fields, messages, and the resolution once resolved.
    Column("body", Text, nullable=False),
    # Resolution summary (playbook, steps and outcomes, human comments) once the exception is resolved.
    Column("resolution", Document),
    Column("received_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("indexed_at", UTCDateTime, nullable=False),
    # What the domain pack said about the case's type when it was rendered (`memory.text.type_rendering`):
    # after a new pack version, the indexer re-renders the cases whose value differs. NULL: before 0010.
    Column("rendering", String(32)),
    # The id of the row whose place in the tenant's recency order this row keeps (triage's window of latest
    # cases): a re-rendered case is no newer than before. NULL: its own id (every other write).
    Column("recency", BigInteger),
    UniqueConstraint("tenant_id", "exception_id", name="uq_memory_cases_tenant_exception"),
    Index("ix_memory_cases_tenant_id", "tenant_id", "id"),
    # Resolved cases only (partial): the one query by fingerprint asks for the last resolution of each
    # (`last_resolutions`), and every exception the pipeline writes arrives unresolved, so keeping its random
    # fingerprint out of this B-tree saves about a third of its row's insert (measured on SQLite 5 of 14 µs).
    Index("ix_memory_cases_resolved_fingerprint", "tenant_id", "fingerprint",
          sqlite_where=RESOLVED_CASE, postgresql_where=RESOLVED_CASE),
    # SQLite gives a plain rowid table's new row the largest id in it plus one: replacing the latest case
    # would hand its own id back to it, and readers following `id > last seen` would miss the change.
    sqlite_autoincrement=True,
)

memory_vectors = Table(
    "memory_vectors",
    metadata,
    # Append-only like memory_cases: a re-embedded case gets a new row, so readers follow `id > last seen`.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_memory_vectors_tenant"),
        nullable=False,
    ),
    Column("exception_id", String(EXC_ID), nullable=False),
    Column("case_id", BigId, nullable=False),  # the memory_cases row (the text version) that was embedded
    Column("model", String(200), nullable=False),
    Column("dims", Integer, nullable=False),
    Column("vector", Embedding, nullable=False),
    Column("embedded_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "exception_id", "model", name="uq_memory_vectors_tenant_exception_model"),
    Index("ix_memory_vectors_tenant_model_id", "tenant_id", "model", "id"),
    # The vectors of given cases: pgvector_search under a selective filter reads the few cases that pass it and
    # their vectors, exactly, instead of walking the HNSW graph through thousands of cases that do not pass.
    Index("ix_memory_vectors_case_id", "case_id"),
    sqlite_autoincrement=True,  # as memory_cases: a re-embedded latest vector must not get its old id back
)

memory_tenants = Table(
    "memory_tenants",
    metadata,
    Column(
        "tenant_id",
        String(TENANT),
        ForeignKey("tenants.tenant_id", name="fk_memory_tenants_tenant"),
        primary_key=True,
    ),
    # The background indexer's progress, so a restart resumes where it stopped: the last entry of the
    # tenant's audit chain it looked at (every change to an exception appends one, in commit order) ...
    Column("scanned_seq", BigId, nullable=False, server_default="0"),
    # ... and, for the embedding model in use, the highest memory_cases.id embedded.
    Column("model", String(200)),
    Column("embedded_upto", BigId, nullable=False),
    # ... and the domain pack (`memory.text.pack_rendering`) every case was last checked against.
    Column("rendered_with", String(32)),
    # ... and while a re-rendering after a pack change is under way, the pack it checks cases against and the
    # last case id it checked (NULL otherwise): the next pass, in this process or another, goes on from there.
    Column("rerender_for", String(32)),
    Column("rerender_after", BigInteger),
    Column("updated_at", UTCDateTime, nullable=False),
)
