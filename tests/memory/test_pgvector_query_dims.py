"""Review: the pgvector path when one model name answers with other dimensions than an index or the stored
vectors expect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from memkit import SMALL, make_tenant, process
from test_pgvector import pgvector_url  # noqa: F401 (fixture)

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.packs.schema import EmbeddingSettings
from breakdesk.store import Store

pytestmark = pytest.mark.postgres


def sized(dims: int) -> Any:
    return lambda t: [float(len(t) % 7 + 1), *([1.0] * (dims - 1))]


async def test_pgvector_a_query_of_other_dimensions_is_not_compared(
        pgvector_url: str, scripted_embeddings: Any) -> None:  # noqa: F811
    """As on the resident path (tests/api/test_similar_embeddings.py): stored 4-d vectors, the endpoint now
    answers 3-d, a new exception's query vector is left out until the indexer re-embeds."""
    store = await Store.open(pgvector_url)
    try:
        scripted_embeddings.answer(sized(4))
        settings = {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "dims-probe"}
        t = await make_tenant(store, {"embeddings": settings})
        mem = Memory(store)
        await process(store, t, SMALL[:4], memory=mem)
        await MemoryIndexer(store, mem).run_once(t)
        res = await mem.similar(t, "E-1", k=3, embeddings=EmbeddingSettings(**settings))
        assert res.vector_source == "pgvector" and res.hits[0].semantic is not None
        scripted_embeddings.answer(sized(3))
        await process(store, t, SMALL[4:], memory=mem)
        lexical = await Memory(store).similar(t, "E-5", k=3)  # no embedder: lexical + structured
        res = await mem.similar(t, "E-5", k=3, embeddings=EmbeddingSettings(**settings))
        assert res.vector_source == "none"
        assert [(h.exception_id, h.score) for h in res.hits] == [(h.exception_id, h.score) for h in lexical.hits]
    finally:
        await store.close()
        await asyncio.sleep(0)
