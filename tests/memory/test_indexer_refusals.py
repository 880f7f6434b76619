"""The indexer's embedding pass against an endpoint that rejects one input (HTTP 400, e.g. a text
over the model's context length): the other cases must still be embedded."""

from __future__ import annotations

import json
from typing import Any

from memkit import SMALL, process, sf

from breakdesk.memory import Memory
from breakdesk.memory.indexer import MemoryIndexer
from breakdesk.store import Store


def refuse_poison(path: str, body: dict[str, Any], headers: Any) -> tuple[int, bytes]:
    """Any batch holding the poisoned text is refused, as an endpoint refuses a text over its context."""
    texts = body["input"]
    if any("POISON" in t for t in texts):
        return 400, b'{"error": {"message": "maximum context length exceeded"}}'
    return 200, json.dumps({"data": [{"index": i, "embedding": [1.0, float(len(t) % 5)]}
                                     for i, t in enumerate(texts)]}).encode()


async def test_one_rejected_case_does_not_stop_embedding_for_good(store: Store, tenant_factory: Any,
                                                                  scripted_embeddings: Any) -> None:
    scripted_embeddings.reply = refuse_poison
    t = await tenant_factory({"embeddings": {"provider": "openai", "baseUrl": scripted_embeddings.url, "model": "m",
                                             "batchSize": 4}})
    mem = Memory(store)
    await process(store, t, [*SMALL[:2], sf("E-P", "Jefferies LLC", "INSUFFICIENT_SECURITIES", "POISON", "ST-P"),
                             *SMALL[2:]], memory=mem)
    indexer = MemoryIndexer(store, mem)
    for _ in range(3):  # passes of the background loop
        await indexer.run_once(t)
    embedded = {v.exception_id for v in await store.vectors_after(t, "openai:m", 0, 100)}
    assert embedded == {"E-1", "E-2", "E-3", "E-4", "E-5", "E-6"}
