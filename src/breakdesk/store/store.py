"""The `Store` facade: one object owning the engine, composed of tenant-scoped repositories."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from breakdesk.store._base import translate
from breakdesk.store.apikeys import ApiAccessRepo
from breakdesk.store.approvals import ApprovalRepo
from breakdesk.store.auditlog import AuditRepo
from breakdesk.store.cases import CaseRepo
from breakdesk.store.engine import database_url, make_engine
from breakdesk.store.errors import StoreError
from breakdesk.store.exceptions import ExceptionRepo
from breakdesk.store.executions import ExecutionRepo
from breakdesk.store.metrics import MetricsRepo
from breakdesk.store.migrate import is_current, upgrade_engine
from breakdesk.store.packs import PackRepo
from breakdesk.store.queue import QueueRepo
from breakdesk.store.tenants import TenantRepo


class Store(
    TenantRepo, PackRepo, ExecutionRepo, ApprovalRepo, ExceptionRepo, AuditRepo, QueueRepo, ApiAccessRepo, MetricsRepo,
    CaseRepo,
):
    """Persistence for Breakdesk. Every method except `list_tenants`, `claim` and `get_api_key` takes the tenant
    first; for the API's platform-level reads (platform keys, unattributed auth failures, the queue-depth
    gauge) that tenant may be None.

    Open with `await Store.open(url)`; it migrates the schema unless told not to.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)

    @classmethod
    async def open(
        cls, url: str | None = None, *, migrate: bool = True, echo: bool = False, **pool: Any
    ) -> Store:
        """Connect to `url` (default: $BREAKDESK_DATABASE_URL, else ./breakdesk.db) and bring the schema
        to the current revision. `pool` sizes the connection pool (`pool_size`, `max_overflow`)."""
        # Every store call runs in an explicit transaction that ends before the connection goes back to the
        # pool, so the pool's own rollback on return (a round trip to the driver's thread on SQLite) is skipped.
        engine = make_engine(database_url(url), echo=echo, pool_reset_on_return=None, **pool)
        try:
            if migrate:
                await upgrade_engine(engine)
        except SQLAlchemyError as exc:
            await engine.dispose()
            raise translate(exc) from exc
        except (OSError, TimeoutError) as exc:
            await engine.dispose()
            raise StoreError(f"cannot connect to the database: {exc}") from exc
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def migrations_current(self) -> bool:
        """Readiness: the database answers and is at the schema revision this code expects."""
        try:
            return await is_current(self._engine)
        except (SQLAlchemyError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        self._close_inline()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
