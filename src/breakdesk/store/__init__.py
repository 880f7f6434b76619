"""Persistence: SQLAlchemy Core tables and repositories, packaged Alembic migrations, SQLite or PostgreSQL."""

from breakdesk.store.engine import DEFAULT_URL, URL_ENV, database_url, make_engine
from breakdesk.store.errors import Conflict, InvalidCursor, NotFound, StoreError
from breakdesk.store.exceptions import BatchLookup, BatchResult
from breakdesk.store.migrate import upgrade, upgrade_async
from breakdesk.store.records import (
    TERMINAL_STATUSES,
    Activation,
    AuditEntry,
    AuditRow,
    Enqueued,
    EventRow,
    ExceptionRow,
    ExceptionWrite,
    FingerprintStats,
    IntakeItem,
    PackVersion,
    QueueItem,
    Tenant,
)
from breakdesk.store.store import Store

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATUSES",
    "URL_ENV",
    "Activation",
    "AuditEntry",
    "AuditRow",
    "BatchLookup",
    "BatchResult",
    "Conflict",
    "Enqueued",
    "EventRow",
    "ExceptionRow",
    "ExceptionWrite",
    "FingerprintStats",
    "IntakeItem",
    "InvalidCursor",
    "NotFound",
    "PackVersion",
    "QueueItem",
    "Store",
    "StoreError",
    "Tenant",
    "database_url",
    "make_engine",
    "upgrade",
    "upgrade_async",
]
