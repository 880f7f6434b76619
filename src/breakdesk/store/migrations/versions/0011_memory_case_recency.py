"""Memory: a re-rendered case keeps its place in the tenant's recency order.

Triage looks for similar cases among the tenant's latest cases (the memory's triage window). A case row's id
said how recent it was, but re-rendering a case after a domain pack change writes a new row (ids only grow,
so every process can follow the index), which made every re-rendered old case look brand new and pushed the
latest cases out of the window. `memory_cases.recency` holds the id of the row whose place a re-rendered row
keeps; NULL (every other row, and every existing one) means its own id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("memory_cases", sa.Column("recency", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # (plain ALTER TABLE ... DROP COLUMN, SQLite 3.35+: a batch copy of memory_cases would lose AUTOINCREMENT)
    op.drop_column("memory_cases", "recency")
