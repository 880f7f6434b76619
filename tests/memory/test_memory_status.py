"""How far the memory's background indexer has got (`memory.lookup.memory_status`, `breakdesk memory status`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from memkit import SMALL, process, renderings_read, stored_tenant
from test_rerender import NEW_WORDS, activate, finance
from typer.testing import CliRunner

from breakdesk.cli import _register, app
from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.memory.lookup import MemoryStatus, memory_status
from breakdesk.store import Store

OPENAI = {"embeddings": {"provider": "openai", "baseUrl": "http://127.0.0.1:9/v1", "model": "m"}}


async def test_the_status_follows_indexing_embedding_and_re_rendering(store: Store, tenant_factory: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    t = await tenant_factory(OPENAI)  # (an endpoint nobody answers: only its name is read)
    await process(store, t, SMALL, memory=False)  # processed, nothing indexed
    before = await memory_status(store, t)
    assert before.cases == 0 and before.behind >= len(SMALL) and before.rerender_pending
    assert (before.embedder, before.to_embed) == ("openai:m", 0)
    indexer = MemoryIndexer(store, Memory(store))
    await indexer.catch_up(t)
    await indexer.rerender(t)
    assert await memory_status(store, t) == MemoryStatus(6, 0, "openai:m", 6, False)  # nothing embedded yet
    await activate(store, t, finance("1.1.0", SETTLEMENT_FAIL={"description": NEW_WORDS}))
    pending = await memory_status(store, t)
    assert (pending.rerender_pending, pending.to_rerender) == (True, 6)  # every case to check
    await indexer.rerender(t, limit=3)  # three settlement fails re-rendered (new rows, read again later): a stop
    state = await store.memory_state(t)
    assert state is not None and state.rerender_for is not None and state.rerender_after > 0
    partway = await memory_status(store, t)
    rows = await store.cases_after(t, 0)
    # (the cases' ids follow the order the indexer wrote them in, which the database chooses)
    assert partway.rerender_pending
    assert partway.to_rerender == sum(c.id > state.rerender_after for c in rows) >= 4  # one to go, three new
    # another process (a restart) goes on where the walk stopped
    other = MemoryIndexer(store, Memory(store))
    read_after = renderings_read(store, monkeypatch)
    assert (await other.rerender(t)).rerendered == 1
    assert read_after[0] == state.rerender_after
    await indexer.rerender(t)
    after = await memory_status(store, t)
    assert (after.cases, after.rerender_pending, after.to_rerender) == (6, False, 0)


async def test_a_tenant_without_an_embedder_has_nothing_to_embed(store: Store, tenant_factory: Any) -> None:
    mine, theirs = await tenant_factory(), await tenant_factory(OPENAI)
    await process(store, theirs, SMALL, memory=False)
    indexer = MemoryIndexer(store, Memory(store))
    for t in (mine, theirs):
        await indexer.catch_up(t)  # (mine: its packs' publication, in its audit chain like any change)
        await indexer.rerender(t)
    assert await memory_status(store, mine) == MemoryStatus(0, 0, None, 0, False)  # another tenant's cases: none
    assert await memory_status(store, theirs) == MemoryStatus(6, 0, "openai:m", 6, False)


def test_memory_status_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'status.db'}"

    tenant = stored_tenant(url, memory=False)
    _register()
    runner = CliRunner()
    out = runner.invoke(app, ["memory", "status", "--tenant", tenant, "--json", "--db", url])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)[tenant]
    assert got["cases"] == 0 and got["behind"] > 0 and got["rerenderPending"] and got["embedder"] is None
    assert got["toRerender"] == 0  # (no case yet)
    runner.invoke(app, ["memory", "index", "--tenant", tenant, "--db", url])
    shown = runner.invoke(app, ["memory", "status", "--tenant", tenant, "--db", url], terminal_width=80)
    assert shown.exit_code == 0, shown.output
    row = next(line.split() for line in shown.output.splitlines() if tenant in line)
    assert row == [tenant, "6", "0", "0", "none", "done"]
    unknown = runner.invoke(app, ["memory", "status", "--tenant", "nope", "--db", url])
    assert unknown.exit_code != 0 and "does not exist" in unknown.output
