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
