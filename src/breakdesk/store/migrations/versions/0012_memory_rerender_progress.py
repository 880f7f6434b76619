"""Memory: save how far a re-rendering after a domain pack change has got.

The background indexer re-renders a tenant's cases after a pack change a bounded number per pass, going on
from the last case it checked. That position lived in the indexer's process only, so a restart walked every
case again, and nothing outside that process could tell how far the walk had got.
`memory_tenants.rerender_for` holds the `pack_rendering` a walk under way checks cases against and
`rerender_after` the last case id it checked; both are NULL when no walk is under way.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("memory_tenants", sa.Column("rerender_for", sa.String(32), nullable=True))
    op.add_column("memory_tenants", sa.Column("rerender_after", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("memory_tenants", "rerender_after")
    op.drop_column("memory_tenants", "rerender_for")
