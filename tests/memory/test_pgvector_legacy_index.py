"""Review: the pgvector path when one model name answers with other dimensions than an index or the stored
vectors expect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from memkit import SMALL, make_tenant, process
from sqlalchemy import text
from test_pgvector import pgvector_url  # noqa: F401 (fixture)

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store

pytestmark = pytest.mark.postgres


def sized(dims: int) -> Any:
    return lambda t: [float(len(t) % 7 + 1), *([1.0] * (dims - 1))]


async def test_a_legacy_index_of_another_size_does_not_refuse_a_new_tenants_vectors(
        pgvector_url: str, scripted_embeddings: Any) -> None:  # noqa: F811
    """An index made by an earlier version covers every vector of the model (cast to its size). A tenant
    whose endpoint serves the model with another size, and that has no vector yet, must still embed."""
    store = await Store.open(pgvector_url)
    try:
        model = "openai:legacy-probe"
        legacy = "ix_memory_vectors_hnsw_openai_legacy_probe_8"
        from breakdesk.store.cases import pgvector_available
        assert await pgvector_available(store)
        async with store.engine.begin() as conn:
            await conn.execute(text(f"CREATE INDEX {legacy} ON memory_vectors USING hnsw "
                                    f"((vector::vector(8)) vector_cosine_ops) WHERE model = '{model}'"))
        scripted_embeddings.answer(sized(5))
        settings = {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "legacy-probe"}
        t = await make_tenant(store, {"embeddings": settings})
        mem = Memory(store)
        await process(store, t, SMALL, memory=mem)
        report = await MemoryIndexer(store, mem).run_once(t)
        assert report.errors == 0 and report.embedded == 6
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(text(f"DROP INDEX IF EXISTS {legacy}"))
        await store.close()
        await asyncio.sleep(0)
