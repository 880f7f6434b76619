"""Memory: index the fingerprints of resolved cases only.

The fingerprint index of `memory_cases` served one query, the last resolution of each fingerprint, which
reads resolved cases only. Every exception the pipeline processes writes its case unresolved, so each insert
paid for a B-tree entry under a random fingerprint that no query would read: measured on SQLite, 5 of the
14 µs a case row costs. A case enters the partial index when it is replaced by its resolved version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

RESOLVED = sa.text("resolution IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_memory_cases_tenant_fingerprint", table_name="memory_cases")
    op.create_index("ix_memory_cases_resolved_fingerprint", "memory_cases", ["tenant_id", "fingerprint"],
                    sqlite_where=RESOLVED, postgresql_where=RESOLVED)


def downgrade() -> None:
    op.drop_index("ix_memory_cases_resolved_fingerprint", table_name="memory_cases")
    op.create_index("ix_memory_cases_tenant_fingerprint", "memory_cases", ["tenant_id", "fingerprint"])
