"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


@overload
def aware_utc(value: datetime) -> datetime: ...
@overload
def aware_utc(value: None) -> None: ...
def aware_utc(value: datetime | None) -> datetime | None:
    """A datetime as the store gives it back: aware UTC (a naive one is UTC)."""
    if value is None or value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out.

    SQLite has no time zones, so values are stored as naive UTC in SQLAlchemy's fixed-width text format,
    which sorts correctly; naive inputs are taken to be UTC, as `parse_timestamp` does at intake.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            # Hot path of every batch write: produce SQLAlchemy's SQLite storage format in one C call
            # instead of process_bind_param followed by the DATETIME type's own %-formatting.
            return _sqlite_text
        if dialect.name == "postgresql" and self.impl.dialect_impl(dialect).bind_processor(dialect) is None:
            # asyncpg takes aware datetimes as they are: skip the TypeDecorator's wrapper
            return aware_utc
        return super().bind_processor(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL projections on SQLite bypass the DATETIME type
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Document columns: JSONB on PostgreSQL (indexable), JSON text on SQLite; Python None is SQL NULL.
Document = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

#: Audit detail stays plain JSON text everywhere: the bytes that were hashed must come back unchanged
#: (JSONB would renormalise numbers such as 1e300).
ExactJSON = JSON(none_as_null=True)

#: 64-bit ids that are still SQLite rowid aliases (only INTEGER PRIMARY KEY autoincrements there).
BigId = BigInteger().with_variant(Integer(), "sqlite")
