"""The HTTP API: API keys, failed authentications, replayable idempotent requests, list indexes.

- `api_keys`: argon2 hashes of API key secrets with their tenant and role (platform keys have no tenant).
- `auth_failures`: every rejected credential, without the secret, for the tenant's admins and the platform.
- `api_idempotency`: the response of each request sent with an `Idempotency-Key`, to replay it verbatim.
- a partial index over human severity-override events, for the override-rate KPI;
- exception list indexes: each filter column followed by the sort key and the id tie-break, so a filtered,
  sorted page is a single index range scan; the single-column type/severity/received indexes they cover go.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_NEW_INDEXES: tuple[tuple[str, list[str]], ...] = (
    ("ix_exceptions_tenant_received_id", ["tenant_id", "received_at", "exception_id"]),
    ("ix_exceptions_tenant_type_received", ["tenant_id", "exception_type", "received_at", "exception_id"]),
    ("ix_exceptions_tenant_severity_received", ["tenant_id", "severity", "received_at", "exception_id"]),
    ("ix_exceptions_tenant_source_received", ["tenant_id", "source_system", "received_at", "exception_id"]),
    ("ix_exceptions_tenant_updated", ["tenant_id", "updated_at", "exception_id"]),
    ("ix_exceptions_tenant_priority", ["tenant_id", "priority", "exception_id"]),
)
#: Human severity overrides (the override-rate KPI); partial, so the pipeline's own events cost nothing.
_OVERRIDE = "stage = 'human.override'"
_OLD_INDEXES: tuple[tuple[str, list[str]], ...] = (
    ("ix_exceptions_tenant_type", ["tenant_id", "exception_type"]),
    ("ix_exceptions_tenant_severity", ["tenant_id", "severity"]),
    ("ix_exceptions_tenant_received", ["tenant_id", "received_at"]),
)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_api_keys_tenant"),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'approver', 'admin', 'platform-admin')", name="ck_api_keys_role"
        ),
        sa.CheckConstraint("(tenant_id IS NULL) = (role = 'platform-admin')", name="ck_api_keys_platform"),
    )
    op.create_index("ix_api_keys_tenant_created", "api_keys", ["tenant_id", "created_at"])

    op.create_table(
        "auth_failures",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("credential", sa.String(120), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_auth_failures"),
    )
    op.create_index("ix_auth_failures_tenant_id", "auth_failures", ["tenant_id", "id"])

    op.create_table(
        "api_idempotency",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", DOC, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "idempotency_key", name="pk_api_idempotency"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_api_idempotency_tenant"),
    )

    for name, columns in _NEW_INDEXES:
        op.create_index(name, "exceptions", columns)
    for name, _ in _OLD_INDEXES:
        op.drop_index(name, table_name="exceptions")
    op.create_index(
        "ix_exception_events_tenant_override",
        "exception_events",
        ["tenant_id", "exception_id"],
        sqlite_where=sa.text(_OVERRIDE),
        postgresql_where=sa.text(_OVERRIDE),
    )


def downgrade() -> None:
    op.drop_index("ix_exception_events_tenant_override", table_name="exception_events")
    for name, columns in _OLD_INDEXES:
        op.create_index(name, "exceptions", columns)
    for name, _ in _NEW_INDEXES:
        op.drop_index(name, table_name="exceptions")
    op.drop_table("api_idempotency")
    op.drop_table("auth_failures")
    op.drop_table("api_keys")
