"""Initial schema: tenants, packs, exceptions and their events, audit chain, fingerprints, intake queue.

Hand-written on purpose: the schema is a contract between versions, so it is spelled out here rather than
derived from the current table definitions (tests check that the two agree).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
EXACT_JSON = sa.JSON(none_as_null=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tenant_fk(name: str, target: str = "tenants") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant_id"], [f"{target}.tenant_id"], name=name)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("settings", DOC, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenants"),
    )

    op.create_table(
        "pack_versions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("content", DOC, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("published_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pack_versions"),
        _tenant_fk("fk_pack_versions_tenant"),
        sa.UniqueConstraint(
            "tenant_id", "kind", "name", "version", name="uq_pack_versions_tenant_kind_name_version"
        ),
        sa.CheckConstraint("kind IN ('domain', 'tenant')", name="ck_pack_versions_kind"),
    )

    op.create_table(
        "pack_activations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("activated_at", TS, nullable=False),
        sa.Column("activated_by", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pack_activations"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "kind", "name", "version"],
            ["pack_versions.tenant_id", "pack_versions.kind", "pack_versions.name", "pack_versions.version"],
            name="fk_pack_activations_version",
        ),
        sa.CheckConstraint("action IN ('activate', 'rollback')", name="ck_pack_activations_action"),
    )
    op.create_index("ix_pack_activations_tenant_kind_id", "pack_activations", ["tenant_id", "kind", "id"])

    op.create_table(
        "exceptions",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("source_system", sa.String(200), nullable=False),
        sa.Column("exception_type", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("actionability", sa.String(64), nullable=True),
        sa.Column("playbook_id", sa.String(200), nullable=True),
        sa.Column("approval_required", sa.Boolean(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("idempotency_key", sa.String(300), nullable=True),
        sa.Column("source_id", sa.String(300), nullable=True),
        sa.Column("recurrence_count", sa.Integer(), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("domain_pack", sa.String(320), nullable=True),
        sa.Column("tenant_policy", sa.String(220), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("triaged_at", TS, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("record", DOC, nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "exception_id", name="pk_exceptions"),
        _tenant_fk("fk_exceptions_tenant"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_exceptions_tenant_idempotency_key"),
    )
    op.create_index(
        "ix_exceptions_tenant_status_received", "exceptions", ["tenant_id", "status", "received_at"]
    )
    op.create_index("ix_exceptions_tenant_type", "exceptions", ["tenant_id", "exception_type"])
    op.create_index("ix_exceptions_tenant_severity", "exceptions", ["tenant_id", "severity"])
    op.create_index("ix_exceptions_tenant_fingerprint", "exceptions", ["tenant_id", "fingerprint"])
    op.create_index("ix_exceptions_tenant_received", "exceptions", ["tenant_id", "received_at"])

    op.create_table(
        "exception_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("decision", DOC, nullable=True),
        sa.Column("payload", DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exception_events"),
        sa.UniqueConstraint(
            "tenant_id", "exception_id", "seq", name="uq_exception_events_tenant_exception_seq"
        ),
        # Deliberately no foreign key to exceptions: see the note in breakdesk.store.tables.
    )

    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("seq", BIG_ID, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_heads"),
        _tenant_fk("fk_audit_heads_tenant"),
    )

    op.create_table(
        "audit_entries",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("seq", BIG_ID, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("detail", EXACT_JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_audit_entries"),
        _tenant_fk("fk_audit_entries_head", "audit_heads"),
    )
    op.create_index("ix_audit_entries_tenant_subject_seq", "audit_entries", ["tenant_id", "subject", "seq"])

    op.create_table(
        "fingerprints",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("open_exception_id", sa.String(200), nullable=True),
        sa.Column("last_exception_id", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "fingerprint", name="pk_fingerprints"),
        _tenant_fk("fk_fingerprints_tenant"),
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "idempotency_key", name="pk_idempotency_keys"),
        _tenant_fk("fk_idempotency_keys_tenant"),
    )

    op.create_table(
        "intake_queue",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=True),
        sa.Column("payload", DOC, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("processed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_queue"),
        _tenant_fk("fk_intake_queue_tenant"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_intake_queue_tenant_idempotency_key"),
        sa.CheckConstraint("state IN ('PENDING', 'DONE', 'REJECTED')", name="ck_intake_queue_state"),
    )
    op.create_index("ix_intake_queue_state_id", "intake_queue", ["state", "id"])
    op.create_index("ix_intake_queue_tenant_state", "intake_queue", ["tenant_id", "state"])


def downgrade() -> None:
    for table in (
        "intake_queue",
        "idempotency_keys",
        "fingerprints",
        "audit_entries",
        "audit_heads",
        "exception_events",
        "exceptions",
        "pack_activations",
        "pack_versions",
        "tenants",
    ):
        op.drop_table(table)
