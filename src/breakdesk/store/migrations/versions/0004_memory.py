"""Similar-case memory.

- `memory_cases`: one row per processed exception (its text rendering, key entity ids, resolution once
  resolved), written in the same transaction as the exception; replaced (delete + insert) when it changes, so
  ids only grow and every process follows the index with `id > last seen`.
- `memory_vectors`: embeddings written off the hot path by the background indexer (float32 bytes on SQLite,
  real[] on PostgreSQL, which pgvector casts to `vector` when the extension is installed).
- `memory_tenants`: the indexer's per-tenant progress, so a restart resumes where it stopped.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
DOC = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EMBEDDING = sa.LargeBinary().with_variant(postgresql.ARRAY(postgresql.REAL()), "postgresql")


def _tenant_fk(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name=name)


def upgrade() -> None:
    op.create_table(
        "memory_cases",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("exception_type", sa.String(200), nullable=False),
        sa.Column("source_system", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(200), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("entities", DOC, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("resolution", DOC, nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("indexed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memory_cases"),
        _tenant_fk("fk_memory_cases_tenant"),
        sa.UniqueConstraint("tenant_id", "exception_id", name="uq_memory_cases_tenant_exception"),
    )
    op.create_index("ix_memory_cases_tenant_id", "memory_cases", ["tenant_id", "id"])
    op.create_index("ix_memory_cases_tenant_fingerprint", "memory_cases", ["tenant_id", "fingerprint"])

    op.create_table(
        "memory_vectors",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("case_id", BIG_ID, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", EMBEDDING, nullable=False),
        sa.Column("embedded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memory_vectors"),
        _tenant_fk("fk_memory_vectors_tenant"),
        sa.UniqueConstraint(
            "tenant_id", "exception_id", "model", name="uq_memory_vectors_tenant_exception_model"
        ),
    )
    op.create_index("ix_memory_vectors_tenant_model_id", "memory_vectors", ["tenant_id", "model", "id"])

    op.create_table(
        "memory_tenants",
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("scanned_at", TS, nullable=True),
        sa.Column("scanned_id", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("embedded_upto", BIG_ID, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_memory_tenants"),
        _tenant_fk("fk_memory_tenants_tenant"),
    )


def downgrade() -> None:
    op.drop_table("memory_tenants")
    op.drop_table("memory_vectors")
    op.drop_table("memory_cases")
