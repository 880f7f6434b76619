"""SQLite's WAL is checkpointed in the background: commits do not wait for it, nothing is lost by it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from store_builders import make_write

from breakdesk.store import Store


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_writes_are_checkpointed_in_the_background_and_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    store = await Store.open(f"sqlite+aiosqlite:///{db}")
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        async with store._engine.connect() as conn:  # pool connections leave checkpoints to the thread
            pages = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar()
        assert pages is not None and pages > 1000
        await store.create_tenant("acme", "Acme")
        for start in range(0, 60, 20):
            await store.write_batch("acme", [make_write("acme", f"EXC-{i}", i) for i in range(start, start + 20)])
        assert await _until(lambda: checkpointer.checkpoints >= 1)
        # a separate connection (as another process would open) sees everything committed
        raw = sqlite3.connect(db)
        try:
            assert raw.execute("SELECT count(*) FROM exceptions WHERE tenant_id = 'acme'").fetchone() == (60,)
        finally:
            raw.close()
    finally:
        await store.close()
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()
    async with await Store.open(f"sqlite+aiosqlite:///{db}") as again:
        assert len((await again.list_exceptions("acme", limit=100))[0]) == 60
        assert (await again.verify_audit("acme")).ok


async def test_in_memory_sqlite_has_no_checkpointer() -> None:
    async with await Store.open("sqlite+aiosqlite:///:memory:") as store:
        assert store._checkpointer is None
