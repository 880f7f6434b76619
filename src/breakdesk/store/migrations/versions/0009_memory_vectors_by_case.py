"""Memory: index `memory_vectors` by the case row a vector was made from.

`pgvector_search` joins a tenant's vectors to their case rows (`c.id = v.case_id`) to apply the search's
filters. With no index on `case_id` a selective filter had two plans, both slow: walk the HNSW graph in distance
order, dropping vectors whose case fails the filter (a filter keeping 1% of a tenant's 100,000 cases: about
6,000 index entries read, 100 ms; and the walk ends at `hnsw.max_scan_tuples`, short of `limit` neighbours,
as filters grow more selective), or read every vector of every tenant (a 0.2% filter: 85 ms). With the index
the planner reads the cases that pass a selective filter and then their vectors, and ranks them exactly
(25 and 20 ms, most of it finding the cases); unselective filters and no filter keep the HNSW plan.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_memory_vectors_case_id", "memory_vectors", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_memory_vectors_case_id", table_name="memory_vectors")
