"""Memory: ids of `memory_cases` and `memory_vectors` are never reused (SQLite).

Every reader of these tables follows them with `id > last seen`: the resident indexes, the background
indexer's embedding watermark, the resident vectors. A changed case is replaced (delete + insert) so that it
reappears with a larger id. On SQLite a plain `INTEGER PRIMARY KEY` gives a new row the largest id *in the
table* plus one, so replacing the latest case (or re-embedding the latest vector) handed its own id back to
it, and every reader that had seen that id missed the change for good. `AUTOINCREMENT` makes SQLite issue ids
larger than any it ever issued. SQLite cannot add it to a table in place: both tables are rebuilt, rows and
ids kept. PostgreSQL's identity columns never reuse ids: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
RESOLVED = sa.text("resolution IS NOT NULL")


def _cases(name: str, autoincrement: bool) -> sa.Table:
    return op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("exception_type", sa.String(200), nullable=False),
        sa.Column("source_system", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(200)),
        sa.Column("fingerprint", sa.String(128)),
        sa.Column("entities", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("resolution", sa.JSON(none_as_null=True)),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("resolved_at", TS),
        sa.Column("indexed_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_memory_cases_tenant"),
        sa.UniqueConstraint("tenant_id", "exception_id", name="uq_memory_cases_tenant_exception"),
        sqlite_autoincrement=autoincrement,
    )


def _vectors(name: str, autoincrement: bool) -> sa.Table:
    return op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("exception_id", sa.String(200), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("embedded_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_memory_vectors_tenant"),
        sa.UniqueConstraint("tenant_id", "exception_id", "model", name="uq_memory_vectors_tenant_exception_model"),
        sqlite_autoincrement=autoincrement,
    )


def _rebuild(autoincrement: bool) -> None:
    """(SQLite) Copy both tables into new ones declared with (or without) AUTOINCREMENT, ids included, and put their
    indexes back. The sequence starts past the largest id copied."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, table, indexes in (
        ("memory_cases", _cases, [("ix_memory_cases_tenant_id", ["tenant_id", "id"], None),
                                  ("ix_memory_cases_resolved_fingerprint", ["tenant_id", "fingerprint"], RESOLVED)]),
        ("memory_vectors", _vectors, [("ix_memory_vectors_tenant_model_id", ["tenant_id", "model", "id"], None)]),
    ):
        new = table(f"{name}_rebuilt", autoincrement)
        columns = ", ".join(c.name for c in new.columns)
        op.execute(f"INSERT INTO {new.name} ({columns}) SELECT {columns} FROM {name} ORDER BY id")
        op.drop_table(name)
        op.rename_table(new.name, name)
        for index, cols, where in indexes:
            op.create_index(index, name, cols, sqlite_where=where)

def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
