"""Memory: the background indexer follows the tenant's audit chain, not `exceptions.updated_at`.

Its scan position was a keyset on (updated_at, exception_id). Writers stamp `updated_at` before they take the
tenant's write lock (a pipeline batch at its start, an execution run at its own clock), so a change stamped
earlier could commit after a pass had moved past its stamp, and was never looked at again: a resolution
never rendered into its case, a batch whose memory had failed never indexed. Every change to an exception
appends to the tenant's audit chain in its own transaction, under that lock, so audit sequence numbers are
issued in commit order: the position is now the last audit `seq` looked at. Every tenant starts again from
the beginning of its chain, so changes the old keyset had skipped are found; the replay re-renders only the
cases that differ from their exception (`breakdesk.memory.indexer._stale`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("memory_tenants") as t:
        t.add_column(sa.Column("scanned_seq", BIG, nullable=False, server_default="0"))
        t.drop_column("scanned_at")
        t.drop_column("scanned_id")


def downgrade() -> None:
    with op.batch_alter_table("memory_tenants") as t:
        t.add_column(sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("scanned_id", sa.String(200), nullable=True))
        t.drop_column("scanned_seq")
