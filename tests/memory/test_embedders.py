"""Embedding paths: `openai` against a local server speaking the embeddings protocol, and `minilm` (the
[semantic] extra; never skipped). The pipeline never embeds: the background indexer does."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest
from memkit import SMALL, process, sf

from breakdesk.memory import Memory
from breakdesk.memory.embedders import EmbedderError, OpenAIEmbedder, embedder_for
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.memory.text import terms
from breakdesk.packs.schema import EmbeddingSettings
from breakdesk.store import Store

DIMS = 64


def hashed_embedding(text: str) -> list[float]:
    """A deterministic bag-of-words embedding: texts sharing words get close vectors."""
    v = np.zeros(DIMS, dtype=np.float64)
    for w in terms(text):
        v[int(hashlib.sha1(w.encode()).hexdigest(), 16) % DIMS] += 1.0
    return v.tolist()


def embed_reply(path: str, body: dict[str, Any], headers: Any) -> tuple[int, bytes]:
    """What the local endpoint answers: `test-embed` vectors at /v1/embeddings, out of order (clients must
    sort by index), and 404 for any other path or model."""
    if path != "/v1/embeddings" or body.get("model") != "test-embed":
        return 404, b"{}"
    data = [{"object": "embedding", "index": i, "embedding": hashed_embedding(t)}
            for i, t in reversed(list(enumerate(body["input"])))]
    return 200, json.dumps({"object": "list", "data": data, "model": "test-embed"}).encode()


@pytest.fixture
def embeddings(scripted_embeddings: Any) -> Any:
    scripted_embeddings.reply = embed_reply
    return scripted_embeddings


@pytest.fixture
def embeddings_server(embeddings: Any) -> str:
    return str(embeddings.url)


async def test_openai_embeddings_path(store: Store, tenant_factory: Any, embeddings: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-test")
    settings = {"provider": "openai", "baseUrl": embeddings.url, "model": "test-embed",
                "apiKeyRef": "env:TEST_EMBED_KEY", "batchSize": 4}
    t = await tenant_factory({"embeddings": settings})
    mem = Memory(store)
    await process(store, t, SMALL, memory=mem)
    assert embeddings.calls == []  # the hot path never called the embedder
    embedded = await MemoryIndexer(store, mem).embed(t)
    assert embedded == 6 and len(embeddings.calls) == 2  # batches of 4
    assert embeddings.calls[0]["auth"] == "Bearer sk-test"
    res = await mem.similar(t, "E-1", k=3, embeddings=EmbeddingSettings(**settings))
    assert res.model == "openai:test-embed" and res.query_embedding_ms == 0.0  # the stored vector was reused
    assert res.vector_source in ("resident", "pgvector")
    assert res.hits[0].exception_id == "E-2" and res.hits[0].semantic is not None
    # after a restart the watermark holds: nothing is embedded twice
    assert await MemoryIndexer(store, Memory(store)).embed(t) == 0


async def test_openai_errors_are_reported_not_crashes(embeddings_server: str) -> None:
    emb = OpenAIEmbedder(embeddings_server, "no-such-model")
    with pytest.raises(EmbedderError):
        await emb.embed(["x"])
    await emb.aclose()
    with pytest.raises(EmbedderError):
        embedder_for(EmbeddingSettings(provider="openai", baseUrl=embeddings_server, model="m",
                                       apiKeyRef="env:BREAKDESK_TEST_UNSET_KEY"))


async def test_minilm_path(store: Store, tenant_factory: Any, minilm: Any) -> None:
    t = await tenant_factory({"embeddings": {"provider": "minilm"}})
    mem = Memory(store)
    mem._embedders[("minilm", None, None, None)] = minilm  # the session's model: loaded once
    await process(store, t, SMALL, memory=mem)
    await process(store, t, [sf("E-9", "Goldman Sachs & Co. LLC", "COUNTERPARTY_DK",
                                "Broker lacked inventory so delivery is stuck at the CSD", "ST-9")], memory=mem)
    assert await MemoryIndexer(store, mem).embed(t) == 7
    res = await mem.similar(t, "E-9", k=3, embeddings=EmbeddingSettings(provider="minilm"))
    assert res.model == "minilm:all-MiniLM-L6-v2"
    # no shared counterparty, reason or wording beyond the type: the meaning finds the short-of-securities cases
    assert {res.hits[0].exception_id, res.hits[1].exception_id} & {"E-1", "E-2"}
    assert all(h.semantic is not None for h in res.hits)
    vec = minilm.encode(["settlement fail"])[0]
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
