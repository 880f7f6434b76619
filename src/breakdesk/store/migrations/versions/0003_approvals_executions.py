"""Approvals and tool executions.

- `approvals`: human approval requests (per exception plan or per step), their votes, edits and decision;
  a partial unique index allows one PENDING request per scope, and a cross-tenant (status, expires_at) index
  serves the TTL scheduler.
- `executions`: one row per step decision and per HTTP attempt of a playbook run, written before the run
  moves on, so a restarted worker resumes at the first unsettled step and never re-sends a completed call.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_PENDING = "status = 'PENDING'"


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("step_id", sa.String(200), nullable=True),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan", DOC, nullable=False),
        sa.Column("evidence", DOC, nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("allowed_roles", DOC, nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=False),
        sa.Column("approvers", DOC, nullable=False),
        sa.Column("edits", DOC, nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "approval_id", name="pk_approvals"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_approvals_tenant"),
        sa.CheckConstraint(
            "status IN ('PENDING', 'APPROVED', 'REJECTED', 'EXPIRED')", name="ck_approvals_status"
        ),
    )
    op.create_index(
        "ix_approvals_tenant_status_requested", "approvals", ["tenant_id", "status", "requested_at"]
    )
    op.create_index("ix_approvals_tenant_exception", "approvals", ["tenant_id", "exception_id"])
    op.create_index("ix_approvals_status_expires", "approvals", ["status", "expires_at"])
    op.create_index(
        "ux_approvals_pending_scope",
        "approvals",
        ["tenant_id", "exception_id", "scope"],
        unique=True,
        sqlite_where=sa.text(_PENDING),
        postgresql_where=sa.text(_PENDING),
    )

    op.create_table(
        "executions",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(200), nullable=False),
        sa.Column("tool", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=True),
        sa.Column("args", DOC, nullable=True),
        sa.Column("output", DOC, nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("deadline", TS, nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "exception_id", "step_index", "phase", "attempt", name="pk_executions"
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_executions_tenant"),
        sa.CheckConstraint(
            "status IN ('STARTED', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'MANUAL', 'NEEDS_APPROVAL', 'UNKNOWN')",
            name="ck_executions_status",
        ),
        sa.CheckConstraint("phase IN ('step', 'compensate')", name="ck_executions_phase"),
    )
    op.create_index("ix_executions_tenant_started", "executions", ["tenant_id", "started_at"])


def downgrade() -> None:
    op.drop_table("executions")
    op.drop_table("approvals")
