"""Memory: remember what the domain pack said when a case was rendered.

A case's text and key fields come from its exception and from the domain pack: the type's description,
identifying fields and `similarity.keyFields`. A new pack version that changes those left every earlier case
as the old version rendered it, so searches compared new queries with old renderings. `memory_cases.rendering`
holds a digest of what the pack said about the case's type (`memory.text.type_rendering`), and
`memory_tenants.rendered_with` the digest of the whole pack the tenant's cases were last checked against, so
the background indexer re-renders exactly the cases a new version changes. Existing rows start at NULL and
are checked once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("memory_cases", sa.Column("rendering", sa.String(32), nullable=True))
    op.add_column("memory_tenants", sa.Column("rendered_with", sa.String(32), nullable=True))


def downgrade() -> None:
    # (plain ALTER TABLE ... DROP COLUMN, SQLite 3.35+: a batch copy of memory_cases would lose AUTOINCREMENT)
    op.drop_column("memory_tenants", "rendered_with")
    op.drop_column("memory_cases", "rendering")
