"""SQLAlchemy Core tables. Migration 0001 creates exactly this schema (a test compares the two).

Every table carries `tenant_id` and every index but the intake queue's cross-tenant claim index leads
with it, so each tenant's data is a contiguous index range and a query that forgot the tenant filter
would also be a slow one.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    Index("ix_exceptions_tenant_type", "tenant_id", "exception_type"),
    Index("ix_exceptions_tenant_severity", "tenant_id", "severity"),
    Index("ix_exceptions_tenant_fingerprint", "tenant_id", "fingerprint"),
    Index("ix_exceptions_tenant_received", "tenant_id", "received_at"),
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
