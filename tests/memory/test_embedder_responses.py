"""OpenAIEmbedder against malformed answers from a real local endpoint: always an EmbedderError."""

from __future__ import annotations

from typing import Any

import pytest

from breakdesk.memory.embedders import EmbedderError, OpenAIEmbedder


@pytest.mark.parametrize("bodies", [
    [b'{"data": [[0.1, 0.2]]}'],  # items that are not objects
    [b'{"data": {"0": [0.1]}}'],  # data an object
    [b'{"data": [{"index": 0, "embedding": [NaN, 1.0]}]}'],
    [b'{"data": [{"index": 0, "embedding": [1e300, 1.0]}]}'],  # beyond float32
    [b'{"data": [{"index": 0, "embedding": []}]}'],
    [b'{"data": [{"index": 0, "embedding": [1.0, 0.0]}]}',  # batches of different dimensions
     b'{"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0]}]}'],
], ids=["list-items", "dict-data", "nan", "overflow", "empty", "ragged-batches"])
async def test_malformed_embeddings_are_embedder_errors(scripted_embeddings: Any, bodies: list[bytes]) -> None:
    left = list(bodies)  # one answer per request, in order
    scripted_embeddings.reply = lambda path, body, headers: (200, left.pop(0))
    emb = OpenAIEmbedder(scripted_embeddings.url, "m", batch_size=1)
    try:
        with pytest.raises(EmbedderError):
            await emb.embed(["a"] * len(bodies))
    finally:
        await emb.aclose()


async def test_the_policy_bounds_how_long_an_endpoint_is_waited_for(scripted_embeddings: Any) -> None:
    """`timeoutSeconds` reaches the HTTP client: a slow endpoint is an embedder error (the similar-cases query
    then answers without vectors) instead of holding the query for the default 30 s."""
    import json
    import time

    from breakdesk.memory.embedders import embedder_for
    from breakdesk.packs.schema import EmbeddingSettings

    def slow(path: str, body: dict[str, Any], headers: Any) -> tuple[int, bytes]:
        time.sleep(1.0)
        return 200, json.dumps({"data": [{"index": 0, "embedding": [1.0, 0.0]}]}).encode()

    scripted_embeddings.reply = slow
    emb = embedder_for(EmbeddingSettings(provider="openai", baseUrl=scripted_embeddings.url, model="m",
                                         timeoutSeconds=0.1))
    assert isinstance(emb, OpenAIEmbedder)
    try:
        with pytest.raises(EmbedderError, match="Timeout"):
            await emb.embed(["a"])
    finally:
        await emb.aclose()
