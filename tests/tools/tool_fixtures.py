"""Fixtures shared by tests/tools and tests/approvals: one real tool server per session, a store per test, and
an executor with short backoffs (real sleeps stay in the milliseconds)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tool_harness import ToolServer

from breakdesk.approvals.service import ApprovalService
from breakdesk.pipeline.execution import ExecutionService
from breakdesk.pipeline.orchestrator import Orchestrator
from breakdesk.store import Store
from breakdesk.tools.executor import ExecutorSettings, ToolExecutor


@pytest.fixture(scope="session")
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}"


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    s = await Store.open(sqlite_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def tenant_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def fast_settings(**kw: object) -> ExecutorSettings:
    return ExecutorSettings(backoff_initial=0.01, backoff_max=0.05, backoff_jitter=0.01, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def executor() -> AsyncIterator[ToolExecutor]:
    ex = ToolExecutor(fast_settings())
    try:
        yield ex
    finally:
        await ex.aclose()


@pytest.fixture
def execution(store: Store, executor: ToolExecutor) -> ExecutionService:
    return ExecutionService(store, executor)


@pytest.fixture
def orch(store: Store, execution: ExecutionService) -> Orchestrator:
    o = Orchestrator(store, execution=execution)
    execution.packs_for = o.active_packs
    return o


@pytest.fixture
def approvals(store: Store, execution: ExecutionService) -> ApprovalService:
    return ApprovalService(store, execution)


@dataclass
class Stack:
    store: Store
    orch: Orchestrator
    execution: ExecutionService
    approvals: ApprovalService


def make_stack(store: Store, executor: ToolExecutor, **orch_kw: Any) -> Stack:
    clock = orch_kw.get("clock", _real_now)
    orch = Orchestrator(store, **orch_kw)
    orch.execution = execution = ExecutionService(store, executor, clock=clock, packs=orch.active_packs)
    return Stack(store, orch, execution, ApprovalService(store, execution, clock=clock))


def _real_now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def db_stack(db_url: str, executor: ToolExecutor) -> AsyncIterator[Stack]:
    """The whole stack on each database (SQLite and PostgreSQL)."""
    s = await Store.open(db_url)
    try:
        yield make_stack(s, executor)
    finally:
        await s.close()


@pytest.fixture
def stack_sqlite(store: Store, executor: ToolExecutor) -> Stack:
    return make_stack(store, executor)
